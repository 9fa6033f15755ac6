"""model/inference/sampler.py: the batched tf.while_loop sampler and the code helpers.

A tiny stand-in decoder (the StrokeDecoder interface: initial_state / step /
split_params) lets the loop be checked against a NumPy re-implementation of
method.md §6 step by step; the real StrokeDecoder is tested at the tiny preset.
"""
import collections
import types

import numpy as np
import pytest
import tensorflow as tf

from hparams import get_hparams
from model.hierarchy import Hierarchy
from model.inference import sampler
from model.networks.stroke_decoder import StrokeDecoder
from utils.errors import UserError

Params = collections.namedtuple(
    "Params", "pen_logits log_pi mu_x mu_y sigma_x sigma_y rho log_pen")
D, H, M, MAX_LEN = 4, 8, 3, 25


class StandIn:
  """A one-layer tanh RNN with a mixture head, weights from a seeded rng."""

  def __init__(self, seed=0, pen_bias=(1.0, 0.0, -1.5)):
    rng = np.random.default_rng(seed)
    w = lambda *shape: rng.normal(0.0, 0.6, shape).astype(np.float32)
    self.wz, self.wx, self.wh, self.wo = w(D, H), w(5 + D, H), w(H, H), w(H, 3 + 6 * M)
    self.bo = np.zeros(3 + 6 * M, np.float32)
    self.bo[:3] = pen_bias

  def initial_state(self, z):
    return [tf.tanh(tf.matmul(z, self.wz))]

  def step(self, x5, z, states, training=False):
    h = tf.tanh(tf.matmul(tf.concat([x5, z], -1), self.wx)
                + tf.matmul(states[0], self.wh))
    return tf.matmul(h, self.wo) + self.bo, [h]

  def split_params(self, raw):
    pen, pi, mx, my, sx, sy, rho = tf.split(raw, [3] + [M] * 6, axis=-1)
    return Params(pen, tf.nn.log_softmax(pi), mx, my, tf.exp(sx), tf.exp(sy),
                  tf.tanh(rho), tf.nn.log_softmax(pen))


# --- NumPy reference of method.md §6 and of the counter RNG -----------------

def np_fmix(h):
  h = h.astype(np.uint64)
  h ^= h >> np.uint64(16)
  h = (h * np.uint64(0x85EBCA6B)) & np.uint64(0xFFFFFFFF)
  h ^= h >> np.uint64(13)
  h = (h * np.uint64(0xC2B2AE35)) & np.uint64(0xFFFFFFFF)
  return h ^ (h >> np.uint64(16))


def np_uniform(seed, ids, t, num):
  m32 = np.uint64(0xFFFFFFFF)
  h = np_fmix(np.uint64(seed) ^ np.uint64(0x9E3779B9))
  h = np_fmix(h ^ ids.astype(np.uint64))
  h = np_fmix(h ^ ((np.uint64(t) * np.uint64(0x27D4EB2F)) & m32))
  j = (np.arange(1, num + 1, dtype=np.uint64) * np.uint64(0x165667B1)) & m32
  bits = np_fmix(h[:, None] ^ j[None, :])
  return ((bits >> np.uint64(8)).astype(np.float64) + 0.5) / 2 ** 24


def np_softmax(a):
  e = np.exp(a - a.max())
  return e / e.sum()


def np_sample(dec, z, seed, tau, max_len):
  """One sketch at a time, one step at a time, in float64 NumPy."""
  out = np.tile(np.array(sampler.PAD), (len(z), max_len, 1))
  lengths = np.full(len(z), max_len)
  for b in range(len(z)):
    h = np.tanh(z[b] @ dec.wz)
    x = np.array(sampler.S0)
    for t in range(max_len):
      h = np.tanh(np.concatenate([x, z[b]]) @ dec.wx + h @ dec.wh)
      raw = h @ dec.wo + dec.bo
      pen, pi, mx, my, sx, sy, rho = np.split(raw, np.cumsum([3] + [M] * 5))
      u = np_uniform(seed, np.array([b]), t, 4)[0]
      logp = lambda v: v - np.log(np.exp(v).sum())
      k = min(np.searchsorted(np.cumsum(np_softmax(logp(pi) / tau)), u[0]), M - 1)
      p = min(np.searchsorted(np.cumsum(np_softmax(logp(pen) / tau)), u[1]), 2)
      n1 = np.sqrt(-2 * np.log(u[2])) * np.cos(2 * np.pi * u[3])
      n2 = np.sqrt(-2 * np.log(u[2])) * np.sin(2 * np.pi * u[3])
      s1, s2, r = np.exp(sx[k]) * tau, np.exp(sy[k]) * tau, np.tanh(rho[k])
      x = np.array([mx[k] + s1 * n1, my[k] + s2 * (r * n1 + np.sqrt(1 - r * r) * n2),
                    p == 0, p == 1, p == 2], np.float64)
      if p == 2:
        lengths[b] = t
        break
      out[b, t] = x
  return out, lengths


def codes(n, seed=1):
  return np.random.default_rng(seed).normal(size=(n, D)).astype(np.float32)


# --- tests -------------------------------------------------------------------

def test_counter_rng_matches_numpy_and_is_uniform():
  ids = np.arange(5000, dtype=np.uint32)
  got = sampler.counter_uniform(np.uint32(7), ids, 3, 4).numpy()
  np.testing.assert_allclose(got, np_uniform(7, ids, 3, 4), rtol=1e-6)
  assert 0 < got.min() and got.max() < 1
  assert abs(got.mean() - 0.5) < 0.01 and abs(got.var() - 1 / 12) < 0.005
  assert abs(np.corrcoef(got[:, 0], got[:, 1])[0, 1]) < 0.05


def test_loop_matches_numpy_reference():
  dec, z = StandIn(), codes(12)
  strokes, lengths = sampler.sample_strokes(dec, z, MAX_LEN, 0.5, seed=11)
  ref, ref_len = np_sample(dec, z.astype(np.float64), 11, 0.5, MAX_LEN)
  np.testing.assert_array_equal(lengths, ref_len)
  np.testing.assert_allclose(strokes, ref, atol=1e-4)
  assert 0 < lengths.min() and lengths.max() <= MAX_LEN  # some end, some do not


def test_shapes_and_stop_behaviour():
  strokes, lengths = sampler.sample_strokes(StandIn(), codes(64), MAX_LEN, 0.8, seed=3)
  assert strokes.shape == (64, MAX_LEN, 5) and strokes.dtype == np.float32
  assert lengths.shape == (64,) and lengths.dtype == np.int32
  assert len(set(lengths.tolist())) > 3 and lengths.min() >= 0
  assert lengths.max() <= MAX_LEN
  for rows, n in zip(strokes, lengths):
    np.testing.assert_array_equal(rows[n:], np.tile(sampler.PAD, (MAX_LEN - n, 1)))
    assert np.all(rows[:n, 4] == 0)                    # no end token inside
    np.testing.assert_array_equal(rows[:n, 2] + rows[:n, 3], np.ones(n))


def test_never_ending_sketches_are_cut_at_max_len():
  dec = StandIn(pen_bias=(0.0, 0.0, -50.0))
  strokes, lengths = sampler.sample_strokes(dec, codes(5), 7, 1.0)
  assert strokes.shape == (5, 7, 5) and np.all(lengths == 7)
  assert np.all(strokes[:, :, 4] == 0)


def test_zero_temperature_equals_greedy():
  dec, z = StandIn(), codes(16)
  greedy = sampler.sample_strokes(dec, z, MAX_LEN, greedy=True)
  cold = sampler.sample_strokes(dec, z, MAX_LEN, 1e-6, seed=5)
  np.testing.assert_array_equal(cold[1], greedy[1])
  # tau * sigma * noise ~ 1e-5 per step, carried along by the recurrence
  np.testing.assert_allclose(cold[0], greedy[0], atol=2e-3)
  again = sampler.sample_strokes(dec, z, MAX_LEN, greedy=True, seed=99)
  np.testing.assert_array_equal(again[0], greedy[0])


def test_same_seed_same_sketches_other_seed_differs():
  dec, z = StandIn(), codes(16)
  a = sampler.sample_strokes(dec, z, MAX_LEN, 0.5, seed=1)
  b = sampler.sample_strokes(dec, z, MAX_LEN, 0.5, seed=1)
  c = sampler.sample_strokes(dec, z, MAX_LEN, 0.5, seed=2)
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_array_equal(a[1], b[1])
  assert not np.array_equal(a[0], c[0])


def test_batched_equals_one_at_a_time_and_chunked():
  dec, z = StandIn(), codes(10)
  batch = sampler.sample_strokes(dec, z, MAX_LEN, 0.6, seed=4)
  for i in range(10):
    one = sampler.sample_strokes(dec, z[i:i + 1], MAX_LEN, 0.6, seed=4, sketch_ids=[i])
    assert one[1][0] == batch[1][i]
    np.testing.assert_allclose(one[0][0], batch[0][i], atol=1e-5)
  chunked = sampler.sample_strokes(dec, z, MAX_LEN, 0.6, seed=4, batch_size=3)
  np.testing.assert_array_equal(chunked[1], batch[1])
  np.testing.assert_allclose(chunked[0], batch[0], atol=1e-5)


def test_xla_compiled_loop_gives_the_same_sketches():
  dec, z = StandIn(), codes(8)
  plain = sampler.sample_strokes(dec, z, MAX_LEN, 0.6, seed=4)
  xla = sampler.sample_strokes(dec, z, MAX_LEN, 0.6, seed=4, jit_compile=True)
  np.testing.assert_array_equal(xla[1], plain[1])
  np.testing.assert_allclose(xla[0], plain[0], atol=1e-4)


def test_temperature_sharpens_the_choices():
  # More pen-up / end choices agree with the argmax as tau falls.
  dec, z = StandIn(), codes(200)
  greedy = sampler.sample_strokes(dec, z, 1, greedy=True)[0][:, 0, 2:]
  agree = [np.mean(np.all(sampler.sample_strokes(dec, z, 1, tau, seed=0)[0][:, 0, 2:]
                          == greedy, axis=1)) for tau in (2.0, 0.5, 0.05)]
  assert agree[0] < agree[1] < agree[2] and agree[2] > 0.95


def test_to_stroke3_restores_the_scale():
  strokes, lengths = sampler.sample_strokes(StandIn(), codes(6), MAX_LEN, 0.8, seed=3)
  seqs = sampler.to_stroke3(strokes, lengths, scale_factor=2.5)
  assert [len(s) for s in seqs] == lengths.tolist()
  for s, rows, n in zip(seqs, strokes, lengths):
    assert s.dtype == np.float32 and s.shape == (n, 3)
    np.testing.assert_allclose(s[:, :2], rows[:n, :2] * 2.5, rtol=1e-6)
    np.testing.assert_array_equal(s[:-1, 2], rows[:n - 1, 3])
    if n:
      assert s[-1, 2] == 1


class FakeHierarchy:
  """mu/sigma2/pi_l/q_kl as in model/hierarchy.py, posteriors in NumPy."""

  def __init__(self, pi_l=(0.5, 0.5, 0.0), k_per_l=2, spread=6.0):
    L = len(pi_l)
    K = L * k_per_l
    self.mu = tf.constant(np.eye(K, D * 2)[:, :D] * spread
                          + np.arange(K)[:, None] * spread / 2, tf.float32)
    self.sigma2 = tf.fill([K, D], 0.25)
    self.pi_l = tf.constant(pi_l, tf.float64)
    q = np.full((K, L), 1e-10)
    for l in range(L):
      q[l * k_per_l:(l + 1) * k_per_l, l] = [0.7, 0.3]
    self.q_kl = tf.constant(q / q.sum(0), tf.float64)

  def pi_k(self):
    return tf.linalg.matvec(self.q_kl, self.pi_l)


def np_label_k(h, z):
  mu, s2, pi = h.mu.numpy(), h.sigma2.numpy(), h.pi_k().numpy()
  logp = -0.5 * (((z[:, None] - mu[None]) ** 2 / s2 + np.log(s2)).sum(-1))
  return np.argmax(logp + np.log(pi + 1e-300), axis=1)


def test_codes_from_level_k_and_l():
  h = FakeHierarchy()
  z = sampler.codes_from_level_k(h, 3, 500, seed=1)
  assert z.shape == (500, D) and z.dtype == np.float32
  np.testing.assert_allclose(z.mean(0), h.mu.numpy()[3], atol=0.1)
  np.testing.assert_allclose(z.var(0), 0.25, rtol=0.2)
  assert np.mean(np_label_k(h, z) == 3) > 0.95
  np.testing.assert_array_equal(z, sampler.codes_from_level_k(h, 3, 500, seed=1))
  z, ks = sampler.codes_from_level_l(h, 1, 2000, seed=2)
  assert set(ks.tolist()) == {2, 3} and abs(np.mean(ks == 2) - 0.7) < 0.05
  np.testing.assert_allclose(z[ks == 2].mean(0), h.mu.numpy()[2], atol=0.1)


def test_live_components_and_index_checks():
  h = FakeHierarchy()
  assert sampler.live_components(h) == [0, 1, 2, 3]
  assert sampler.live_units(h) == [0, 1]
  with pytest.raises(UserError, match=r"--level_k=4 is a dead .*0, 1, 2, 3"):
    sampler.check_index(4, sampler.live_components(h), 6, "--level_k", "components")
  with pytest.raises(UserError, match=r"--level_l=3 is out of range.*0\.\.2.*0, 1"):
    sampler.check_index(3, sampler.live_units(h), 3, "--level_l", "units")
  sampler.check_index(1, [0, 1], 3, "--level_l", "units")


def test_analogy_and_interpolation():
  a, b, c = codes(3)
  np.testing.assert_allclose(sampler.analogy(a, b, c), c + b - a, rtol=1e-6)
  line = sampler.interpolate(a, b, 5)
  assert line.shape == (5, D)
  np.testing.assert_allclose(line[0], a)
  np.testing.assert_allclose(line[-1], b, rtol=1e-6)
  np.testing.assert_allclose(line[2], (a + b) / 2, rtol=1e-6)
  n = sampler.normal_codes(4000, D, seed=0)
  assert abs(n.mean()) < 0.05 and abs(n.std() - 1) < 0.05


# --- the real model parts at the tiny preset ----------------------------------

def tiny_hps():
  return get_hparams("tiny", "num_mixture=3,num_sub=2,max_seq_len=30")


def test_real_stroke_decoder_batched_equals_single_and_stops():
  hps = tiny_hps()
  dec = StrokeDecoder(hps)
  dec.build()
  z = np.random.default_rng(2).normal(size=(6, hps.z_size)).astype(np.float32)
  strokes, lengths = sampler.sample_strokes(dec, z, 30, 0.5, seed=8)
  assert strokes.shape == (6, 30, 5) and lengths.max() <= 30
  for i in range(6):
    one = sampler.sample_strokes(dec, z[i:i + 1], 30, 0.5, seed=8, sketch_ids=[i])
    assert one[1][0] == lengths[i]
    np.testing.assert_allclose(one[0][0], strokes[i], atol=1e-5)
    np.testing.assert_array_equal(strokes[i, lengths[i]:, 4], 1)
  greedy = sampler.sample_strokes(dec, z, 30, greedy=True)
  cold = sampler.sample_strokes(dec, z, 30, 1e-6, seed=3)
  np.testing.assert_array_equal(cold[1], greedy[1])
  np.testing.assert_allclose(cold[0], greedy[0], atol=2e-3)


def test_level_k_codes_get_label_k_from_the_real_hierarchy():
  hps = tiny_hps()
  h = Hierarchy(hps)
  K, L, dim = hps.num_components, hps.num_units, hps.z_size
  rng = np.random.default_rng(0)
  mu = rng.normal(0.0, 4.0, (K, dim))       # well separated (distance ~ 16)
  q = np.full((K, L), 1e-10)
  q[np.arange(K), np.arange(K) // 2] = 1.0
  h.assign_state((mu, np.full((K, dim), 0.3), np.full(L, 1.0 / L), q / q.sum(0)))
  assert sampler.live_components(h) == list(range(K))
  for k in range(K):
    z = sampler.codes_from_level_k(h, k, 200, seed=k)
    assert np.mean(h.posteriors(z).label_k.numpy() == k) > 0.95
  z, ks = sampler.codes_from_level_l(h, 2, 200, seed=1)
  assert set(ks.tolist()) == {4, 5}
  assert np.mean(h.posteriors(z).label_l.numpy() == 2) > 0.95
  # a unit whose prior collapsed makes its components dead
  h.assign_state((mu, np.full((K, dim), 0.3), np.array([0.5, 0.5, 1e-10]),
                  q / q.sum(0)))
  assert sampler.live_components(h) == [0, 1, 2, 3]
  assert sampler.live_units(h) == [0, 1]
