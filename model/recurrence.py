"""Running a decoder cell over a whole sequence, fast.

``run_cell(cell, xw, states, training)`` runs the cell over the projected inputs
xw (B, T, F):

* HyperLSTM: model/hyper_recurrence.py, a forward and a hand-written backward
  loop of few fused ops per step (the gradient loop of the plain one, by
  autodiff, has 540 graph nodes per step against 188; benchmarks/README.md);
  in float32 on CPU the main cell's elementwise step is one C++ kernel each
  way (model/hyper_fused.py, model/fused_gates.py) when it can be built;
* LSTM / layer-norm LSTM: a ``tf.while_loop`` of ``cell.step_from_hw`` (per step
  the only matmul is the recurrent one), differentiated by autodiff.
"""
import tensorflow as tf
from keras import ops

from model import fused_gates
from model.cells import HyperLSTMCell
from model.hyper_fused import FUSED
from model.hyper_recurrence import TF_OPS, run_hyper


def step_loop(cell, xw, states, training, w_rec, base_seed):
  """The tf.while_loop of ``cell.step_from_hw`` over xw (B, T, F), recurrent
  dropout seeded base_seed + [0, t] at step t (None: no dropout),
  differentiated by autodiff.  -> (outputs (B, T, H), final states)."""
  xw_t = ops.transpose(xw, (1, 0, 2))
  steps = tf.shape(xw_t)[0]
  inputs = tf.TensorArray(xw.dtype, size=steps).unstack(xw_t)
  outputs = tf.TensorArray(xw.dtype, size=steps)

  def body(t, outputs, states):
    seed = None if base_seed is None else base_seed + tf.stack([0, t])
    hw = ops.matmul(states[0], w_rec)
    h, new_states = cell.step_from_hw(inputs.read(t), hw, list(states),
                                      training=training, seed=seed)
    return t + 1, outputs.write(t, h), tuple(new_states)

  _, outputs, final = tf.while_loop(
      lambda t, *_: t < steps, body, (tf.constant(0), outputs, tuple(states)),
      maximum_iterations=steps)
  return ops.transpose(outputs.stack(), (1, 0, 2)), list(final)


def run_cell(cell, xw, states, training=False):
  """Runs ``cell`` over projected inputs ``xw`` (B, T, F) from ``states``.

  Recurrent dropout (training) draws one seed from the cell's SeedGenerator per
  call and a stateless mask per step from (seed, t).
  Returns (outputs (B, T, H), final states).
  """
  xw = ops.convert_to_tensor(xw)
  states = [ops.convert_to_tensor(s, dtype=xw.dtype) for s in states]
  base_seed = None
  if cell.uses_dropout(training):
    base_seed = tf.cast(cell.seed_generator.next(), tf.int32)
  if isinstance(cell, HyperLSTMCell):
    path = FUSED if fused_gates.usable(xw.dtype) else TF_OPS
    return run_hyper(cell, xw, states, base_seed, path)
  return step_loop(cell, xw, list(states), bool(training),
                   ops.cast(cell.w_rec, xw.dtype), base_seed)
