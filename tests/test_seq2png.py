"""data.seq2png: stroke file -> _png.npz (library function and CLI errors)."""
import os
import subprocess
import sys

import numpy as np
import pytest

from data import raster, seq2png
from tests.conftest import ROOT, SHARED_DATA
from utils.errors import UserError

SHEEP = os.path.join(SHARED_DATA, "aaron_sheep.npz")


def _sketches(n, seed):
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    m = rng.integers(3, 40)
    s = np.c_[rng.integers(-20, 20, size=(m, 2)), rng.uniform(size=m) < 0.2]
    s[-1, 2] = 1
    out.append(s.astype(np.int16))
  return out


def _write_strokes(path, splits):
  arrays = {}
  for k, seqs in splits.items():
    arr = np.empty(len(seqs), dtype=object)
    arr[:] = seqs
    arrays[k] = arr
  np.savez(path, **arrays)


@pytest.fixture
def small_category(tmp_path):
  """A small stroke file: a subset of the real sheep when present."""
  if os.path.exists(SHEEP):
    d = np.load(SHEEP, allow_pickle=True, encoding="latin1")
    splits = {"train": list(d["train"][:700]), "valid": list(d["valid"][:13]),
              "test": list(d["test"][:7])}
  else:
    splits = {"train": _sketches(700, 0), "valid": _sketches(13, 1),
              "test": _sketches(7, 2)}
  _write_strokes(tmp_path / "sheep.npz", splits)
  return tmp_path, splits


def test_convert_category_matches_render(small_category, tmp_path):
  data_dir, splits = small_category
  out_dir = tmp_path / "out"
  path = seq2png.convert_category(str(data_dir), "sheep", 32, str(out_dir),
                                  progress=False)
  assert path == str(out_dir / "sheep_png.npz")
  with np.load(path) as png:
    assert sorted(png.files) == ["test", "train", "valid"]
    for split, seqs in splits.items():
      imgs = png[split]
      assert imgs.shape == (len(seqs), 32, 32) and imgs.dtype == np.uint8
      for i in (0, len(seqs) // 2, len(seqs) - 1):   # same order
        np.testing.assert_array_equal(imgs[i], raster.render(seqs[i], 32))
  assert not [f for f in os.listdir(out_dir) if f.startswith(".tmp")]


def test_default_out_dir_is_data_dir(small_category):
  data_dir, _ = small_category
  seq2png.convert(str(data_dir), ["sheep"], 16, progress=False)
  assert (data_dir / "sheep_png.npz").exists()


def test_library_errors(small_category, tmp_path):
  data_dir, _ = small_category
  with pytest.raises(UserError, match="not a directory"):
    seq2png.convert_category(str(tmp_path / "nope"), "sheep")
  with pytest.raises(UserError, match="pig"):
    seq2png.convert(str(data_dir), ["sheep", "pig"])
  with pytest.raises(UserError, match="png_width"):
    seq2png.convert(str(data_dir), ["sheep"], png_width=2)
  blocker = tmp_path / "file"
  blocker.write_text("x")
  with pytest.raises(UserError, match="cannot create"):
    seq2png.convert(str(data_dir), ["sheep"], out_dir=str(blocker / "sub"))


def _cli(*args):
  return subprocess.run([sys.executable, "-m", "data.seq2png", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("case", ["missing_dir", "missing_category",
                                  "unwritable_out", "bad_npz"])
def test_cli_errors_are_one_line(case, small_category, tmp_path):
  data_dir, _ = small_category
  out = tmp_path / "out"
  args = {"missing_dir": ["--data_dir", str(tmp_path / "nope"),
                          "--categories", "sheep", "--out_dir", str(out)],
          "missing_category": ["--data_dir", str(data_dir), "--categories",
                               "sheep,pig", "--out_dir", str(out)],
          "unwritable_out": ["--data_dir", str(data_dir), "--categories",
                             "sheep", "--out_dir", str(tmp_path / "f" / "x")],
          "bad_npz": ["--data_dir", str(data_dir), "--categories", "bad",
                      "--out_dir", str(out)]}[case]
  (tmp_path / "f").write_text("a file, not a folder")
  np.savez(data_dir / "bad.npz", train=np.zeros(3))
  res = _cli(*args)
  assert res.returncode == 2, res.stderr
  lines = res.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
  assert "Traceback" not in res.stderr
  assert not out.exists() or not any(out.iterdir())


def test_cli_writes_file(small_category, tmp_path):
  data_dir, splits = small_category
  res = _cli("--data_dir", str(data_dir), "--categories", "sheep",
             "--png_width", "24", "--out_dir", str(tmp_path / "o"))
  assert res.returncode == 0, res.stderr
  with np.load(tmp_path / "o" / "sheep_png.npz") as png:
    assert png["train"].shape == (len(splits["train"]), 24, 24)
