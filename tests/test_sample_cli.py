"""sample.py: outputs of every mode, determinism, atomic output folder, and the
bad-input catalogue (exit 2, one line, nothing written).

The tiny model is the session's (tests/conftest.py: tiny_model, trained a few
steps by model.training.train on a tiny data.synthetic dataset); most runs call model.synthesis.synthesize or run sample.py
in process, a few go through a real subprocess.
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from hparams import CONFIG_NAME
from tests.conftest import ROOT, TINY_CATS
from utils.errors import UserError

N = 4  # sketches per category
CATS = TINY_CATS


@pytest.fixture(scope="module")
def trained(tiny_model):
  """(data_dir, model_dir, dead_dir) -- the session's tiny model (conftest);
  the last has level-k #3 dead."""
  return tiny_model


def run(trained, out, **kw):
  from model import synthesis
  data_dir, model_dir, _ = trained
  kw.setdefault("data_dir", data_dir)
  kw.setdefault("num_per_category", N)
  return synthesis.synthesize(model_dir, str(out), **kw)


def load(out):
  with np.load(os.path.join(str(out), "samples.npz"), allow_pickle=True) as d:
    return {k: d[k] for k in d.files}


@pytest.fixture(scope="module")
def conditional(trained, tmp_path_factory):
  out = tmp_path_factory.mktemp("cond") / "out"
  return out, run(trained, out, seed=3)


def test_conditional_outputs_are_complete_and_consistent(trained, conditional):
  from data.dataset import load_dataset
  from data.raster import render_many
  from model.checkpoint import load_trained
  from PIL import Image
  out, summary = conditional
  s = load(out)
  n = 2 * N
  assert summary["num"] == n and str(s["mode"]) == "conditional"
  assert list(s["categories"]) == CATS
  assert len(s["strokes"]) == n and s["z"].shape == (n, 8) and s["z"].dtype == np.float32
  for key in ("label_k", "label_l", "category", "ref_index"):
    assert s[key].shape == (n,) and s[key].dtype == np.int32
  assert s["images"].shape == s["ref_images"].shape == (n, 48, 48)
  np.testing.assert_array_equal(s["category"], np.repeat([0, 1], N))
  # references: the right test sketches, their category, their encoder mean
  hps, model = load_trained(trained[1])
  test = load_dataset(trained[0], hps).splits["test"]
  np.testing.assert_array_equal(test.labels[s["ref_index"]], s["category"])
  np.testing.assert_array_equal(test.images[s["ref_index"]], s["ref_images"])
  m, _ = model.encode(test.images[s["ref_index"]][..., None] / 127.5 - 1.0)
  np.testing.assert_allclose(s["z"], m.numpy(), atol=1e-4)
  post = model.hierarchy.posteriors(s["z"])
  np.testing.assert_array_equal(s["label_k"], post.label_k.numpy())
  np.testing.assert_array_equal(s["label_l"], post.label_l.numpy())
  np.testing.assert_allclose(s["pi_k"], model.hierarchy.pi_k().numpy(), rtol=1e-5)
  assert s["q_kl"].shape == (4, 2) and s["pi_l"].shape == (2,)
  # strokes at real scale, PNGs = the rasteriser's rendering of them
  for seq in s["strokes"]:
    assert seq.dtype == np.float32 and seq.ndim == 2 and seq.shape[1] == 3
  np.testing.assert_array_equal(render_many(list(s["strokes"]), 48), s["images"])
  assert float(s["scale_factor"]) == pytest.approx(hps.scale_factor, rel=1e-6)
  assert sorted(os.listdir(out)) == [".rpcl-outputs.json", "grid.png", "png",
                                     "samples.npz", "svg"]
  assert len(os.listdir(out / "svg")) == len(os.listdir(out / "png")) == n
  png = np.array(Image.open(out / "png" / "00001.png"))
  np.testing.assert_array_equal(png, s["images"][1])
  assert "<svg" in (out / "svg" / "00000.svg").read_text()
  grid = Image.open(out / "grid.png")
  assert grid.size[0] > 5 * 64 and grid.size[1] >= 2 * 64
  assert not [p for p in os.listdir(out.parent) if p.startswith(".tmp")]


def test_same_seed_same_sketches(trained, conditional, tmp_path):
  from model import synthesis
  run(trained, tmp_path / "again", seed=3)
  a, b = load(conditional[0]), load(tmp_path / "again")
  assert len(a["strokes"]) == len(b["strokes"])
  assert all(np.array_equal(x, y) for x, y in zip(a["strokes"], b["strokes"]))
  for key in ("z", "ref_index", "images"):
    np.testing.assert_array_equal(a[key], b[key])
  labels = np.repeat([0, 1], 16)
  picks = [synthesis.pick_references(labels, [0, 1], N, seed) for seed in (3, 3, 4)]
  np.testing.assert_array_equal(picks[0], picks[1])
  np.testing.assert_array_equal(picks[0], a["ref_index"])
  assert not np.array_equal(picks[0], picks[2])


def test_controlled_modes(trained, tmp_path):
  run(trained, tmp_path / "k", level_k=1)
  k = load(tmp_path / "k")
  assert str(k["mode"]) == "level_k" and len(k["z"]) == N
  assert np.all(k["category"] == -1) and np.all(k["ref_index"] == -1)
  assert not k["ref_images"].any()
  run(trained, tmp_path / "l", level_l=0, greedy=True)
  assert str(load(tmp_path / "l")["mode"]) == "level_l"
  run(trained, tmp_path / "u", conditional=False)
  u = load(tmp_path / "u")
  assert str(u["mode"]) == "unconditional" and len(u["z"]) == 2 * N
  run(trained, tmp_path / "an", analogy="0,20,3", data_dir=None)  # recorded
  an = load(tmp_path / "an")
  assert len(an["z"]) == N and np.all(an["ref_index"] == 3)
  np.testing.assert_allclose(an["z"], an["z"][:1].repeat(N, 0))
  run(trained, tmp_path / "in", interpolate="1,30", steps=5)
  it = load(tmp_path / "in")
  assert len(it["z"]) == 5 and list(it["ref_index"]) == [1, 1, 1, 30, 30]
  np.testing.assert_allclose(it["z"][2], (it["z"][0] + it["z"][4]) / 2, atol=1e-5)


def test_existing_output_refused_then_replaced_with_overwrite(trained, tmp_path):
  out = tmp_path / "out"
  out.mkdir()
  (out / "old.txt").write_text("previous run")
  with pytest.raises(UserError, match="not empty.*--overwrite"):
    run(trained, out)
  assert os.listdir(out) == ["old.txt"]
  with pytest.raises(UserError, match="old.txt"):   # not ours: never deleted
    run(trained, out, overwrite=True)
  assert os.listdir(out) == ["old.txt"]
  mine = tmp_path / "mine"
  run(trained, mine)
  first = (mine / "samples.npz").read_bytes()
  run(trained, mine, overwrite=True, seed=1)        # our own output: replaced
  assert (mine / "samples.npz").read_bytes() != first


def test_old_config_with_missing_fields_still_samples(trained, tmp_path):
  model_dir = str(tmp_path / "old")
  shutil.copytree(trained[1], model_dir)
  path = os.path.join(model_dir, CONFIG_NAME)
  config = json.load(open(path))
  del config["jit_compile"], config["precision"]
  json.dump(config, open(path, "w"))
  run((trained[0], model_dir, None), tmp_path / "o", num_per_category=1)
  assert len(load(tmp_path / "o")["z"]) == 2


# --- bad input: one line on stderr, exit 2, nothing written ------------------

def in_process(args):
  """sample.py through absl flag parsing and cli_main, in this process."""
  from tests.cli_harness import run_in_process
  code, _, err = run_in_process("sample.py", args)
  return code, err


def bad_cases(trained, tmp_path):
  data_dir, model_dir, dead_dir = trained
  empty = tmp_path / "empty_model"
  empty.mkdir()
  no_ckpt = tmp_path / "no_ckpt"
  no_ckpt.mkdir()
  shutil.copy(os.path.join(model_dir, CONFIG_NAME), no_ckpt)
  unrecorded = tmp_path / "unrecorded"  # a model without train_info.json
  shutil.copytree(model_dir, unrecorded,
                  ignore=shutil.ignore_patterns("train_info.json"))
  m = f"--model_dir={model_dir}"
  d = f"--data_dir={data_dir}"
  return {
      "no_config": ([f"--model_dir={empty}", d], "no model config"),
      "no_checkpoint": ([f"--model_dir={no_ckpt}", d], "no checkpoint"),
      "num_per_category": ([m, d, "--num_per_category=0"], "--num_per_category=0"),
      "level_k_range": ([m, "--level_k=7"], r"--level_k=7 is out of range.*0, 1, 2, 3"),
      "level_l_range": ([m, "--level_l=-1"], r"--level_l=-1 is out of range"),
      "dead": ([f"--model_dir={dead_dir}", "--level_k=3"],
               r"--level_k=3 is a dead .*: 0, 1, 2$"),
      "analogy_range": ([m, d, "--analogy=0,1,32"], r"index 32 is out of range"),
      "analogy_syntax": ([m, d, "--analogy=0,x"], r"--analogy='0,x' is malformed"),
      "interp_range": ([m, d, "--interpolate=-2,3"], r"index -2 is out of range"),
      "category": ([m, d, "--categories=fish,horse"], "unknown horse"),
      "temperature": ([m, d, "--temperature=0"], "--temperature=0.0"),
      "two_modes": ([m, "--level_k=1", "--level_l=0"], "exclude each other"),
      "no_data": ([f"--model_dir={unrecorded}"], "--data_dir is required"),
  }


def test_bad_input_in_process(trained, tmp_path):
  cases = bad_cases(trained, tmp_path)
  for name, (args, pattern) in cases.items():
    out = tmp_path / f"out_{name}"
    code, err = in_process(args + [f"--output_dir={out}"])
    assert code == 2, name
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), (name, err)
    assert __import__("re").search(pattern, lines[0]), (name, lines[0])
    assert not out.exists(), name
  assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]


def test_bad_input_subprocess(trained, tmp_path):
  cases = bad_cases(trained, tmp_path)
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  procs = {}
  for name in ("dead",):
    out = tmp_path / f"sub_{name}"
    procs[name] = (out, subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "sample.py"), f"--output_dir={out}"]
        + cases[name][0], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True))
  for name, (out, proc) in procs.items():
    stdout, stderr = proc.communicate(timeout=120)
    errors = [l for l in stderr.splitlines() if l.startswith("error: ")]
    assert proc.returncode == 2, (name, stderr[-2000:])
    assert len(errors) == 1 and "Traceback" not in stderr, (name, stderr[-2000:])
    assert __import__("re").search(cases[name][1], errors[0])
    assert not out.exists()
