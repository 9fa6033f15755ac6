"""The training paths as they were before the fast ones (test helpers only).

Equivalence tests compare the fast code against these (benchmarks/ time the
fast paths against the model's own switches instead:
benchmarks/train_parts.py).  ``old_paths()`` switches the model code to all of
them:

* ``plain_run_cell``: the decoder cell by the model's autodiff recurrence
  (model/networks/recurrence.py, ``recurrence=autodiff``), whatever the
  cell's setting: the math of model/networks/cells.py that the hand-written
  backward (model/fast/hyper_recurrence.py) must reproduce;
* the encoder's dilated convolutions called as their Keras layers
  (space-to-batch + conv + batch-to-space), and its instance norms as Keras
  layers (no C++ kernel);
* a training step that back-propagates through both decoders (the loss's
  ``tf.where`` zeroes the unused one's gradient) instead of one.
"""
import contextlib

from model import rpcl_model
from model.fast import native_ops
from model.networks import encoder, recurrence


def plain_run_cell(cell, xw, states, training=False, base_seed=None):
  """(outputs (B, T, H), final states) of ``cell`` over ``xw`` (B, T, F) by
  the model's autodiff path (model/networks/recurrence.py), whatever the
  cell's ``recurrence`` setting."""
  return recurrence.run_cell(cell, xw, states, training=training,
                             recurrence="autodiff", base_seed=base_seed)


@contextlib.contextmanager
def old_paths(encoder_convs=True, encoder_norms=None):
  """Within the block, model code takes the old paths (trace the compiled
  functions inside it); ``encoder_convs=False`` keeps the fast encoder
  (convolutions and instance-norm kernel); ``encoder_norms`` (default: as
  ``encoder_convs``) whether the instance norms are Keras layers.

  (The image loss is an L1 norm: its gradient flips sign with last-bit
  changes of the encoder's output, so the full-step comparison on an image
  step keeps the encoder; the encoder alone is compared with a smooth loss.)"""
  model_cls = rpcl_model.RPCLPix2SeqH
  saved = (recurrence.uses_fused, encoder.apply_conv,
           model_cls._train_decode_losses)

  def both_decoders(self, strokes5, images, z, use_stroke, gbs=None):
    del use_stroke
    return self._decode_losses(strokes5, images, z, True, gbs)

  recurrence.uses_fused = lambda cell, choice=None: False
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
    (recurrence.uses_fused, encoder.apply_conv,
     model_cls._train_decode_losses) = saved
