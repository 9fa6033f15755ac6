"""model/losses.py against NumPy / SciPy (method.md §4)."""
import collections
import math

import numpy as np
import pytest
import tensorflow as tf
from scipy.special import log_softmax
from scipy.stats import multivariate_normal

from hparams import get_hparams
from model import losses

Mix = collections.namedtuple(
    "Mix", "pen_logits log_pi mu_x mu_y sigma_x sigma_y rho log_pen")


def np_kl(m, s, mu, sigma2):
  """KL(N(m, diag s) || N(mu, diag sigma2)), the textbook form, per (b, k)."""
  out = np.zeros((m.shape[0], mu.shape[0]))
  for b in range(m.shape[0]):
    for k in range(mu.shape[0]):
      out[b, k] = 0.5 * (np.sum(s[b] / sigma2[k]) + np.sum(
          (mu[k] - m[b]) ** 2 / sigma2[k]) - m.shape[1]
          + np.log(np.prod(sigma2[k]) / np.prod(s[b])))
  return out


def test_gaussian_kl_loss_matches_closed_form():
  rng = np.random.RandomState(0)
  m, s = rng.randn(5, 4), rng.uniform(0.1, 2, (5, 4))
  mu, sigma2 = rng.randn(3, 4), rng.uniform(0.1, 2, (3, 4)).astype(np.float64)
  p_k = rng.dirichlet(np.ones(3), 5)
  got = losses.gaussian_kl_loss(m, s, mu, sigma2, p_k)
  want = np.mean(np.sum(p_k * np_kl(m, s, mu, sigma2), 1))
  np.testing.assert_allclose(got, want, rtol=1e-5)
  # zero when q(z|x) equals the component; mu, sigma2 are constants.
  np.testing.assert_allclose(
      losses.gaussian_kl_loss(mu[:1], sigma2[:1], mu[:1], sigma2[:1], [[1.0]]),
      0.0, atol=1e-6)
  mu_t, m_t = tf.constant(mu), tf.constant(m, tf.float32)
  with tf.GradientTape(persistent=True) as tape:
    tape.watch([mu_t, m_t])
    loss = losses.gaussian_kl_loss(m_t, s, mu_t, sigma2, p_k)
  assert tape.gradient(loss, mu_t) is None
  assert np.abs(tape.gradient(loss, m_t)).sum() > 0
  np.testing.assert_allclose(
      losses.gaussian_kl_loss(m, s, mu, sigma2, p_k, global_batch_size=10),
      want / 2, rtol=1e-5)


def test_ij_loss():
  rng = np.random.RandomState(1)
  b, k, l = 4, 6, 3
  p_k = rng.dirichlet(np.ones(k), b)
  p_lk = rng.dirichlet(np.ones(l), (b, k))
  pi_l = rng.dirichlet(np.ones(l))
  q = rng.dirichlet(np.ones(k), l).T
  joint = p_k[:, :, None] * p_lk
  want = np.sum(joint * np.log(joint / (pi_l[None, None] * q[None]))) / b
  np.testing.assert_allclose(losses.ij_loss(p_k, p_lk, pi_l, q), want, rtol=1e-5)
  # zero at the prior: p(k|y) = pi_k, p(l|y,k) = pi_l q(k|l) / pi_k.
  pi_k = q @ pi_l
  prior_lk = (q * pi_l[None]) / pi_k[:, None]
  np.testing.assert_allclose(
      losses.ij_loss(np.tile(pi_k, (b, 1)), np.tile(prior_lk, (b, 1, 1)), pi_l, q),
      0.0, atol=1e-6)
  # the flat ablation's exact zeros: 0 log 0 = 0, finite gradients.
  eye = np.eye(k)
  p_k_t = tf.constant(p_k, tf.float32)
  with tf.GradientTape() as tape:
    tape.watch(p_k_t)
    loss = losses.ij_loss(p_k_t, np.tile(eye, (b, 1, 1)), np.full(k, 1 / k), eye)
  want = np.sum(p_k * np.log(p_k * k)) / b
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  assert np.all(np.isfinite(tape.gradient(loss, p_k_t)))


def random_mixture(rng, b, t, m):
  logits = rng.randn(b, t, 3)
  pi_logits = rng.randn(b, t, m)
  return Mix(pen_logits=logits, log_pi=log_softmax(pi_logits, -1),
             mu_x=rng.randn(b, t, m), mu_y=rng.randn(b, t, m),
             sigma_x=np.exp(rng.randn(b, t, m) * 0.3),
             sigma_y=np.exp(rng.randn(b, t, m) * 0.3),
             rho=np.tanh(rng.randn(b, t, m)), log_pen=log_softmax(logits, -1))


def random_targets(rng, lengths, t):
  target = np.zeros((len(lengths), t, 5))
  for i, n in enumerate(lengths):
    target[i, :n, :2] = rng.randn(n, 2)
    pen = rng.randint(2, size=n)
    target[i, :n, 2], target[i, :n, 3] = 1 - pen, pen
    target[i, n:, 4] = 1.0
  return target


def np_mdn(p, target, training):
  b, t, m = p.mu_x.shape
  out = np.zeros(b)
  for i in range(b):
    for j in range(t):
      pad = target[i, j, 4] == 1
      dens = 0.0
      for c in range(m):
        sx, sy, r = p.sigma_x[i, j, c], p.sigma_y[i, j, c], p.rho[i, j, c]
        cov = [[sx * sx, r * sx * sy], [r * sx * sy, sy * sy]]
        dens += np.exp(p.log_pi[i, j, c]) * multivariate_normal.pdf(
            target[i, j, :2], [p.mu_x[i, j, c], p.mu_y[i, j, c]], cov)
      ce = -np.sum(target[i, j, 2:] * p.log_pen[i, j])
      if not pad:
        out[i] += -np.log(dens + 1e-6)
      if training or not pad:
        out[i] += ce
  return out


def test_mdn_loss_matches_scipy_and_pen_masking():
  rng = np.random.RandomState(2)
  t = 7
  params = random_mixture(rng, 3, t, 4)
  target = random_targets(rng, [7, 4, 1], t)
  train = losses.mdn_loss(params, target, training=True)
  evals = losses.mdn_loss(params, target, training=False)
  assert train.shape == (3,)
  np.testing.assert_allclose(train, np_mdn(params, target, True), rtol=1e-5)
  np.testing.assert_allclose(evals, np_mdn(params, target, False), rtol=1e-5)
  # the difference is exactly the pen loss on padding steps (none in row 0).
  pad_ce = -np.sum(target[..., 2:] * params.log_pen, -1) * target[..., 4]
  np.testing.assert_allclose(np.asarray(train) - np.asarray(evals),
                             pad_ce.sum(1), rtol=1e-4, atol=1e-5)
  assert float(train[0]) == pytest.approx(float(evals[0]))
  assert float(train[2] - evals[2]) > 0
  # pen_logits alone are enough (log_pen computed when absent).
  only_logits = collections.namedtuple("P", "pen_logits log_pi mu_x mu_y "
                                       "sigma_x sigma_y rho")(*params[:7])
  np.testing.assert_allclose(losses.mdn_loss(only_logits, target, True), train,
                             rtol=1e-6)


def test_mdn_loss_far_target_is_bounded_by_epsilon():
  rng = np.random.RandomState(3)
  params = random_mixture(rng, 1, 1, 2)
  target = np.array([[[1e4, -1e4, 1, 0, 0]]])
  got = losses.mdn_loss(params, target, training=False)
  want = -math.log(1e-6) - np.sum(target[0, 0, 2:] * params.log_pen[0, 0])
  np.testing.assert_allclose(got, [want], rtol=1e-5)
  saturated = params._replace(rho=np.ones_like(params.rho))
  assert np.all(np.isfinite(losses.mdn_loss(saturated, target, True)))


def test_image_l1_loss():
  rng = np.random.RandomState(4)
  x, xh = rng.uniform(-1, 1, (3, 8, 8, 1)), rng.uniform(-1, 1, (3, 8, 8, 1))
  np.testing.assert_allclose(losses.image_l1_loss(x, xh),
                             np.abs(x - xh).reshape(3, -1).sum(1).mean(), rtol=1e-5)


STEPS = [0, 1, 4, 999, 1000, 1001]


def test_schedules_at_chosen_steps():
  hps = get_hparams("paper")
  for step in STEPS:
    for s in (step, tf.constant(step), tf.constant(step, tf.int64)):
      np.testing.assert_allclose(losses.kl_weight(s), 1 - 0.999 * 0.9999 ** step,
                                 rtol=1e-5)
      np.testing.assert_allclose(
          losses.learning_rate(s, hps),
          (0.001 - 0.00001) * 0.9999 ** (step / 3) + 0.00001, rtol=1e-5)
  assert [bool(losses.use_stroke_loss(s, hps)) for s in STEPS] == [
      True, False, True, False, True, True]
  np.testing.assert_allclose(losses.kl_weight(0), 0.001, rtol=1e-4)
  small = get_hparams("small", "warmup_steps=300")
  assert [bool(losses.use_stroke_loss(s, small)) for s in (299, 300, 301)] == [
      False, True, True]


def test_total_loss_alternation_in_tf_function():
  hps = get_hparams("paper")
  gau, ij, lil, de = 2.0, 3.0, 7.0, 11.0
  f = tf.function(lambda s: losses.total_loss(gau, ij, lil, de, s, hps))
  for step in STEPS:
    kl = 0.1 * (1 - 0.999 * 0.9999 ** step) * (gau + ij)
    want = kl + (lil if step >= 1000 or step % 4 == 0 else de)   # de_weight 1
    np.testing.assert_allclose(f(tf.constant(step)), want, rtol=1e-5)
