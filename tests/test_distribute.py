"""tf.distribute training: N mirrored steps on 2 logical CPUs equal
N single-device steps on the same global batches (weights, Adam slots,
hierarchy, losses); the NaN guard is global; a 2-worker
MultiWorkerMirroredStrategy run on 127.0.0.1 writes one consistent
checkpoint that load_trained reads.

Each case runs in a subprocess: logical devices and the multi-worker cluster
must be configured before TensorFlow initialises."""
import glob
import json
import os
import socket
import subprocess
import sys

import numpy as np

from model.storage.checkpoint import load_trained
from model.training.distribute import model_fingerprint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MIRRORED = r"""
import sys, keras, numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from tests.conftest import tiny_hps
from data.dataset import load_dataset
from data.pipeline import make_dataset
from model.storage.checkpoint import build_model
from model.training.distribute import Distribution

# Steps 0-3: lil, de, lil, lil (warm-up alternation); EM, EM, RPCL, EM.
# Fixed-length batches: the four are stacked into one dataset below.
hps = tiny_hps(em_steps=1, rpcl_every=2, warmup_steps=2, length_buckets=0)
data = load_dataset(sys.argv[1], hps)
hps = hps.replace(max_seq_len=data.max_seq_len, scale_factor=data.scale_factor)
dist = Distribution("mirrored")
assert dist.num_replicas == 2 and dist.is_chief
with dist.scope():
  dm = build_model(hps, seed=0)
keras.utils.set_random_seed(1)
sm = build_model(hps, seed=1)

def state(m):
  seen, out = set(), []
  for v in m.variables + [m.global_step] + m.optimizer.variables:
    if id(v) not in seen:
      seen.add(id(v)); out.append(v)
  return out

def copies(v):
  x = v.value if isinstance(v, keras.Variable) else v
  return [np.asarray(c.numpy(), np.float64) for c in getattr(x, "values", [x])]

# Adam normalises each element's step: a gradient that is 0 up to round-off
# (e.g. a bias before a norm layer) would take a full +-lr step of random
# sign.  A larger epsilon keeps those steps ~0, so float round-off cannot
# grow into step-sized differences over the N steps; everything else is
# the real update.
dm.optimizer.epsilon = sm.optimizer.epsilon = 1e-3
batches = list(make_dataset(data.splits["train"], hps, hps.max_seq_len,
                            training=True, seed=0).take(4))
stacked = tuple(tf.stack([b[i] for b in batches]) for i in range(4))
feed = dist.dataset(tf.data.Dataset.from_tensor_slices(stacked))
dfn, sfn = dist.replicated_train_step(dm), sm.compiled_train_step()
report = {}
for i, (db, b) in enumerate(zip(feed, batches)):
  # Each step starts from the single device's state: one step's round-off
  # is what a reduction can be judged by.  Carried over, it compounds: the
  # image-loss warm-up step amplifies 5e-5 weight differences into percents
  # of some encoder slots on some batches, between any two float32
  # implementations of the step (recurrence=fused against autodiff on one
  # device as well).
  for mine, single in zip(state(dm), state(sm)):
    mine.assign(single)
  od, os_ = dfn(db), sfn(b)
  for k in od:
    np.testing.assert_allclose(od[k], os_[k], rtol=3e-4, atol=1e-5,
                               err_msg=f"step {i} {k}")
  for mine, single in zip(state(dm), state(sm)):
    want = np.asarray(single.numpy(), np.float64)
    cs = copies(mine)
    name = getattr(mine, "path", mine.name)
    assert len(cs) == 2 and np.array_equal(cs[0], cs[1]), name  # in sync
    err = np.abs(cs[0] - want).max() if want.size else 0.0
    scale = np.abs(want).max() if want.size else 1.0
    kind = ("hier" if "hierarchy" in name else "opt" if "adam" in name
            else "int" if mine.dtype in ("int64", "uint32", "int32") else "w")
    report[kind] = max(report.get(kind, (0.0, "")),
                       (err / max(scale, 1e-3), f"step {i} {name}"))
assert int(dm.global_step.numpy()) == 4 and int(dm.optimizer.iterations.numpy()) == 4
assert report["int"][0] == 0, report
# float32 round-off of the 2-replica gradient sum, relative to each variable's
# largest entry (a wrong reduction is off by ~100%)
assert report["w"][0] < 5e-4 and report["opt"][0] < 1e-3, report
assert report["hier"][0] < 1e-5, report
print("REPORT", report)

# The NaN guard is global: a NaN only in replica 1's rows skips the step on
# both replicas and changes nothing but the RNG counters (as on one device).
strokes, lens, images, labels = batches[0]
bad = images.numpy()
bad[hps.batch_size // 2:] = np.nan
before = [copies(v) for v in state(dm)]
db = next(iter(dist.dataset(tf.data.Dataset.from_tensors(
    (strokes, lens, tf.constant(bad), labels)))))
assert bool(dfn(db)["nonfinite"])
for v, old in zip(state(dm), before):
  now = copies(v)
  assert np.array_equal(now[0], now[1]), v.name
  if v.name != "seed_generator_state":
    assert np.array_equal(now[0], old[0]), v.name

# Distributed evaluation: a 1-example batch leaves replica 1 empty.
one = make_dataset(data.splits["valid"], hps, hps.max_seq_len, training=False,
                   seed=0).unbatch().take(1).batch(1)
got = dist.eval_fn(dm)(next(iter(dist.dataset(one))))
for a, b in zip(state(sm), state(dm)):
  a.assign(b.numpy())
want = sm.compiled_eval_step()(next(iter(one)))
for k in want:
  np.testing.assert_allclose(got[k], want[k], rtol=1e-5, err_msg="eval " + k)
print("MIRRORED_OK")
"""

WORKER = r"""
import json, os, sys
ports, index, log_root, data_dir = sys.argv[1:5]
os.environ["TF_CONFIG"] = json.dumps({
    "cluster": {"worker": ["127.0.0.1:" + p for p in ports.split(",")]},
    "task": {"type": "worker", "index": int(index)}})
from model.training import loop as training
from model.training.distribute import model_fingerprint
from tests.conftest import tiny_hps
# The real distributed validation runs, but its criterion is replaced by a
# fixed sequence (improve, miss, improve) so that both the save and the
# restore-on-miss paths run whatever a tiny model's loss does.
forced = iter([3.0, 4.0, 2.0])
init = training._Loop.__init__
def patched(self, *args, **kwargs):
  init(self, *args, **kwargs)
  real = self.validate_fn
  def validate(model, name):
    out = real(model, name)
    return dict(out, lil=next(forced)) if name == "valid" else out
  self.validate_fn = validate
training._Loop.__init__ = patched
out = training.train(tiny_hps(patience=5), data_dir, log_root, num_steps=4,
                     save_every_steps=2, strategy="multi_worker")
print("RESULT " + json.dumps(dict(
    step=out["step"], history=out["history"],
    fingerprint=model_fingerprint(out["model"], True).tolist())))
"""


def _run(code, args, env=None, timeout=400):
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
  return subprocess.Popen([sys.executable, "-c", code] + list(args), cwd=ROOT,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)


def _free_ports(n):
  socks = [socket.socket() for _ in range(n)]
  for s in socks:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in socks]
  for s in socks:
    s.close()
  return ports


def test_mirrored_two_cpus_equals_single_device(tiny_data):
  proc = _run(MIRRORED, [tiny_data])
  out, err = proc.communicate(timeout=400)
  assert "MIRRORED_OK" in out, (out + err)[-4000:]


def test_multi_worker_two_processes_one_consistent_checkpoint(tiny_data,
                                                              tmp_path):
  log_root, temp = str(tmp_path / "run"), tmp_path / "worker_tmp"
  temp.mkdir()
  ports = ",".join(map(str, _free_ports(2)))
  procs = [_run(WORKER, [ports, str(i), log_root, tiny_data],
                env={"TMPDIR": str(temp)}) for i in range(2)]
  results = []
  for p in procs:
    out, err = p.communicate(timeout=400)
    lines = [l for l in out.splitlines() if l.startswith("RESULT ")]
    assert p.returncode == 0 and lines, (out + err)[-4000:]
    results.append(json.loads(lines[-1][len("RESULT "):]))
  chief, worker = results
  assert chief["step"] == worker["step"] == 4
  assert chief["history"] == worker["history"]          # same decisions
  # saved at 2, missed at 4 (restored step 2, trained again), saved at 4
  assert [(h[0], h[2]) for h in chief["history"]] == [
      (2, True), (4, False), (4, True)]
  assert chief["fingerprint"] == worker["fingerprint"]  # same weights
  # One set of outputs, written by the chief; the worker's temp copies gone.
  assert sorted(os.path.basename(p) for p in glob.glob(
      os.path.join(log_root, "ckpt-*.index"))) == ["ckpt-2.index",
                                                   "ckpt-4.index"]
  assert len(glob.glob(os.path.join(log_root, "tb", "events.*"))) == 1
  assert not list(temp.iterdir())
  hps, model = load_trained(log_root)
  assert int(model.global_step.numpy()) == 4
  np.testing.assert_allclose(model_fingerprint(model, True),
                             chief["fingerprint"], rtol=1e-12)
