"""The training paths as they were before the fast ones (test helpers only).

Equivalence tests and benchmarks/bench_train.py compare the fast code against
these.  ``old_paths()`` switches the model code to all of them:

* ``plain_run_cell``: a decoder cell looped over projected inputs as one
  ``tf.while_loop`` of ``cell.step_from_hw``, differentiated by TF's autodiff,
  with the same stateless per-step dropout seeds as model/recurrence.py.  This
  is what the HyperLSTM recurrence was before its hand-written backward
  (model/hyper_recurrence.py); the equivalence tests and
  benchmarks/bench_train.py compare against it.
* the encoder's dilated convolutions called as their Keras layers
  (space-to-batch + conv + batch-to-space), and its instance norms as Keras
  layers (no C++ kernel);
* a training step that back-propagates through both decoders (the loss's
  ``tf.where`` zeroes the unused one's gradient) instead of one.
"""
import contextlib

import tensorflow as tf
from keras import ops

from model import recurrence


def plain_run_cell(cell, xw, states, training=False, base_seed=None):
  """(outputs (B, T, H), final states) of ``cell`` over ``xw`` (B, T, F).

  ``base_seed``: the (2,) int32 seed of the recurrent dropout masks (step t
  uses base_seed + [0, t]); None draws it from the cell's SeedGenerator, as
  model/recurrence.run_cell does, when dropout is active."""
  xw = ops.convert_to_tensor(xw)
  states = [ops.convert_to_tensor(s, dtype=xw.dtype) for s in states]
  if base_seed is None and cell.uses_dropout(training):
    base_seed = tf.cast(cell.seed_generator.next(), tf.int32)
  if not cell.uses_dropout(training):
    base_seed = None
  return recurrence.step_loop(cell, xw, list(states), bool(training),
                              ops.cast(cell.w_rec, xw.dtype), base_seed)


@contextlib.contextmanager
def old_paths(encoder_convs=True, encoder_norms=None):
  """Within the block, model code takes the old paths (trace the compiled
  functions inside it); ``encoder_convs=False`` keeps the fast encoder
  (convolutions and instance-norm kernel); ``encoder_norms`` (default: as
  ``encoder_convs``) whether the instance norms are Keras layers.

  (The image loss is an L1 norm: its gradient flips sign with last-bit
  changes of the encoder's output, so the full-step comparison on an image
  step keeps the encoder; the encoder alone is compared with a smooth loss.)"""
  from model import encoder, native_ops, recurrence, rpcl_model
  model_cls = rpcl_model.RPCLPix2SeqH
  saved = (recurrence.run_hyper, encoder.apply_conv,
           model_cls._train_decode_losses)

  def run_hyper(cell, xw, states, base_seed=None, path=None):
    del path
    return plain_run_cell(cell, xw, states, training=base_seed is not None,
                          base_seed=base_seed)

  def both_decoders(self, strokes5, images, z, use_stroke, gbs=None):
    del use_stroke
    return self._decode_losses(strokes5, images, z, True, gbs)

  recurrence.run_hyper = run_hyper
  norms = contextlib.nullcontext()
  if encoder_convs:
    encoder.apply_conv = lambda layer, x: layer(x)
  if encoder_convs if encoder_norms is None else encoder_norms:
    norms = native_ops.disabled(native_ops.NORM)
  model_cls._train_decode_losses = both_decoders
  try:
    with norms:
      yield
  finally:
    (recurrence.run_hyper, encoder.apply_conv,
     model_cls._train_decode_losses) = saved
