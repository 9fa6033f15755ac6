"""The batch_sum contract of model/hierarchy.py: the update over
replicas whose batch sums are all-reduced equals the single-device update on
the global batch -- with simulated replicas (threads) and with a real
MirroredStrategy on two logical CPUs."""
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import tensorflow as tf

from model import hierarchy as H
from tests.test_hierarchy import B, cfg, random_problem, tf64


# ------------------------------------------------------------- batch_sum ---
class ThreadAllReduce:
  """Simulates replicas: each thread runs the update on its shard and
  batch_sum sums every replica's contribution (like an all-reduce)."""

  def __init__(self, n):
    self.barrier = threading.Barrier(n, timeout=60)
    self.slots = [None] * n

  def batch_sum_for(self, i):
    def batch_sum(nest):
      self.slots[i] = nest
      self.barrier.wait()
      total = tf.nest.map_structure(lambda *xs: tf.add_n(list(xs)), *self.slots)
      self.barrier.wait()
      return total
    return batch_sum


@pytest.mark.parametrize("step", [50, 102])
def test_batch_sum_over_replicas_equals_full_batch(step):
  state, y, m, s = random_problem(5, b=2 * B)
  st = H.HierarchyState(*tf64(*state))
  full_state, full_out = H.hierarchy_update(st, *tf64(y, m, s), step, cfg())
  reducer, results = ThreadAllReduce(2), [None, None]
  calls = []

  def replica(i):
    sl = slice(i * B, (i + 1) * B)
    def counting(nest, f=reducer.batch_sum_for(i)):
      calls.append(i)
      return f(nest)
    results[i] = H.hierarchy_update(st, *tf64(y[sl], m[sl], s[sl]), step,
                                    cfg(), batch_sum=counting)

  threads = [threading.Thread(target=replica, args=(i,)) for i in range(2)]
  [t.start() for t in threads]
  [t.join() for t in threads]
  assert calls.count(0) == calls.count(1) == 4     # M-step x2, merge, pi_l
  for i in range(2):
    for a, b in zip(results[i][0], full_state):    # identical state everywhere
      np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14)
  for a, b in zip(zip(*[results[i][1] for i in range(2)]), full_out):
    np.testing.assert_allclose(np.concatenate(a), b, rtol=1e-10, atol=1e-14)
  # The halves alone (identity batch_sum) give a different update.
  alone, _ = H.hierarchy_update(st, *tf64(y[:B], m[:B], s[:B]), step, cfg())
  assert not np.allclose(alone.mu, full_state.mu, rtol=1e-6)


MIRRORED_SCRIPT = r"""
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from hparams import get_hparams
from model.hierarchy import Hierarchy
hps = get_hparams("paper", "z_size=8,num_mixture=3,num_sub=2")
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
  dist = Hierarchy(hps, seed=3)
single = Hierarchy(hps, seed=3)
all_reduce = lambda nest: tf.distribute.get_replica_context().all_reduce("sum", nest)

@tf.function
def dstep(y, t):
  fn = lambda y: dist.update(y, y, tf.fill(tf.shape(y), 1e-2), t, all_reduce).post_k
  return strategy.run(fn, args=(y,))

rng = np.random.RandomState(0)
for t in [0, 50, 102, 103, 105]:
  y = rng.randn(32, 8).astype(np.float32)
  shard = lambda ctx: y[ctx.replica_id_in_sync_group * 16:][:16]
  p_k = dstep(strategy.experimental_distribute_values_from_function(shard),
              tf.constant(t))
  ref = single.update(y, y, np.full_like(y, 1e-2), tf.constant(t)).post_k
  got = np.concatenate([x.numpy() for x in strategy.experimental_local_results(p_k)])
  assert np.allclose(got, ref, rtol=1e-6, atol=1e-7), t
  for var_d, var_s in zip(dist.weights, single.weights):
    for copy in var_d.value.values:
      assert np.allclose(copy.numpy(), var_s.numpy(), rtol=1e-10, atol=1e-14), t
print("MIRRORED_OK")
"""


def test_mirrored_strategy_two_cpus_equals_single_device():
  """Real tf.distribute: 2 logical CPUs, all-reduce batch_sum, every replica's
  copy of the state equals the single-device update on the global batch."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, PYTHONPATH=root, TF_CPP_MIN_LOG_LEVEL="3")
  res = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT], cwd=root, env=env,
                       capture_output=True, text=True, timeout=300)
  assert "MIRRORED_OK" in res.stdout, res.stderr[-3000:]
