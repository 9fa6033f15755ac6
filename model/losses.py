"""Losses, weights and schedules (method.md §4).

All functions are TensorFlow ops, safe inside ``tf.function`` (``step`` may be
a tensor) and computed in float32 whatever the inputs' dtype (the hierarchy's
float64 parameters and mixed-precision activations are cast).

What carries gradient: the encoder outputs (m, s), the decoders' outputs, and
the hierarchy posteriors p(k|y), p(l|y,k), which are differentiable functions
of the sampled code y (model/hierarchy.py returns them that way, as the
reference release did).  The hierarchy parameters mu_k, sigma2_k, pi_l, q(k|l)
are constants (stop-gradient), as §4 says.  Wrap the posteriors in
``tf.stop_gradient`` at the call site to treat them as constants too.

Batch means: each per-batch loss is sum_b(...) / batch size.  Under
tf.distribute pass ``global_batch_size`` so that the per-replica losses sum
(the strategy's gradient all-reduce) to the global-batch mean.
"""
import math

import tensorflow as tf

F32 = tf.float32
MDN_EPS = 1e-6         # -log(sum_m pi_m N2 + 1e-6) (method.md §4)
RHO_FLOOR = 1e-6       # floor of 1 - rho^2 (tanh saturates to +-1 in float32)


def _f32(x):
  return tf.cast(x, F32)


def batch_mean(per_example, global_batch_size=None):
  """sum_b per_example / (global_batch_size or the local batch size).

  per_example (B,) -> float32 scalar."""
  per_example = _f32(per_example)
  if global_batch_size is None:
    return tf.reduce_mean(per_example)
  return tf.reduce_sum(per_example) / tf.cast(global_batch_size, F32)


def gaussian_kl(m, s, mu, sigma2):
  """method.md (38): KL(N(m_b, diag s_b) || N(mu_k, diag sigma2_k)) for all b, k.

  0.5 sum_d [log sigma2 - 1 - log s + (s + (m - mu)^2) / sigma2];
  mu, sigma2 are stop-gradient constants.
  m, s (B, D); mu, sigma2 (K, D) -> (B, K) float32."""
  m, s = _f32(m)[:, None, :], _f32(s)[:, None, :]
  mu = tf.stop_gradient(_f32(mu))[None]
  sigma2 = tf.stop_gradient(_f32(sigma2))[None]
  return 0.5 * tf.reduce_sum(
      tf.math.log(sigma2) - 1.0 - tf.math.log(s)
      + (s + tf.square(m - mu)) / sigma2, axis=-1)


def gaussian_kl_loss(m, s, mu, sigma2, post_k, global_batch_size=None):
  """L_gau of method.md (39):
  (1/B) sum_b sum_k p(k|y_b) KL(N(m_b, s_b) || N(mu_k, sigma2_k)).

  m, s (B, D); mu, sigma2 (K, D); post_k (B, K) -> float32 scalar."""
  per_example = tf.reduce_sum(_f32(post_k) * gaussian_kl(m, s, mu, sigma2), axis=1)
  return batch_mean(per_example, global_batch_size)


def ij_loss(post_k, p_l_given_yk, pi_l, q_kl, global_batch_size=None):
  """L_ij of method.md (40):
  (1/B) sum_b sum_{k,l} p(k|y_b) p(l|y_b,k) log[p(k|y_b) p(l|y_b,k) / (pi_l q(k|l))].

  0 log 0 = 0 (tf.math.xlogy), so the flat ablation's zero q(k|l) with zero
  p(l|y,k) contributes nothing.  pi_l and q_kl are stop-gradient constants.
  post_k (B, K); p_l_given_yk (B, K, L); pi_l (L,); q_kl (K, L) -> float32 scalar."""
  joint = _f32(post_k)[:, :, None] * _f32(p_l_given_yk)
  prior = tf.stop_gradient(_f32(q_kl) * _f32(pi_l)[None, :])[None]
  per_example = tf.reduce_sum(tf.math.xlogy(joint, joint)
                              - tf.math.xlogy(joint, prior), axis=[1, 2])
  return batch_mean(per_example, global_batch_size)


def log_bivariate_normal(x, y, mu_x, mu_y, sigma_x, sigma_y, rho,
                         log_sigma_x=None, log_sigma_y=None):
  """log N2((x, y) | mu, sigma, rho) of method.md (17)-(18), element-wise
  (all arguments broadcast together, e.g. x, y (B, T, 1) against (B, T, M)).

  1 - rho^2 is floored at 1e-6 (tanh saturates to +-1 in float32); the log
  sigmas are used when given (exact where exp(log sigma) would overflow)."""
  nx, ny = (x - mu_x) / sigma_x, (y - mu_y) / sigma_y
  one_m_rho2 = tf.maximum(1.0 - tf.square(rho), RHO_FLOOR)
  z = tf.square(nx) + tf.square(ny) - 2.0 * rho * nx * ny
  if log_sigma_x is None:
    log_sigma_x, log_sigma_y = tf.math.log(sigma_x), tf.math.log(sigma_y)
  return (-z / (2.0 * one_m_rho2) - math.log(2.0 * math.pi)
          - log_sigma_x - log_sigma_y - 0.5 * tf.math.log(one_m_rho2))


def mdn_loss(params, target5, training):
  """Stroke reconstruction loss per sequence, the summand of L_lil in
  method.md (41), with the mixture density (17).

  Args:
    params: any object with fields log_pi, mu_x, mu_y, sigma_x, sigma_y, rho
      (B, T, M), optionally log_sigma_x, log_sigma_y, and log_pen or
      pen_logits (B, T, 3) (model/networks/stroke_decoder.py's MixtureParams).
    target5: (B, T, 5) stroke-5 targets.
    training: a Python bool.
  Returns (B,) float32: the sum over the T steps of
  -log(sum_m pi_m N2(dx, dy) + 1e-6) on non-padding steps (mask = 1 - p3)
  plus the pen cross-entropy on all steps when ``training``, on non-padding
  steps otherwise."""
  target5 = _f32(target5)
  dx, dy = target5[..., 0:1], target5[..., 1:2]
  pen = target5[..., 2:5]
  mask = 1.0 - target5[..., 4]
  log_sx, log_sy = (getattr(params, name, None)
                    for name in ("log_sigma_x", "log_sigma_y"))
  if log_sx is not None:
    log_sx, log_sy = _f32(log_sx), _f32(log_sy)
  log_mix = tf.reduce_logsumexp(
      _f32(params.log_pi) + log_bivariate_normal(
          dx, dy, _f32(params.mu_x), _f32(params.mu_y), _f32(params.sigma_x),
          _f32(params.sigma_y), _f32(params.rho), log_sx, log_sy), axis=-1)
  # -log(exp(log_mix) + eps), without leaving log space.
  offset_nll = -tf.reduce_logsumexp(
      tf.stack([log_mix, tf.fill(tf.shape(log_mix), math.log(MDN_EPS))], -1), -1)
  log_pen = getattr(params, "log_pen", None)
  if log_pen is None:
    log_pen = tf.nn.log_softmax(_f32(params.pen_logits), axis=-1)
  pen_nll = -tf.reduce_sum(pen * _f32(log_pen), axis=-1)
  if not training:
    pen_nll = pen_nll * mask
  return tf.reduce_sum(offset_nll * mask + pen_nll, axis=1)


def image_l1_loss(x, x_hat, global_batch_size=None):
  """L_de of method.md (42): mean over the batch of sum over pixels |x - x_hat|.

  x, x_hat (B, w, w, 1) -> float32 scalar."""
  diff = tf.abs(_f32(x) - _f32(x_hat))
  per_example = tf.reduce_sum(tf.reshape(diff, [tf.shape(diff)[0], -1]), axis=1)
  return batch_mean(per_example, global_batch_size)


def kl_weight(step):
  """KL warm-up weight of method.md (43), 1 - 0.999 * 0.9999^step; computed
  in float64 (1 - 0.999 loses digits in float32), returned as a float32 scalar."""
  step = tf.cast(step, tf.float64)
  return _f32(1.0 - 0.999 * tf.pow(tf.constant(0.9999, tf.float64), step))


def learning_rate(step, hps):
  """method.md (45): (learning_rate - min_learning_rate) * decay_rate^(step/3)
  + min_learning_rate, a float32 scalar."""
  decay = tf.pow(tf.constant(hps.decay_rate, tf.float64),
                 tf.cast(step, tf.float64) / 3.0)
  return _f32((hps.learning_rate - hps.min_learning_rate) * decay
              + hps.min_learning_rate)


def use_stroke_loss(step, hps):
  """The decoder alternation of method.md (44), a boolean scalar: True when
  the step trains the stroke decoder (lil_loss), False when it trains the
  image decoder (de_loss): step >= warmup_steps or step % 4 == 0."""
  step = tf.cast(step, tf.int64)
  return tf.logical_or(step >= hps.warmup_steps, tf.equal(step % 4, 0))


def total_loss(gaussian, ij, lil, de, step, hps):
  """method.md (44) total: kl_factor * kl_weight * (ij + gaussian) plus
  lil_loss on stroke steps (use_stroke_loss) or de_weight * de_loss on the
  others.  de_weight = 1 (the default) is the released code, which defines a
  de_weight hparam (0.5) but adds de_loss unweighted.

  ``lil`` is the batch mean of mdn_loss; all arguments are scalars; returns
  a float32 scalar."""
  kl = hps.kl_factor * kl_weight(step) * (_f32(ij) + _f32(gaussian))
  return kl + tf.where(use_stroke_loss(step, hps), _f32(lil),
                       hps.de_weight * _f32(de))
