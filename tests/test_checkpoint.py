"""Checkpoints and the one loading path (method.md §5):
round trip of every variable, load_trained errors, kill -9 then resume."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from hparams import CONFIG_NAME, save_config
from tests.test_train import CATS, make_tiny_dataset, tiny_hps
from utils.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HPARAMS = f"categories=[{','.join(CATS)}],num_mixture=2"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return make_tiny_dataset(str(tmp_path_factory.mktemp("tiny_data")))


@pytest.fixture(scope="module")
def setup(data_dir):
  from data.dataset import load_dataset
  from data.pipeline import make_dataset
  hps = tiny_hps()
  data = load_dataset(data_dir, hps)
  hps = hps.replace(max_seq_len=data.max_seq_len, scale_factor=data.scale_factor)
  batches = list(make_dataset(data.splits["train"], hps, hps.max_seq_len,
                              training=True, seed=0).take(4))
  return hps, batches


def _state_values(state):
  """Every saved value: weights, hierarchy, optimiser slots, counters, mask, rng."""
  model = state.model
  out = {f"{i}:{v.name}": v.numpy() for i, v in enumerate(model.variables)}
  out.update({f"opt/{i}": v.numpy() for i, v in
              enumerate(model.optimizer.variables)})
  out.update(step=model.global_step.numpy(), epoch=state.epoch.numpy(),
             best=state.best_loss.numpy(), mask=state.semi_mask.numpy())
  return out


def test_round_trip_restores_every_variable(setup, tmp_path):
  from model.checkpoint import CheckpointState, build_model
  hps, batches = setup
  mask = np.arange(96) % 3 == 0
  a = CheckpointState(build_model(hps, seed=1), str(tmp_path))
  a.semi_mask.assign(mask)
  step_a = a.model.compiled_train_step()
  for batch in batches[:3]:
    step_a(batch)
  a.epoch.assign(5)
  a.best_loss.assign(1.25)
  path = a.save()
  assert path.endswith("ckpt-3")
  saved = _state_values(a)
  b = CheckpointState(build_model(hps, seed=2), str(tmp_path))
  differs = [k for k, v in _state_values(b).items()
             if not np.array_equal(v, saved[k])]
  assert any(k.endswith(":mu") for k in differs)
  assert any(k.endswith(":seed_generator_state") for k in differs)
  assert b.restore()
  got = _state_values(b)
  assert sorted(got) == sorted(saved)
  for k, v in saved.items():
    np.testing.assert_array_equal(got[k], v, err_msg=k)
  # The restored model continues exactly like the original.
  out_a = step_a(batches[3])
  out_b = b.model.compiled_train_step()(batches[3])
  for k in ("total", "lil", "de", "gau", "ij"):
    assert float(out_a[k]) == float(out_b[k]), k


@pytest.fixture(scope="module")
def saved_run(setup, tmp_path_factory):
  from model.checkpoint import CheckpointState, build_model
  hps, batches = setup
  root = str(tmp_path_factory.mktemp("run"))
  save_config(os.path.join(root, CONFIG_NAME), hps)
  state = CheckpointState(build_model(hps), root)
  state.model.compiled_train_step()(batches[0])
  state.save()
  return root, state.model


def test_load_trained_restores_the_model(saved_run):
  from model.checkpoint import load_trained
  root, model = saved_run
  hps, loaded = load_trained(root)
  assert hps.max_seq_len == model.hps.max_seq_len
  assert int(loaded.global_step.numpy()) == 1
  for v, w in zip(model.trainable_variables + list(model.hierarchy.variables),
                  loaded.trainable_variables + list(loaded.hierarchy.variables)):
    np.testing.assert_array_equal(v.numpy(), w.numpy())


def _copy_run(root, dest):
  import shutil
  shutil.copytree(root, dest)
  return str(dest)


def test_load_trained_errors(saved_run, tmp_path):
  from model.checkpoint import load_trained
  root, _ = saved_run
  with pytest.raises(UserError, match="does not exist"):
    load_trained(str(tmp_path / "nowhere"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(UserError, match="no model config"):
    load_trained(str(tmp_path / "empty"))
  no_ckpt = tmp_path / "no_ckpt"
  no_ckpt.mkdir()
  save_config(str(no_ckpt / CONFIG_NAME), tiny_hps(max_seq_len=13))
  with pytest.raises(UserError, match="no checkpoint"):
    load_trained(str(no_ckpt))
  # Another z_size than the checkpoint's: named variable and shapes.
  other = _copy_run(root, tmp_path / "other")
  cfg_path = os.path.join(other, CONFIG_NAME)
  with open(cfg_path) as f:
    cfg = json.load(f)
  cfg["z_size"] = 16
  with open(cfg_path, "w") as f:
    json.dump(cfg, f)
  with pytest.raises(UserError, match=r"does not match the model config.*shape"):
    load_trained(other)
  # A truncated data file.
  cut = _copy_run(root, tmp_path / "cut")
  data = [n for n in os.listdir(cut) if ".data-" in n][0]
  with open(os.path.join(cut, data), "r+b") as f:
    f.truncate(os.path.getsize(os.path.join(cut, data)) // 2)
  with pytest.raises(UserError, match="unreadable|truncated|corrupt"):
    load_trained(cut)


def _train_cmd(data_dir, root, *extra, hparams=HPARAMS):
  return [sys.executable, os.path.join(ROOT, "train.py"), f"--log_root={root}",
          f"--data_dir={data_dir}", "--preset=tiny", f"--hparams={hparams}",
          "--save_every_steps=3", "--log_every=1", *extra]


def _run(cmd):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=240)


def _error_lines(stderr):
  return [l for l in stderr.splitlines() if l.startswith("error:")]


def test_kill9_then_resume(data_dir, tmp_path):
  root = str(tmp_path / "run")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  proc = subprocess.Popen(_train_cmd(data_dir, root, "--num_steps=100000"),
                          cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  try:
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
      state = tf.train.get_checkpoint_state(root) if os.path.isdir(root) else None
      if state and len(state.all_model_checkpoint_paths) >= 2:
        break
      time.sleep(0.05)
    assert proc.poll() is None, "training ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
  finally:
    proc.kill()
    proc.wait()
  # Every listed checkpoint is complete and readable.
  state = tf.train.get_checkpoint_state(root)
  for path in state.all_model_checkpoint_paths:
    reader = tf.train.load_checkpoint(path)
    for name in reader.get_variable_to_shape_map():
      reader.get_tensor(name)
  saved = int(os.path.basename(state.model_checkpoint_path).split("-")[1])
  res = _run(_train_cmd(data_dir, root, "--resume_training=True",
                        f"--num_steps={saved + 3}"))
  assert res.returncode == 0, res.stderr[-2000:]
  assert f"training from step {saved} " in res.stderr
  assert f"done: step {saved + 3}," in res.stderr
  # Resuming with a conflicting hparams string is refused in one line.
  res = _run(_train_cmd(data_dir, root, "--resume_training=True",
                        hparams="z_size=16"))
  assert res.returncode == 2
  assert len(_error_lines(res.stderr)) == 1 and "Traceback" not in res.stderr
  assert "z_size=16 (stored 8)" in res.stderr


def test_no_data_dir_says_how_to_get_data():
  res = _run([sys.executable, os.path.join(ROOT, "train.py"), "--preset=tiny"])
  assert res.returncode == 2 and "Traceback" not in res.stderr
  assert len(_error_lines(res.stderr)) == 1
  assert "python -m data.synthetic" in res.stderr
