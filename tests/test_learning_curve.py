"""experiments/learning_curve.py: chunked training + evaluation at the tiny
preset (a smoke run: invariants of the rows, not what a tiny model learns),
the rerun that continues from the last row, and the refusal of bad chunking.
"""
import json
import os

import pytest

from experiments import learning_curve as lc
from tests.conftest import tiny_hps
from utils.errors import UserError


@pytest.fixture(scope="module")
def curve(tiny_data, tmp_path_factory):
  work = str(tmp_path_factory.mktemp("curve") / "run")
  rows = lc.run_curve(work, tiny_data, tiny_hps(), num_steps=4, every=2,
                      num_per_category=2, verbose=False)
  return work, rows, tiny_data


def test_one_row_per_checkpoint_with_every_column(curve):
  work, rows, _ = curve
  assert [r["step"] for r in rows] == [2, 4]
  for r in rows:
    assert set(lc.COLUMNS) <= set(r)
    assert 0.0 <= r["rec"] <= 1.0 and 0.0 <= r["ended"] <= 1.0
    assert 1 <= r["live_k"] <= tiny_hps().num_components
  assert rows[0]["minutes"] < rows[1]["minutes"]
  with open(os.path.join(work, "curve.json")) as f:
    assert json.load(f)["rows"] == rows
  with open(os.path.join(work, "curve.md")) as f:
    lines = f.read().splitlines()
  assert len(lines) == 2 + len(rows) and lines[0].startswith("| step |")


def test_rerun_continues_without_retraining(curve):
  work, rows, data = curve
  ckpt = os.path.join(work, "model", "checkpoint")
  before = os.stat(ckpt).st_mtime_ns
  again = lc.run_curve(work, data, tiny_hps(), num_steps=4, every=2,
                       num_per_category=2, verbose=False)
  assert again == rows
  assert os.stat(ckpt).st_mtime_ns == before


def test_markdown_marks_missing_values():
  text = lc.markdown([dict(step=3, rec=0.5)])
  assert text.splitlines()[2].startswith("| 3 | - | - | 0.500 |")


@pytest.mark.parametrize("every,num_steps", [(0, 10), (5, 4)])
def test_bad_chunking_refused(tmp_path, every, num_steps):
  with pytest.raises(UserError, match="--every"):
    lc.run_curve(str(tmp_path / "w"), str(tmp_path), tiny_hps(), num_steps,
                 every)
  assert not os.path.exists(tmp_path / "w")
