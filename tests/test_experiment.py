"""experiments/real_data.py: a smoke run at the tiny preset on a
tiny slice of the real sketches (or of data.synthetic when ../shared/data is
absent), the two default variants, a few steps, two validations each (the
learning curve's points); plus the resume decision, the report helpers
(the training minutes of a run in two parts) and the CLI's refusal of bad
input.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from data.synthetic import generate
from experiments.ablation import VARIANTS, base_hparams, run_experiment
from experiments.report import (read_learning_curve, read_live_counts,
                                results_markdown, table_row)
from experiments.variant import resume_from, train_variant
from model.training.loop import write_scalars
from tests.conftest import ROOT, SHARED_DATA
from utils.errors import UserError

REAL = ["aaron_sheep", "omniglot", "kanji.rdp200"]
SIZES = {"train": 24, "valid": 8, "test": 8}


MAX_POINTS = 60   # short sketches keep the tiny model's sequences short
# L = 2 level-l units (fewer to sample); a validation miss keeps training, as
# in the real preset (restoring would retrain the same steps up to patience).
HPARAMS = "num_mixture=2,on_miss=keep"


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
  """(data_dir, categories): a read-only folder of small stroke files."""
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
      work, data_dir, cats, variants=["em", "full"], preset="tiny",
      hparams=HPARAMS, num_steps=4, validate_every=2,
      num_per_category=0, num_samples=3, grid_per_category=3,
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
  assert list(rows) == ["full", "em"]          # table order, not flag order
  for v, (k, l) in {"full": (4, 2), "em": (4, 2)}.items():
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
  assert text.count("\n| full |") == 1 and "| em |" in text


def test_live_curves_and_figures(run):
  work, out, *_ = run
  curve = out["curves"]["full"]
  assert curve["step"] and curve["step"] == sorted(curve["step"])
  assert all(1 <= k <= 4 for k in curve["live_k"])
  assert all(1 <= l <= 2 for l in curve["live_l"])
  assert out["meta"]["level_l_units_sampled"]
  for name, path in out["figures"].items():
    assert os.path.getsize(path) < 200 * 1024, name
  assert set(out["figures"]) == {
      "live_components", "learning_curve", "full_grid", "full_tree", "em_grid",
      "em_tree", "full_result", "full_level_k", "full_level_l",
      "full_level_l_samples"}


def test_learning_curve_over_training_minutes(run):
  """One row per validation (every 2 of the 4 steps), from the logs."""
  work, out, *_ = run
  for v in ("full", "em"):
    rows = out["learning_curves"][v]
    assert [r["step"] for r in rows] == [2, 4]
    assert 0.0 <= rows[0]["minutes"] <= rows[1]["minutes"]
    assert all(np.isfinite(r["valid_lil"]) and r["worth"] is not None
               and 1 <= r["live_k"] <= 4 for r in rows)
    summary = json.load(open(os.path.join(work, v, "train_summary.json")))
    assert summary["train_minutes"] == rows[-1]["minutes"]
  for name in ("learning_curve.png", "learning_curve.md", "learning_curve.json"):
    assert os.path.getsize(os.path.join(work, name)) > 0
  table = open(os.path.join(work, "learning_curve.md")).read().splitlines()
  assert table[0].startswith("| variant | step | minutes | valid_lil | worth |")
  assert len(table) == 2 + 4


def test_interrupted_training_resumes_from_its_checkpoint(run):
  """train_variant continues a run below its steps (train.py's
  --resume_training), starts afresh past them, and refuses other hparams."""
  work, _, _, data_dir, cats = run
  model_dir = os.path.join(work, "full", "model")
  hps = base_hparams("tiny", cats, 0, HPARAMS).replace(**VARIANTS["full"])
  assert resume_from(hps, model_dir, 6) == 4 == resume_from(hps, model_dir, 4)
  assert resume_from(hps, model_dir, 3) is None
  assert resume_from(hps, os.path.join(work, "nowhere"), 6) is None
  with pytest.raises(UserError, match="other hparams.*z_size"):
    resume_from(hps.replace(z_size=4), model_dir, 6)


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


def _write_events(path, events, mtime):
  """An events file of (wall time, step, tag or None, value) records."""
  with tf.io.TFRecordWriter(path) as w:
    for wall, step, tag, value in events:
      summary = tf.compat.v1.Summary(value=[] if tag is None else [
          tf.compat.v1.Summary.Value(tag=tag, simple_value=value)])
      w.write(tf.compat.v1.Event(wall_time=wall, step=step,
                                 summary=summary).SerializeToString())
  os.utime(path, (mtime, mtime))


def test_training_minutes_of_a_run_in_two_parts(tmp_path):
  """Part 1 checkpoints at step 2, is killed at step 3 and resumed from 2
  hours later: minutes skip the gap and the steps after the checkpoint."""
  _write_events(str(tmp_path / "events.out.tfevents.1"), [
      (1000.0, 0, None, 0.0), (1000.0, 0, "config", 0.0),
      (1060.0, 2, "valid/lil", 5.0), (1090.0, 3, "train/num_live_k", 4.0)], 1)
  _write_events(str(tmp_path / "events.out.tfevents.2"), [
      (9000.0, 0, None, 0.0), (9000.0, 2, "config", 0.0),
      (9120.0, 4, "valid/lil", 4.0),
      (9120.0, 4, "valid/code_worth_per_sketch", 7.0)], 2)
  rows = read_learning_curve(str(tmp_path))
  assert [(r["step"], r["minutes"], r["valid_lil"], r["worth"]) for r in rows] \
      == [(2, 1.0, 5.0, None), (4, 3.0, 4.0, 7.0)]


def test_results_markdown_columns():
  ev = {"rec": 0.5, "ret": {"top1": 0.1, "top10": 0.2, "top50": 0.3},
        "clustering": {"category": {
            "level_l": {"nmi": 0.4, "ari": 0.3, "purity": 0.9},
            "level_k": {"nmi": 0.5, "ari": 0.2, "purity": 0.8}},
            "style": {"level_k": {"nmi": 0.7, "ari": 0.6, "purity": 0.75}}},
        "live_k": 5, "num_k": 12, "live_l": 3, "num_l": 6,
        "code_worth": {"nats_per_sketch": 12.34, "nats_per_point": 0.5}}
  row = table_row("full", {"steps": 7, "train_minutes": 1.25, "valid_lil": 0.5,
                           "evaluation": ev})
  lines = results_markdown([row]).splitlines()
  assert len(lines) == 3 and lines[0].count("|") == lines[2].count("|")
  assert lines[2] == ("| full | 7 | 1.2 | 0.50 | 0.500 | 0.100 | 0.200 | 0.300 | "
                      "12.3 | 0.400 / 0.300 / 0.900 | 0.500 / 0.200 / 0.800 | "
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
  real = base_hparams("real")                   # the preset's categories and K
  assert real.categories == REAL and real.num_mixture == 16


def test_cli_refuses_bad_variant_in_one_line(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.real_data", f"--work_dir={tmp_path}",
       "--data_dir=/nonexistent", "--categories=a", "--variants=full,bogus"],
      cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2, proc.stderr
  assert "--variants=full,bogus" in proc.stderr
  assert "Traceback" not in proc.stderr
  assert not os.listdir(tmp_path)
