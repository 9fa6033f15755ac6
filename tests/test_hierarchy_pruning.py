"""The paper's central claim on a toy problem (method.md §3): RPCL drives
surplus components out; EM alone does not prune as hard."""
import numpy as np
import tensorflow as tf

from hparams import get_hparams
from model import hierarchy as H


def run_toy(over, seed=0, steps=6000, dim=4, batch=64, n=600):
  """Codes from 3 well separated Gaussians (centres 6 e_c, std 0.3); the update
  loop runs on random batches of these fixed codes (m = y = code, s = 1e-3)."""
  hps = get_hparams("paper", f"z_size={dim},{over}")
  rng = np.random.RandomState(seed)
  truth = rng.randint(3, size=n)
  codes = tf.constant(6.0 * np.eye(3, dim)[truth] + 0.3 * rng.randn(n, dim),
                      tf.float32)
  h = H.Hierarchy(hps, seed=seed)

  @tf.function
  def loop(num):
    for t in tf.range(num, dtype=tf.int64):
      idx = tf.random.stateless_uniform([batch], [seed, t], maxval=n, dtype=tf.int64)
      y = tf.gather(codes, idx)
      h.update(y, y, tf.fill(tf.shape(y), 1e-3), t)
    return num

  loop(tf.constant(steps, tf.int64))
  out = h.posteriors(codes)
  pi_k = np.sort(np.asarray(h.pi_k()))[::-1]
  pi_l = np.sort(np.asarray(h.pi_l))[::-1]
  purity = lambda lab: sum(np.bincount(lab[truth == c]).max() for c in range(3)) / n
  return dict(live_k=int((pi_k > 0.05).sum()), live_l=int((pi_l > 0.05).sum()),
              surplus_k=1 - pi_k[:3].sum(), surplus_l=1 - pi_l[:3].sum(),
              purity_k=purity(np.asarray(out.label_k)),
              purity_l=purity(np.asarray(out.label_l)), pi_k=pi_k.round(3))


def test_toy_rpcl_prunes_flat_gmm():
  """K = L = 8 Gaussians (flat): RPCL leaves one live component per cluster."""
  rpcl = run_toy("num_mixture=4,num_sub=2,hierarchy=flat")
  em = run_toy("num_mixture=4,num_sub=2,hierarchy=flat,rpcl=False")
  print("toy flat K=8  RPCL:", rpcl, "\n              EM:", em)
  assert rpcl["live_k"] == 3 and rpcl["surplus_k"] < 0.15
  assert rpcl["purity_k"] > 0.85
  assert em["live_k"] >= 6 and em["surplus_k"] > 0.35


def test_toy_rpcl_prunes_two_level_units():
  """K = L = 8 (the reference's layout): RPCL leaves one live level-l unit per
  cluster (each keeps its anchor and its merge winner, so 2 components per
  unit at level k); EM only keeps surplus units alive."""
  rpcl = run_toy("num_mixture=8,num_sub=1")
  em = run_toy("num_mixture=8,num_sub=1,rpcl=False")
  print("toy two-level K=L=8  RPCL:", rpcl, "\n                     EM:", em)
  assert rpcl["live_l"] == 3 and rpcl["surplus_l"] < 0.05
  assert rpcl["purity_l"] > 0.95
  assert rpcl["live_k"] <= 2 * rpcl["live_l"]
  assert em["live_l"] >= 5 and em["surplus_l"] > 0.3
  assert em["live_k"] > rpcl["live_k"]
