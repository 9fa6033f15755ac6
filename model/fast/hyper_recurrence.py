"""The HyperLSTM recurrence, (12)-(15) of docs/method.md, with a hand-written
backward pass.

``run_hyper(cell, xw, states, base_seed)`` computes what looping
``cell.step_from_hw`` over the projected inputs computes
(model/networks/cells.py), to float rounding, as two ``tf.while_loop``s of few
ops inside one ``tf.custom_gradient``:

* Layout: batch-major; one (B, H) @ (H, 4H + 4Nh) matmul per step gives the
  main gates' recurrent part and the hyper LSTM's; the gates are (B, 4, H) for
  their layer norms; the 12 embedding factors (B, 12H): alpha_x, alpha_h,
  beta + bias.  (A gate-major (4, B, H) layout with broadcast batched matmuls
  measured slower: batched matmuls run at half the rate at these shapes.)
* One sigmoid for all four gates: tanh(j) = 2 sigmoid(2j) - 1, and the factor 2
  and the forget bias are folded into the gates' layer-norm gain and offset.
* Embeddings (13): hyper_h -> (B, 12E) in one matmul, then (12, B, E) ->
  (12, B, H) in one batched matmul (``CellMath.factors``).  (Multiplying
  hyper_h by the products W_embed W_alpha, (Nh, 12H), is one matmul but 3x
  the FLOPs; it measured slower at the small preset and much slower at the
  paper's.)
* The forward stores every activation the backward needs (no recomputation):
  per step and batch row 28H + 16Nh + 12E floats, H more with dropout.  The
  backward applies the chain rule by hand; the weight gradients of the
  recurrent matrices and embeddings and the layer-norm gain/offset sums are
  formed after the loop over all T*B rows at once.

Recurrent dropout: the same stateless mask per step as ``step_from_hw`` (seed
``base_seed + [0, t]``), stored for the backward.  Mixed precision: matmuls in
the inputs' dtype, everything elementwise and the states between steps in
float32.  The loops, the weights' layout and the embeddings' arithmetic are
model/fast/hyper_loops.py's, shared with the C++ path,
model/fast/hyper_fused.py.
"""
from typing import NamedTuple

import tensorflow as tf

from model.fast.hyper_loops import (CellMath, LoopWeights, RecurrenceImpl,
                                    backward_loop, colsum, dropout_mask,
                                    forward_loop, matrix_grads)

# model/networks/recurrence.cell_digest of the HyperLSTMCell this path
# computes: when cells.py's code changes, the model stops using this path
# (recurrence.fused_matches) until it is checked and this digest renewed.
VERIFIED_CELL_DIGEST = ("79bacc294885d34405dbece5370fe2bd"
                        "61c5d60c7d58a37fe7070af618fe4918")


class LnLstmSaved(NamedTuple):
  """What the backward of one layer-norm LSTM step reads, stored by its
  forward (n units: H for the main cell, Nh for the hyper cell)."""
  gates_hat: tf.Tensor      # (B, 4, n) the gates' normalised pre-activations
  gates_rstd: tf.Tensor     # (B, 4, 1) their 1 / sqrt(var + eps)
  sigmoid_slope: tf.Tensor  # (B, 4, n) s (1 - s) of the four sigmoids s
  i: tf.Tensor              # (B, n) sigmoid(a_i)
  g: tf.Tensor              # (B, n) tanh(a_j), times the dropout mask d_t
  f: tf.Tensor              # (B, n) sigmoid(a_f + 1)
  o: tf.Tensor              # (B, n) sigmoid(a_o)
  c_hat: tf.Tensor          # (B, n) the normalised cell state
  c_rstd: tf.Tensor         # (B, 1) its 1 / sqrt(var + eps)
  c_tanh: tf.Tensor         # (B, n) tanh(LN_c(c_t))


class LnLstmGrads(NamedTuple):
  """Per-step gradients of one layer-norm LSTM's layer-norm outputs: summed
  against ``gates_hat`` / ``c_hat`` and alone, its gains' and offsets'."""
  d_sigmoid_args: tf.Tensor  # (B, 4, n) dL/d(gates_hat * gain + offset)
  d_tanh_arg: tf.Tensor      # (B, n) dL/d(c_hat * c_gain + c_offset)


def _normalise(x, epsilon):
  """Layer norm's statistics over the last axis, as in (14)-(15):
  (x_hat, 1 / sqrt(var + eps))."""
  centred = x - tf.reduce_mean(x, -1, keepdims=True)
  rstd = tf.math.rsqrt(tf.reduce_mean(tf.square(centred), -1, keepdims=True)
                       + epsilon)
  return centred * rstd, rstd


def _normalise_grad(d_x_hat, x_hat, rstd):
  """dL/d(input) of ``_normalise`` given dL/d(x_hat)."""
  return rstd * (d_x_hat - tf.reduce_mean(d_x_hat, -1, keepdims=True)
                 - x_hat * tf.reduce_mean(d_x_hat * x_hat, -1, keepdims=True))


def ln_lstm_forward(cell_math, pre, c, gain, offset, c_gain, c_offset,
                    mask=None):
  """One layer-norm LSTM step from its gate pre-activations ``pre`` (B, 4n):
  the hyper LSTM of (12), or the main cell's (14)-(15) with the dropout
  ``mask`` d_t.  -> (h, c, LnLstmSaved)."""
  units = gain.shape[-1]
  gates_hat, gates_rstd = _normalise(tf.reshape(pre, [-1, 4, units]),
                                     cell_math.epsilon)
  sigmoids = tf.sigmoid(gates_hat * gain + offset)
  sigmoid_slope = sigmoids * (1.0 - sigmoids)
  i, sigmoid_j, f, o = tf.unstack(sigmoids, axis=1)
  g = 2.0 * sigmoid_j - 1.0
  if mask is not None:
    g = g * mask
  c = c * f + i * g
  c_hat, c_rstd = _normalise(c, cell_math.epsilon)
  c_tanh = tf.tanh(c_hat * c_gain + c_offset)
  return c_tanh * o, c, LnLstmSaved(gates_hat, gates_rstd, sigmoid_slope, i, g,
                                    f, o, c_hat, c_rstd, c_tanh)


def ln_lstm_backward(saved, dh, dc, c_prev, gain, c_gain, mask=None):
  """The chain rule through ``ln_lstm_forward`` ((12), or (14)-(15)) given
  dL/dh and the carried dL/dc.  -> (dL/d pre (B, 4n), dL/dc of this step,
  LnLstmGrads); dL/d c_prev is that dL/dc times ``saved.f``."""
  d_tanh_arg = dh * saved.o * (1.0 - tf.square(saved.c_tanh))
  dc = dc + _normalise_grad(d_tanh_arg * c_gain, saved.c_hat, saved.c_rstd)
  d_sigmoid_j = (2.0 * dc * saved.i if mask is None
                 else 2.0 * dc * saved.i * mask)
  d_sigmoid_args = tf.stack([dc * saved.g, d_sigmoid_j, dc * c_prev,
                             dh * saved.c_tanh], 1) * saved.sigmoid_slope
  d_pre = tf.reshape(_normalise_grad(d_sigmoid_args * gain, saved.gates_hat,
                                     saved.gates_rstd),
                     [-1, 4 * gain.shape[-1]])
  return d_pre, dc, LnLstmGrads(d_sigmoid_args, d_tanh_arg)


def _forward(cell_math, x_main, x_hyper, states, base_seed, keep_prob):
  """(12)-(15) over all steps -> (final states, saved, inputs) as
  ``forward_loop``."""
  units, hyper_units = cell_math.units, cell_math.hyper_units
  layout = dict(main=LnLstmSaved, hyper=LnLstmSaved, h_part=None,
                alpha_x=None, alpha_h=None, embeddings=None)
  if base_seed is not None:
    layout["mask"] = None
  w = cell_math.weights

  def step(t, inputs, states):
    h, c, hyper_h, hyper_c = states
    stored = {}
    h_part, hw_hyper = tf.split(cell_math.matmul(h, w.w_rec),
                                [4 * units, 4 * hyper_units], 1)
    x_hyper_t = cell_math.to_elementwise_dtype(inputs.x_hyper.read(t))
    hyper_pre = tf.add_n([x_hyper_t, hw_hyper,
                          cell_math.matmul(hyper_h, w.hyper_w_rec)])
    hyper_h, hyper_c, stored["hyper"] = ln_lstm_forward(
        cell_math, hyper_pre, hyper_c, w.hyper_gates_gain, w.hyper_gates_offset,
        w.hyper_c_gain, w.hyper_c_offset)
    factors, stored["embeddings"] = cell_math.factors(hyper_h)
    alpha_x, alpha_h, beta = tf.split(factors, 3, axis=1)
    stored.update(alpha_x=alpha_x, alpha_h=alpha_h, h_part=h_part)
    pre = (alpha_x * cell_math.to_elementwise_dtype(inputs.x_main.read(t))
           + alpha_h * h_part + beta)
    mask = None
    if base_seed is not None:
      mask = stored["mask"] = dropout_mask(cell_math, base_seed, t, keep_prob,
                                           tf.shape(c))
    h, c, stored["main"] = ln_lstm_forward(
        cell_math, pre, c, w.gates_gain, w.gates_offset, w.c_gain, w.c_offset,
        mask)
    return stored, (h, c, hyper_h, hyper_c)

  return forward_loop(cell_math, x_main, x_hyper, states, layout, step)


def _backward(cell_math, saved, inputs, d_out, d_final):
  """The gradients of (12)-(15), from the last step to the first -> (the
  per-step gradients stacked over steps, d_states, d_w_factors)."""
  units = cell_math.units
  layout = dict(d_pre=None, d_hw=None, main=LnLstmGrads, hyper=LnLstmGrads,
                d_embeddings=None)
  has_mask = "mask" in saved
  w = cell_math.weights

  def step(t, d_out_t, carry, accs):
    dh, dc, d_hyper_h, d_hyper_c = carry
    (d_w_factors,) = accs
    transposed = cell_math.transposed   # set by backward_loop
    main, hyper = (tf.nest.map_structure(lambda a: a.read(t), saved[name])
                   for name in ("main", "hyper"))
    h_part, alpha_h, embeddings = (
        saved[name].read(t) for name in ("h_part", "alpha_h", "embeddings"))
    mask = saved["mask"].read(t) if has_mask else None
    c_prev, hyper_c_prev = saved["c"].read(t), saved["hyper_c"].read(t)
    grads = {}
    # (14)-(15): the main layer-norm LSTM.
    d_pre, dc, grads["main"] = ln_lstm_backward(
        main, dh + d_out_t, dc, c_prev, w.gates_gain, w.c_gain, mask)
    grads["d_pre"] = d_pre
    d_factors = tf.concat([
        d_pre * cell_math.to_elementwise_dtype(inputs.x_main.read(t)),
        d_pre * h_part, d_pre], 1)                              # (B, 12H)
    # (13) and (12): the embeddings and the hyper layer-norm LSTM.
    d_hyper_h_here, grads["d_embeddings"], d_w_factors = (
        cell_math.factors_backward(d_factors, embeddings, d_w_factors))
    d_hyper_pre, d_hyper_c, grads["hyper"] = ln_lstm_backward(
        hyper, d_hyper_h + d_hyper_h_here, d_hyper_c, hyper_c_prev,
        w.hyper_gates_gain, w.hyper_c_gain)
    # The recurrent matmuls.
    grads["d_hw"] = tf.concat([d_pre * alpha_h, d_hyper_pre], 1)
    carry = (cell_math.matmul(grads["d_hw"], transposed["w_rec"]),
             dc * main.f,
             cell_math.matmul(d_hyper_pre, transposed["hyper_w_rec"]),
             d_hyper_c * hyper.f)
    return grads, carry, (d_w_factors,)

  d_w_factors = tf.zeros(tf.shape(w.w_factors), cell_math.elementwise_dtype)
  grads, d_states, (d_w_factors,) = backward_loop(
      cell_math, d_out, d_final, layout, [d_w_factors], step)
  return grads, d_states, d_w_factors


def _ln_lstm_param_grads(grads, saved, gain, c_gain, prefix):
  """One layer-norm LSTM's gain and offset gradients, summed over steps and
  rows: {LoopWeights field (``prefix`` + "gates_gain", ...): gradient}."""
  return {prefix + "gates_gain": colsum(
              grads.d_sigmoid_args * saved.gates_hat.stack(), gain.shape),
          prefix + "gates_offset": colsum(grads.d_sigmoid_args, gain.shape),
          prefix + "c_gain": colsum(grads.d_tanh_arg * saved.c_hat.stack(),
                                    c_gain.shape),
          prefix + "c_offset": colsum(grads.d_tanh_arg, c_gain.shape)}


def _gradients(cell_math, saved, inputs, d_outputs, d_finals):
  """The TensorFlow-op path's backward -> (d_x_main, d_x_hyper, d_states,
  LoopWeights of gradients)."""
  grads, d_states, d_w_factors = _backward(cell_math, saved, inputs,
                                           d_outputs, d_finals)
  units, w = cell_math.units, cell_math.weights
  d_x_main = grads["d_pre"] * saved["alpha_x"].stack()
  d_b_factors = tf.concat([tf.zeros([8 * units], cell_math.elementwise_dtype),
                           colsum(grads["d_pre"], [4 * units])], 0)
  d_weights = LoopWeights(
      w_factors=d_w_factors, b_factors=d_b_factors,
      **matrix_grads(cell_math, saved, grads["d_hw"], grads["d_embeddings"]),
      **_ln_lstm_param_grads(grads["main"], saved["main"], w.gates_gain,
                             w.c_gain, prefix=""),
      **_ln_lstm_param_grads(grads["hyper"], saved["hyper"],
                             w.hyper_gates_gain, w.hyper_c_gain,
                             prefix="hyper_"))
  return d_x_main, grads["d_hw"][..., 4 * units:], d_states, d_weights


TF_OPS = RecurrenceImpl(_forward, _gradients)


def run_hyper(cell, xw, states, base_seed=None, impl=TF_OPS):
  """(12)-(15) over a sequence: ``cell`` (a built HyperLSTMCell) over
  projected inputs xw (B, T, 4H + 4Nh) from ``states`` [h, c, hyper_h,
  hyper_c]; ``base_seed`` (2,) int32 or None (no recurrent dropout);
  ``impl``: TF_OPS or the C++ kernels' FUSED (model/fast/hyper_fused.py).
  Returns (outputs (B, T, H), final states)."""
  units = cell.units
  cell_math = CellMath(cell, xw.dtype)
  keep_prob = cell.dropout_keep_prob
  x_main, x_hyper = tf.split(tf.transpose(xw, (1, 0, 2)), [4 * units, -1], 2)
  state_dtypes = [s.dtype for s in states]

  @tf.custom_gradient
  def recurrence(x_main, x_hyper, *args):
    """args: the 4 initial states, then the LoopWeights."""
    cell_math.bind(args[4:])
    finals, saved, inputs = impl.forward(
        cell_math, x_main, x_hyper,
        [cell_math.to_elementwise_dtype(s) for s in args[:4]], base_seed,
        keep_prob)
    outputs = saved["h"].stack()[1:]

    def grad(d_outputs, *d_finals):
      zeros = lambda x: tf.zeros(tf.shape(x), cell_math.elementwise_dtype)
      d_outputs = (zeros(outputs) if d_outputs is None
                   else cell_math.to_elementwise_dtype(d_outputs))
      d_finals = [zeros(f) if d is None else cell_math.to_elementwise_dtype(d)
                  for d, f in zip(d_finals, finals)]
      d_x_main, d_x_hyper, d_states, d_weights = impl.gradients(
          cell_math, saved, inputs, d_outputs, d_finals)
      return ([tf.cast(d_x_main, x_main.dtype),
               tf.cast(d_x_hyper, x_hyper.dtype)]
              + [tf.cast(d, dt) for d, dt in zip(d_states, state_dtypes)]
              + [tf.cast(d, w.dtype) for d, w in zip(d_weights, args[4:])])

    return tuple([tf.cast(outputs, xw.dtype)] + [
        tf.cast(f, dt) for f, dt in zip(finals, state_dtypes)]), grad

  result = recurrence(x_main, x_hyper, *states, *cell_math.loop_weights(cell))
  return tf.transpose(result[0], (1, 0, 2)), list(result[1:])
