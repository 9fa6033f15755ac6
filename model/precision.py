"""The mixed-precision switch ``hps.precision``.

``float32`` (default) | ``mixed_float16`` | ``mixed_bfloat16``: the networks
(encoder, image decoder, stroke decoder cell) compute in float16 / bfloat16
with float32 variables (Keras dtype policies); kept in float32 whatever the
policy: the encoder's outputs m, s (cast right after the encoder), layer norm
statistics (model/cells.py), the mixture head and everything downstream of it
(model/stroke_decoder.py), all losses (model/losses.py casts), the optimiser
and its slots.  The hierarchy is float64 throughout (model/hierarchy.py).

float16 has a narrow exponent range, so its gradients are computed from the
loss times a dynamic loss scale (:class:`DynamicLossScale`, the usual scheme:
halve and skip the update on overflow, double after ``growth_steps`` finite
steps).  bfloat16 has float32's range and needs no scaling.
"""
import contextlib

import keras
import tensorflow as tf

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
VAR_FLOOR = 1e-10   # the encoder's variance epsilon, re-applied after the cast


@contextlib.contextmanager
def policy_scope(precision):
  """Keras layers created inside get the dtype policy ``precision``."""
  if precision not in PRECISIONS:
    raise ValueError(f"precision {precision!r}: expected one of {PRECISIONS}")
  old = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy(precision)
  try:
    yield
  finally:
    keras.mixed_precision.set_global_policy(old)


def encoder_outputs_f32(m, s):
  """(m, s) of the encoder in float32; s floored at 1e-10 (a float16 softplus
  underflows to 0 where float32 gives s >= 1e-10; identity in float32)."""
  s = tf.cast(s, tf.float32)
  return tf.cast(m, tf.float32), tf.maximum(s, VAR_FLOOR)


class DynamicLossScale(tf.Module):
  """Dynamic loss scaling for float16 gradients; a no-op when disabled.

  ``scale_loss(loss)`` before ``tape.gradient``; ``unscale(grads)`` after it;
  ``update(finite)`` once per step with whether all unscaled gradients are
  finite: an overflow halves the scale (the caller skips the update), and
  ``growth_steps`` finite steps in a row double it.
  """

  def __init__(self, enabled, initial_scale=2.0 ** 10, growth_steps=2000):
    super().__init__(name="loss_scale")
    self.enabled = bool(enabled)
    self.growth_steps = int(growth_steps)
    if self.enabled:
      self.scale = tf.Variable(float(initial_scale), trainable=False,
                               dtype=tf.float32, name="scale")
      self.good_steps = tf.Variable(0, trainable=False, dtype=tf.int64,
                                    name="good_steps")

  def scale_loss(self, loss):
    return loss * self.scale if self.enabled else loss

  def unscale(self, grads):
    if not self.enabled:
      return grads
    inv = 1.0 / self.scale
    return [None if g is None else tf.cast(g, tf.float32) * inv for g in grads]

  def update_and_flag_nonfinite(self, ok, total, grads, state):
    """Updates the scale after a step; returns the step's ``nonfinite`` flag.

    ``ok``: the update is applied.  Without loss scaling the flag is ``not
    ok``.  With it, a gradient overflow while the loss and the new hierarchy
    ``state`` are finite is a normal skipped step (the scale halves), not a
    divergence, so it is not flagged."""
    if not self.enabled:
      return tf.logical_not(ok)
    self.update(_all_finite(grads))
    return tf.logical_and(tf.logical_not(ok),
                          tf.logical_not(_all_finite([total] + list(state))))

  def update(self, finite):
    """Adjusts the scale after a step whose gradients were ``finite``."""
    if not self.enabled:
      return
    grow = tf.logical_and(finite, self.good_steps + 1 >= self.growth_steps)
    self.scale.assign(tf.where(
        finite, tf.where(grow, self.scale * 2.0, self.scale),
        tf.maximum(self.scale * 0.5, 1.0)))
    self.good_steps.assign(tf.where(tf.logical_and(finite, tf.logical_not(grow)),
                                    self.good_steps + 1,
                                    tf.zeros([], tf.int64)))


def _all_finite(tensors):
  return tf.reduce_all(tf.stack([tf.reduce_all(tf.math.is_finite(
      tf.cast(t, tf.float32))) for t in tensors]))
