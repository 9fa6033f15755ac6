"""Reproducibility on CPU (docs/reproducibility.md): the same --seed
gives bit-identical data order, augmentation, per-step training losses, final
weights and sampled sketches in two runs.

Run 1 is the session's tiny model (tests/conftest.py: model.training.loop.train
in this pytest process, seed 0, every step logged to tb/).  Run 2 repeats it
as a real ``python train.py`` process with another PYTHONHASHSEED, through a
small driver that records, without changing anything, the digest of every
training batch BatchMaker builds, then samples with
model.inference.synthesis.synthesize.  Batches are compared with a third,
in-process BatchMaker (and another seed must differ).
"""
import hashlib
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import tensorflow as tf

from data.dataset import load_dataset
from data.pipeline import BatchMaker
from experiments.report import read_scalars
from hparams import CONFIG_NAME, load_config
from model.inference import synthesis
from tests.cli_harness import Background
from tests.conftest import ROOT, TINY_CATS, TINY_STEPS

SAMPLE_SEED = 11

DRIVER = r"""
import hashlib, json, os, runpy, sys
import numpy as np
from data import pipeline

out_path, args = sys.argv[1], sys.argv[2:]
batches, real_batch = {}, pipeline.BatchMaker.batch

def batch(self, epoch, index):
  out = real_batch(self, epoch, index)
  if self.augment:
    h = hashlib.sha256()
    for a in out:
      h.update(np.ascontiguousarray(a).tobytes())
    batches["%d/%d" % (int(epoch), int(index))] = h.hexdigest()
  return out

pipeline.BatchMaker.batch = batch
sys.argv = ["train.py"] + args
try:
  runpy.run_path(os.path.join(os.environ["PYTHONPATH"], "train.py"), run_name="__main__")
except SystemExit as e:
  assert not e.code, e.code
from model.inference import synthesis
log_root = [a for a in args if a.startswith("--log_root=")][0].split("=", 1)[1]
synthesis.synthesize(log_root, out_path + ".samples", num_per_category=3,
                     seed=int(os.environ["SAMPLE_SEED"]))
json.dump(batches, open(out_path, "w"))
"""


def digest(arrays):
  h = hashlib.sha256()
  for a in arrays:
    h.update(np.ascontiguousarray(a).tobytes())
  return h.hexdigest()


def start_early(data_dir, tmp_path_factory):
  """The tiny model's training repeated by the train.py CLI in a subprocess,
  started with the session (tests/conftest.py) -> (model_dir, batch digests,
  samples_dir)."""
  root = tmp_path_factory.mktemp("repro")
  model_dir, record = str(root / "model"), str(root / "batches.json")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT,
             PYTHONHASHSEED="2", SAMPLE_SEED=str(SAMPLE_SEED))
  cmd = [sys.executable, "-c", DRIVER, record, f"--log_root={model_dir}",
         f"--data_dir={data_dir}", "--preset=tiny",
         f"--hparams=categories=[{','.join(TINY_CATS)}],num_mixture=2",
         "--seed=0", f"--num_steps={TINY_STEPS}", "--save_every_steps=3",
         "--log_every=1"]

  def run(stop):
    err = []
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    reader = threading.Thread(target=lambda: err.append(proc.stderr.read()))
    reader.start()
    while proc.poll() is None:
      if stop.wait(0.05):
        proc.kill()
    reader.join()
    assert proc.returncode == 0, err[0][-3000:]
    with open(record) as f:
      return model_dir, json.load(f), record + ".samples"

  return Background(run)


@pytest.fixture(scope="module")
def rerun(early_jobs):
  return early_jobs[__name__].result()


def test_same_seed_same_losses_at_every_step(tiny_model, rerun):
  a = read_scalars(os.path.join(tiny_model[1], "tb"))
  b = read_scalars(os.path.join(rerun[0], "tb"))
  assert sorted(a) == sorted(b) and "train/lil" in a and "train/pi_l/0" in a
  assert sorted(a["train/total"]) == list(range(1, TINY_STEPS + 1))
  for tag in a:
    assert a[tag] == b[tag], tag             # float32 values, compared exactly
  for tag in ("valid/lil", "test/lil"):
    assert read_scalars(os.path.join(tiny_model[1], "tb"), tag) == \
        read_scalars(os.path.join(rerun[0], "tb"), tag)


def test_same_seed_same_weights_optimizer_hierarchy_and_rng_state(tiny_model, rerun):
  ra = tf.train.load_checkpoint(tf.train.latest_checkpoint(tiny_model[1]))
  rb = tf.train.load_checkpoint(tf.train.latest_checkpoint(rerun[0]))
  names = ra.get_variable_to_shape_map()
  assert names == rb.get_variable_to_shape_map()
  for part in ("hierarchy", "optimizer", "rng", "step"):
    assert any(part in n for n in names), part
  # The object-graph proto records Keras' process-unique names (adam_3, ...),
  # which depend on how many models this process built before; the values
  # are keyed by object path and compared exactly.
  for name in set(names) - {"_CHECKPOINTABLE_OBJECT_GRAPH"}:
    np.testing.assert_array_equal(ra.get_tensor(name), rb.get_tensor(name),
                                  err_msg=name)


def test_same_seed_same_batches_in_both_processes(tiny_model, rerun):
  """Order + augmentation of every batch the run used (4 per epoch here) equal
  a third run in this process; another seed gives other batches."""
  recorded = rerun[1]
  hps = load_config(os.path.join(tiny_model[1], CONFIG_NAME))
  train = load_dataset(tiny_model[0], hps).splits["train"]
  used = [f"{s // 4}/{s % 4}" for s in range(TINY_STEPS)]
  assert set(used) <= set(recorded)
  for seed, same in ((0, True), (1, False)):
    maker = BatchMaker(train, hps, hps.max_seq_len, True, seed, True)
    for key in used:
      epoch, index = map(int, key.split("/"))
      assert (digest(maker.batch(epoch, index)) == recorded[key]) == same, key


def test_same_seed_same_sketches(tiny_model, rerun, tmp_path):
  """sample.py (conditional: references, encoder, decoder) in both processes."""
  synthesis.synthesize(tiny_model[1], str(tmp_path / "s"), num_per_category=3,
                       seed=SAMPLE_SEED)
  out = []
  for folder in (str(tmp_path / "s"), rerun[2]):
    with np.load(os.path.join(folder, "samples.npz"), allow_pickle=True) as f:
      out.append({k: f[k] for k in f.files})
  a, b = out
  assert sorted(a) == sorted(b)
  for key in a:
    if key in ("model_dir", "data_dir"):   # where each run's inputs live
      continue
    if key == "strokes":
      assert len(a[key]) == len(b[key]) == 6
      for x, y in zip(a[key], b[key]):
        np.testing.assert_array_equal(x, y)
    else:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)
  assert any(len(s) > 1 for s in a["strokes"])
