"""The HyperLSTM recurrence, (12)-(15) of docs/method.md, with each cell's
elementwise step in C++.

The same forward / hand-written backward loops as the TensorFlow-op path
(model/fast/hyper_recurrence.py; both use model/fast/hyper_loops.py's loops,
weights and dropout masks), except that per time step everything between the
matmuls is one kernel call per cell and direction (model/fast/fused_gates.py),
and the embedding factors stay gate-major, (12, B, H), as the batched
embedding matmul produces and consumes them (the TensorFlow-op path
transposes them to batch-major and back every step).

Stored for the backward per step: the recurrent matmul's output hw (B, 4H +
4Nh), the factors (12, B, H), the embeddings (12, B, E), the kernels'
activation rows (B, 10H + 5) and (B, 10Nh + 5), and the dropout mask.  The
per-step gradient factors of the layer-norm gains / offsets and the gate
bias come out of the backward kernels as (B, 14H) and (B, 10Nh) row blocks,
summed over rows and steps inside the loop (a ones-vector matmul): those
weights' gradients.
"""
from typing import NamedTuple

import tensorflow as tf

from model.fast import fused_gates
from model.fast.hyper_loops import (LoopWeights, RecurrenceImpl,
                                    backward_loop, dropout_mask, forward_loop,
                                    matrix_grads)


class _KernelSums(NamedTuple):
  """The backward kernels' per-row parameter factors, main (14H) then hyper
  (10Nh), summed over rows and steps: the gradients of these weights."""
  gates_gain: tf.Tensor          # (4H,)
  gates_offset: tf.Tensor        # (4H,)
  c_gain: tf.Tensor              # (H,)
  c_offset: tf.Tensor            # (H,)
  gate_bias: tf.Tensor           # (4H,) dL/d pre: the gate bias b_g's
  hyper_gates_gain: tf.Tensor    # (4Nh,)
  hyper_gates_offset: tf.Tensor  # (4Nh,)
  hyper_c_gain: tf.Tensor        # (Nh,)
  hyper_c_offset: tf.Tensor      # (Nh,)

  @classmethod
  def split(cls, sums, units, hyper_units):
    """The (14H + 10Nh,) row of sums by weight."""
    main, hyper = (4 * units, 4 * units, units, units, 4 * units), (
        4 * hyper_units, 4 * hyper_units, hyper_units, hyper_units)
    return cls(*tf.split(sums, main + hyper))


def _forward(cell_math, x_main, x_hyper, states, base_seed, keep_prob):
  """(12)-(15) over all steps -> (final states, saved, inputs) as
  ``forward_loop``."""
  units = cell_math.units
  layout = dict(hw=None, factors=None, embeddings=None, main_activations=None,
                hyper_activations=None)
  if base_seed is not None:
    layout["mask"] = None
  w = cell_math.weights
  bias = tf.reshape(w.b_factors[8 * units:], [4, units])

  def step(t, inputs, states):
    h, c, hyper_h, hyper_c = states
    stored = {}
    stored["hw"] = hw = cell_math.matmul(h, w.w_rec)        # (B, 4H + 4Nh)
    hyper_h, hyper_c, stored["hyper_activations"] = (
        fused_gates.ln_cell_forward(
            inputs.x_hyper.read(t), hw, 4 * units,
            cell_math.matmul(hyper_h, w.hyper_w_rec), hyper_c,
            w.hyper_gates_gain, w.hyper_gates_offset, w.hyper_c_gain,
            w.hyper_c_offset, cell_math.epsilon))
    stored["embeddings"] = cell_math.embeddings(hyper_h)      # (12, B, E)
    stored["factors"] = cell_math.matmul(stored["embeddings"],
                                         w.w_factors)         # (12, B, H)
    mask = None
    if base_seed is not None:
      mask = stored["mask"] = dropout_mask(cell_math, base_seed, t, keep_prob,
                                           tf.shape(c))
    h, c, stored["main_activations"] = fused_gates.forward(
        stored["factors"], inputs.x_main.read(t), hw, c, mask, bias,
        w.gates_gain, w.gates_offset, w.c_gain, w.c_offset, cell_math.epsilon)
    return stored, (h, c, hyper_h, hyper_c)

  return forward_loop(cell_math, x_main, x_hyper, states, layout, step)


def _backward(cell_math, saved, inputs, d_out, d_final):
  """The gradients of (12)-(15), from the last step to the first -> (the
  per-step gradients stacked over steps, d_states, d_w_factors,
  _KernelSums)."""
  ones = tf.ones([1, tf.shape(d_out)[1]], cell_math.elementwise_dtype)
  has_mask = "mask" in saved
  w = cell_math.weights

  def step(t, d_out_t, carry, accs):
    dh, dc, d_hyper_h, d_hyper_c = carry
    d_w_factors, kernel_sums = accs
    hw, factors, embeddings, main, hyper = (saved[name].read(t) for name in (
        "hw", "factors", "embeddings", "main_activations",
        "hyper_activations"))
    mask = saved["mask"].read(t) if has_mask else None
    grads = {}
    d_factors, d_hw_main, grads["d_x_main"], dc, main_params = (
        fused_gates.backward(factors, inputs.x_main.read(t), hw,
                             saved["c"].read(t), mask, main, dh, d_out_t, dc,
                             w.gates_gain, w.c_gain))
    d_hyper_h_here, grads["d_embeddings"], d_w_factors = (
        cell_math.factors_backward_gate_major(d_factors, embeddings,
                                              d_w_factors))
    d_hyper_pre, d_hyper_c, hyper_params = fused_gates.ln_cell_backward(
        hyper, d_hyper_h, d_hyper_h_here, d_hyper_c, saved["hyper_c"].read(t),
        w.hyper_gates_gain, w.hyper_c_gain)
    kernel_sums = kernel_sums + tf.matmul(
        ones, tf.concat([main_params, hyper_params], 1))
    grads["d_hw"] = tf.concat([d_hw_main, d_hyper_pre], 1)
    transposed = cell_math.transposed
    carry = (cell_math.matmul(grads["d_hw"], transposed["w_rec"]), dc,
             cell_math.matmul(d_hyper_pre, transposed["hyper_w_rec"]),
             d_hyper_c)
    return grads, carry, (d_w_factors, kernel_sums)

  accs = [tf.zeros(tf.shape(w.w_factors), cell_math.elementwise_dtype),
          tf.zeros([1, 14 * cell_math.units + 10 * cell_math.hyper_units],
                   cell_math.elementwise_dtype)]
  layout = dict(d_hw=None, d_x_main=None, d_embeddings=None)
  grads, d_states, (d_w_factors, kernel_sums) = backward_loop(
      cell_math, d_out, d_final, layout, accs, step)
  return (grads, d_states, d_w_factors,
          _KernelSums.split(kernel_sums[0], cell_math.units,
                            cell_math.hyper_units))


def _gradients(cell_math, saved, inputs, d_outputs, d_finals):
  """-> (d_x_main, d_x_hyper, d_states, LoopWeights of gradients)."""
  grads, d_states, d_w_factors, sums = _backward(cell_math, saved, inputs,
                                                 d_outputs, d_finals)
  units, hyper_units = cell_math.units, cell_math.hyper_units
  d_weights = LoopWeights(
      gates_gain=tf.reshape(sums.gates_gain, [4, units]),
      gates_offset=tf.reshape(sums.gates_offset, [4, units]),
      c_gain=sums.c_gain, c_offset=sums.c_offset,
      hyper_gates_gain=tf.reshape(sums.hyper_gates_gain, [4, hyper_units]),
      hyper_gates_offset=tf.reshape(sums.hyper_gates_offset,
                                    [4, hyper_units]),
      hyper_c_gain=sums.hyper_c_gain, hyper_c_offset=sums.hyper_c_offset,
      w_factors=d_w_factors,
      b_factors=tf.concat([tf.zeros([8 * units], cell_math.elementwise_dtype),
                           sums.gate_bias], 0),
      **matrix_grads(cell_math, saved, grads["d_hw"], grads["d_embeddings"]))
  return grads["d_x_main"], grads["d_hw"][..., 4 * units:], d_states, d_weights


FUSED = RecurrenceImpl(_forward, _gradients)
