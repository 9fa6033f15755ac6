"""experiments/real_data.py: a smoke run at the tiny preset on a
tiny slice of the real sketches (or of data.synthetic when ../shared/data is
absent), two variants, a few steps; plus the pure report helpers and the
CLI's refusal of bad input.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from data.synthetic import generate
from experiments.ablation import base_hparams, run_experiment, train_variant
from experiments.report import read_live_counts, results_markdown, table_row
from model.training.loop import write_scalars
from tests.conftest import ROOT, SHARED_DATA
from utils.errors import UserError

REAL = ["aaron_sheep", "omniglot", "kanji.rdp200"]
SIZES = {"train": 24, "valid": 8, "test": 8}


MAX_POINTS = 60   # short sketches keep the tiny model's sequences short


def write_slice(src_dir, dst_dir, categories):
  """The first SIZES[split] sketches of at most MAX_POINTS points of every
  split, in the same file format."""
  os.makedirs(dst_dir, exist_ok=True)
  for cat in categories:
    with np.load(os.path.join(src_dir, cat + ".npz"), allow_pickle=True,
                 encoding="latin1") as f:
      out = {}
      for k, n in SIZES.items():
        short = [s for s in f[k] if len(s) <= MAX_POINTS][:n]
        out[k] = np.empty(len(short), dtype=object)
        out[k][:] = short
      np.savez(os.path.join(dst_dir, cat + ".npz"), **out)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
  """(data_dir, categories): a read-only folder of small stroke files.

  The run overrides num_mixture=2 (L = 2 level-l units, fewer to sample)."""
  root = tmp_path_factory.mktemp("exp_src")
  if os.path.isdir(SHARED_DATA):
    cats = REAL
    write_slice(SHARED_DATA, str(root), cats)
  else:
    cats = ["fish", "house", "star"]
    generate(str(root), sizes=tuple(SIZES.values()), categories=cats, workers=1,
             contact_sheet=False)
    for name in os.listdir(root):   # only stroke files, like ../shared/data
      if not name.endswith(".npz") or name.endswith(("_png.npz", "_styles.npz")):
        os.remove(os.path.join(root, name))
  for name in os.listdir(root):
    os.chmod(os.path.join(root, name), 0o444)
  return str(root), cats


@pytest.fixture(scope="module")
def run(source, tmp_path_factory):
  data_dir, cats = source
  work = str(tmp_path_factory.mktemp("exp_work"))
  before = sorted(os.listdir(data_dir))
  out = run_experiment(
      work, data_dir, cats, variants=["flat", "full"], preset="tiny",
      hparams="num_mixture=2", num_steps=4, num_per_category=0, num_samples=3,
      level_l_samples_per_unit=2, classifier_epochs=1, verbose=False)
  return work, out, before, data_dir, cats


def test_data_copied_and_source_untouched(run):
  work, _, before, data_dir, cats = run
  assert sorted(os.listdir(data_dir)) == before
  for cat in cats:
    for suffix in (".npz", "_png.npz"):
      assert os.path.isfile(os.path.join(work, "data", cat + suffix))
  with np.load(os.path.join(work, "data", cats[0] + "_png.npz")) as f:
    assert f["test"].shape == (SIZES["test"], 48, 48)


def test_variants_trained_equally_and_evaluated(run):
  work, out, *_ = run
  rows = {r["variant"]: r for r in out["rows"]}
  assert list(rows) == ["full", "flat"]          # table order, not flag order
  for v, (k, l) in {"full": (4, 2), "flat": (4, 4)}.items():
    assert rows[v]["steps"] == 4
    assert (rows[v]["num_k"], rows[v]["num_l"]) == (k, l)
    assert 0.0 <= rows[v]["rec"] <= 1.0
    assert 0.0 <= rows[v]["ret_top1"] <= rows[v]["ret_top10"] <= 1.0
    assert 0.0 < rows[v]["level_l_purity"] <= 1.0
    model_cfg = json.load(open(os.path.join(work, v, "model", "model_config.json")))
    assert model_cfg["num_mixture"] == 2 and model_cfg["num_steps"] == 4
  with open(os.path.join(work, "results.json")) as f:
    saved = json.load(f)
  assert saved["meta"]["num_steps"] == 4 and len(saved["variants"]) == 2
  text = open(os.path.join(work, "results.md")).read()
  assert text.count("\n| full |") == 1 and "| flat |" in text


def test_live_curves_and_figures(run):
  work, out, *_ = run
  curve = out["curves"]["full"]
  assert curve["step"] and curve["step"] == sorted(curve["step"])
  assert all(1 <= k <= 4 for k in curve["live_k"])
  assert all(1 <= l <= 2 for l in curve["live_l"])
  assert out["meta"]["level_l_units_sampled"]
  for name, path in out["figures"].items():
    assert os.path.getsize(path) < 200 * 1024, name
  assert set(out["figures"]) == {"live_components", "result", "level_k",
                                 "level_l", "tree", "level_l_samples"}


def test_rerun_reuses_trained_variants(run):
  work, *_ = run
  stamp = os.path.getmtime(os.path.join(work, "full", "train_summary.json"))
  summary = train_variant(None, None, os.path.join(work, "full"), 4, 0)
  assert summary["steps"] == 4
  assert os.path.getmtime(os.path.join(work, "full", "train_summary.json")) == stamp


def test_read_live_counts_from_event_file(tmp_path):
  writer = tf.summary.create_file_writer(str(tmp_path))
  write_scalars(writer, "train", {"num_live_k": 4.0,
                                  "pi_l": [0.5, 0.45, 0.05, 0.0]}, 10)
  write_scalars(writer, "train", {"num_live_k": 3.0,
                                  "pi_l": [0.6, 0.4, 0.0, 0.0]}, 20)
  write_scalars(writer, "train", {"num_live_k": 2.0,      # restored: rewritten
                                  "pi_l": [1.0, 0.0, 0.0, 0.0]}, 20)
  writer.flush()
  got = read_live_counts(str(tmp_path))
  # live_l: pi_l > 0.1 / 4 = 0.025
  assert got == {"step": [10, 20], "live_k": [4, 2], "live_l": [3, 1]}


def test_results_markdown_columns():
  ev = {"rec": 0.5, "ret": {"top1": 0.1, "top10": 0.2, "top50": 0.3},
        "clustering": {"category": {
            "level_l": {"nmi": 0.4, "ari": 0.3, "purity": 0.9},
            "level_k": {"nmi": 0.5, "ari": 0.2, "purity": 0.8}},
            "style": {"level_k": {"nmi": 0.7, "ari": 0.6, "purity": 0.75}}},
        "live_k": 5, "num_k": 12, "live_l": 3, "num_l": 6}
  row = table_row("full", {"steps": 7, "train_minutes": 1.25, "valid_lil": 0.5,
                           "evaluation": ev})
  lines = results_markdown([row]).splitlines()
  assert len(lines) == 3 and lines[0].count("|") == lines[2].count("|")
  assert lines[2] == ("| full | 7 | 1.2 | 0.50 | 0.500 | 0.100 | 0.200 | 0.300 | "
                      "0.400 / 0.300 / 0.900 | 0.500 / 0.200 / 0.800 | "
                      "0.700 / 0.600 / 0.750 | 5/12 | 3/6 |")


def test_bad_inputs(tmp_path, source):
  data_dir, cats = source
  with pytest.raises(UserError, match="variants"):
    run_experiment(str(tmp_path), data_dir, cats, variants=["full", "nope"])
  with pytest.raises(UserError, match="no nope.npz"):
    run_experiment(str(tmp_path / "w"), data_dir, ["nope"], preset="tiny")
  with pytest.raises(UserError, match="chosen by --variants"):
    base_hparams("tiny", cats, 0, "rpcl=False")
  assert base_hparams("small", cats).num_mixture == 2 * len(cats)


def test_cli_refuses_bad_variant_in_one_line(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.real_data", f"--work_dir={tmp_path}",
       "--data_dir=/nonexistent", "--categories=a", "--variants=full,bogus"],
      cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2, proc.stderr
  assert "--variants=full,bogus" in proc.stderr
  assert "Traceback" not in proc.stderr
  assert not os.listdir(tmp_path)
