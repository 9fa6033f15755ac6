"""The mixed-precision switch ``hps.precision``.

``float32`` (default) | ``mixed_float16`` | ``mixed_bfloat16``: the networks
(encoder, image decoder, stroke decoder cell) compute in float16 / bfloat16
with float32 variables (Keras dtype policies); kept in float32 whatever the
policy: the encoder's outputs m, s (cast right after the encoder), layer norm
statistics (model/networks/cells.py), the mixture head and everything downstream of it
(model/networks/stroke_decoder.py), all losses (model/losses.py casts), the optimiser
and its slots.  The hierarchy is float64 throughout (model/hierarchy.py).

float16 has a narrow exponent range, so its gradients are computed from the
loss times a dynamic loss scale, held by a ``keras.optimizers.
LossScaleOptimizer`` around the model's Adam (:func:`loss_scale_optimizer`;
the train step skips the update and halves the scale on overflow and doubles
it after ``GROWTH_STEPS`` finite steps, :func:`update_loss_scale`).
bfloat16 has float32's range and needs no scaling.
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


INITIAL_SCALE = 2.0 ** 10
GROWTH_STEPS = 2000


def loss_scale_optimizer(precision, optimizer):
  """``keras.optimizers.LossScaleOptimizer`` wrapping ``optimizer`` for
  ``mixed_float16``; None for the other precisions (no loss scaling)."""
  if precision != "mixed_float16":
    return None
  return keras.optimizers.LossScaleOptimizer(
      optimizer, initial_scale=INITIAL_SCALE, dynamic_growth_steps=GROWTH_STEPS)


def update_loss_scale(lso, finite, apply):
  """LossScaleOptimizer's scale rule, when ``apply``: halve on non-finite
  gradients, double after ``dynamic_growth_steps`` finite ones (its
  ``step_counter`` counts them).

  Hand-written because the train step (model/rpcl_model.py) unscales and
  steps the Adam itself: ``LossScaleOptimizer.apply`` would all-reduce the
  already global gradients again under tf.distribute, with a merge_call that
  cannot run inside the step's tf.cond."""
  scale, count = lso.dynamic_scale, lso.step_counter
  grow = tf.logical_and(finite, tf.equal(count, lso.dynamic_growth_steps - 1))
  new_scale = tf.where(finite, tf.where(grow, scale * 2.0, scale), scale * 0.5)
  new_count = tf.where(tf.logical_and(finite, tf.logical_not(grow)), count + 1,
                       tf.zeros_like(count))
  scale.assign(tf.where(apply, new_scale, scale))
  count.assign(tf.where(apply, new_count, count))
