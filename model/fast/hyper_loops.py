"""What the two paths of the HyperLSTM recurrence share: the weights as the
loops use them, the hyper embeddings (13), the dropout masks, and the forward
and backward ``tf.while_loop``s.

A path (``RecurrenceImpl``) runs inside ``run_hyper``'s one
``tf.custom_gradient`` (model/fast/hyper_recurrence.py): its forward stores
per step in TensorArrays what its backward needs; its backward walks the
steps in reverse and hands back the gradients of the inputs, the initial
states and the ``LoopWeights``.  The TensorFlow-op path is
model/fast/hyper_recurrence.py's ``TF_OPS``, the C++ one
model/fast/hyper_fused.py's ``FUSED``.

Mixed precision: matmuls in the inputs' dtype (``CellMath.matmul_dtype``),
everything elementwise and the states between steps in float32
(``CellMath.elementwise_dtype``).
"""
from typing import Callable, NamedTuple

import tensorflow as tf

_LOW = (tf.float16, tf.bfloat16)
# Folded into the gates' layer-norm gain and offset, so that one sigmoid serves
# all four gates: sigmoid(2 a_j) gives tanh(a_j) = 2 s - 1, and the forget
# gate gets sketch-rnn's forget bias 1.
GATE_SCALE = (1.0, 2.0, 1.0, 1.0)
GATE_SHIFT = (0.0, 0.0, 1.0, 0.0)
STATE_NAMES = ("h", "c", "hyper_h", "hyper_c")


class LoopWeights(NamedTuple):
  """A HyperLSTMCell's weights in the layouts and dtypes the loops use; the
  custom gradient's weight inputs, and their gradients, in this order."""
  w_rec: tf.Tensor               # (H, 4H + 4Nh): h -> main gates | hyper gates
  hyper_w_rec: tf.Tensor         # (Nh, 4Nh): hyper h -> hyper gates
  gates_gain: tf.Tensor          # (4, H) the gates' layer norms, GATE_SCALE
  gates_offset: tf.Tensor        # (4, H)   and GATE_SHIFT folded in
  c_gain: tf.Tensor              # (H,) the cell state's layer norm
  c_offset: tf.Tensor            # (H,)
  hyper_gates_gain: tf.Tensor    # (4, Nh) as above, of the hyper LSTM
  hyper_gates_offset: tf.Tensor  # (4, Nh)
  hyper_c_gain: tf.Tensor        # (Nh,)
  hyper_c_offset: tf.Tensor      # (Nh,)
  w_embed: tf.Tensor             # (Nh, 12E): the 12 embeddings side by side
  b_embed: tf.Tensor             # (12E,): b_embed for the 8 alphas, 0 for beta
  w_factors: tf.Tensor           # (12, E, H): [w_alpha; w_beta]
  b_factors: tf.Tensor           # (12H,): 0 for the alphas, the gate bias b_g


class StepInputs(NamedTuple):
  """The projected inputs x @ w_in, one TensorArray entry per step."""
  x_main: tf.TensorArray     # (B, 4H) the main gates' input part
  x_hyper: tf.TensorArray    # (B, 4Nh) the hyper gates' input part


class RecurrenceImpl(NamedTuple):
  """One way to run the recurrence inside ``run_hyper``'s custom gradient."""
  # (cell_math, x_main, x_hyper, states, base_seed, keep_prob) -> (final
  # states, saved TensorArrays incl. "h", StepInputs): a forward_loop.
  forward: Callable
  # (cell_math, saved, inputs, d_outputs, d_finals) -> (d_x_main,
  # d_x_hyper, d_states, LoopWeights of gradients): a backward_loop and the
  # weight gradients from its per-step results.
  gradients: Callable


def _elementwise_dtype_for(matmul_dtype):
  """float32 for 16-bit matmuls, else the matmuls' own dtype."""
  matmul_dtype = tf.as_dtype(matmul_dtype)
  return tf.float32 if matmul_dtype in _LOW else matmul_dtype


def _gain_offset(gamma, beta):
  """Layer-norm gain / offset (4, n) of the 4 gates with GATE_SCALE and
  GATE_SHIFT folded in: the sigmoid's argument is x_hat * gain + offset."""
  scale = tf.constant(GATE_SCALE, gamma.dtype)[:, None]
  shift = tf.constant(GATE_SHIFT, gamma.dtype)[:, None]
  return gamma * scale, beta * scale + shift


class CellMath:
  """A HyperLSTMCell's sizes, dtypes and (once bound) ``LoopWeights``, and
  the arithmetic both paths share: the casts, the matmuls and the hyper
  embeddings (13) with their gradient."""

  def __init__(self, cell, matmul_dtype):
    self.units, self.hyper_units, self.embedding = (
        cell.units, cell.hyper_units, cell.hyper_embedding)
    self.matmul_dtype = tf.as_dtype(matmul_dtype)
    self.elementwise_dtype = _elementwise_dtype_for(matmul_dtype)
    self.epsilon = cell.ln_epsilon
    self.weights = self.transposed = None

  def loop_weights(self, cell):
    """``cell``'s variables as ``LoopWeights``, passed through the custom
    gradient (autodiff maps their gradients back to the variables)."""
    units, hyper_units, emb = self.units, self.hyper_units, self.embedding
    to_matmul = lambda v: tf.cast(v, self.matmul_dtype)
    to_elementwise = lambda v: tf.cast(v, self.elementwise_dtype)
    gates_gain, gates_offset = _gain_offset(
        to_elementwise(cell.ln_gates_gamma), to_elementwise(cell.ln_gates_beta))
    hyper_gates_gain, hyper_gates_offset = _gain_offset(
        to_elementwise(cell.hyper_ln_gates_gamma),
        to_elementwise(cell.hyper_ln_gates_beta))
    w_factors = to_elementwise(tf.concat([cell.w_alpha, cell.w_beta], 0))
    b_factors = tf.concat([tf.zeros([8 * units], self.elementwise_dtype),
                           tf.reshape(to_elementwise(cell.bias), [4 * units])],
                          0)
    w_embed = to_elementwise(cell.w_embed)                      # (12, Nh, E)
    b_embed = tf.concat([to_elementwise(cell.b_embed),
                         tf.zeros([4, 1, emb], self.elementwise_dtype)], 0)
    return LoopWeights(
        to_matmul(cell.w_rec), to_matmul(cell.hyper_w_rec), gates_gain,
        gates_offset, to_elementwise(cell.ln_c_gamma),
        to_elementwise(cell.ln_c_beta), hyper_gates_gain, hyper_gates_offset,
        to_elementwise(cell.hyper_ln_c_gamma),
        to_elementwise(cell.hyper_ln_c_beta),
        w_embed=to_matmul(tf.reshape(tf.transpose(w_embed, (1, 0, 2)),
                                     [hyper_units, 12 * emb])),
        b_embed=tf.reshape(b_embed, [12 * emb]),
        w_factors=to_matmul(w_factors), b_factors=b_factors)

  def bind(self, weights):
    """Computes from now on with ``weights`` (the custom gradient's)."""
    self.weights = LoopWeights(*weights)
    return self

  def to_matmul_dtype(self, x):
    return x if x.dtype == self.matmul_dtype else tf.cast(x, self.matmul_dtype)

  def to_elementwise_dtype(self, x):
    return (x if x.dtype == self.elementwise_dtype
            else tf.cast(x, self.elementwise_dtype))

  def matmul(self, a, b, **kwargs):
    """``tf.matmul`` in the matmul dtype, the result in the elementwise one."""
    return self.to_elementwise_dtype(tf.matmul(
        self.to_matmul_dtype(a), self.to_matmul_dtype(b), **kwargs))

  def embeddings(self, hyper_h):
    """The 12 embeddings E hyper_h + b of (13), gate-major: (12, B, E)."""
    w = self.weights
    return tf.transpose(tf.reshape(self.matmul(hyper_h, w.w_embed) + w.b_embed,
                                   [-1, 12, self.embedding]), (1, 0, 2))

  def factors(self, hyper_h):
    """(13) and the gate bias: -> (factors (B, 12H) = [alpha_x | alpha_h |
    beta + b_g], embeddings (12, B, E))."""
    embeddings = self.embeddings(hyper_h)
    factors = tf.transpose(self.matmul(embeddings, self.weights.w_factors),
                           (1, 0, 2))
    return (tf.reshape(factors, [-1, 12 * self.units]) + self.weights.b_factors,
            embeddings)

  def transpose_for_backward(self):
    """The weights the backward multiplies by on the right, transposed once
    per call (a plain matmul is up to 3x faster than one with transpose_b)."""
    w = self.weights
    self.transposed = dict(
        w_rec=tf.transpose(w.w_rec), hyper_w_rec=tf.transpose(w.hyper_w_rec),
        w_embed=tf.transpose(w.w_embed),
        w_factors=tf.transpose(w.w_factors, (0, 2, 1)))

  def factors_backward(self, d_factors, embeddings, d_w_factors):
    """The gradient of (13) from dL/d factors (B, 12H) -> (dL/d hyper_h,
    dL/d embeddings (B, 12E), d_w_factors plus this step's)."""
    d_factors = tf.transpose(tf.reshape(d_factors, [-1, 12, self.units]),
                             (1, 0, 2))
    return self.factors_backward_gate_major(d_factors, embeddings, d_w_factors)

  def factors_backward_gate_major(self, d_factors, embeddings, d_w_factors):
    """``factors_backward`` from dL/d factors gate-major, (12, B, H)."""
    d_embeddings = tf.reshape(
        tf.transpose(self.matmul(d_factors, self.transposed["w_factors"]),
                     (1, 0, 2)), [-1, 12 * self.embedding])
    d_w_factors = d_w_factors + self.matmul(embeddings, d_factors,
                                            adjoint_a=True)
    return (self.matmul(d_embeddings, self.transposed["w_embed"]),
            d_embeddings, d_w_factors)


def dropout_mask(cell_math, base_seed, t, keep_prob, shape):
  """Step t's recurrent-dropout mask d_t of (15) (0 or 1/keep_prob),
  stateless from (base_seed, t) exactly as ``cell.step_from_hw`` draws it."""
  uniform = tf.random.stateless_uniform(shape, base_seed + tf.stack([0, t]),
                                        dtype=cell_math.matmul_dtype)
  dtype = cell_math.elementwise_dtype
  return tf.where(uniform < keep_prob, tf.constant(1.0 / keep_prob, dtype),
                  tf.constant(0.0, dtype))


def new_arrays(layout, new_array):
  """A TensorArray from ``new_array()`` per entry of ``layout`` ({name: None
  for one tensor per step, or the NamedTuple class of several}), in the same
  structure."""
  return {name: new_array() if kind is None
          else kind(*(new_array() for _ in kind._fields))
          for name, kind in layout.items()}


def forward_loop(cell_math, x_main, x_hyper, states, layout, step):
  """The forward ``tf.while_loop`` both paths share.  ``step(t, inputs,
  states)`` -> (what to store, structured as ``layout`` (``new_arrays``), new
  states).  -> (final states, saved: the stored TensorArrays and, under
  STATE_NAMES, the states (T + 1 entries, the initial ones first), inputs)."""
  steps = tf.shape(x_main)[0]
  array = lambda dt, n=steps: tf.TensorArray(dt, size=n, clear_after_read=False)
  inputs = StepInputs(array(x_main.dtype).unstack(x_main),
                      array(x_hyper.dtype).unstack(x_hyper))
  dtype = cell_math.elementwise_dtype
  saved = {name: array(dtype, steps + 1).write(0, s)
           for name, s in zip(STATE_NAMES, states)}
  saved.update(new_arrays(layout, lambda: array(dtype)))

  def body(t, states, saved):
    stored, new_states = step(t, inputs, states)
    new = {name: tf.nest.map_structure(lambda a, v: a.write(t, v),
                                       saved[name], value)
           for name, value in stored.items()}
    new.update({name: saved[name].write(t + 1, s)
                for name, s in zip(STATE_NAMES, new_states)})
    return t + 1, tuple(new_states), new

  _, final, saved = tf.while_loop(lambda t, *_: t < steps, body,
                                  (tf.constant(0), tuple(states), saved),
                                  maximum_iterations=steps)
  return list(final), saved, inputs


def backward_loop(cell_math, d_out, d_final, layout, accs, step):
  """The backward ``tf.while_loop`` both paths share, from the last step to
  the first: ``step(t, d_out_t, (dh, dc, d_hyper_h, d_hyper_c), accs)`` ->
  (per-step gradients structured as ``layout`` (``new_arrays``), the state
  gradients carried to step t - 1, accs).
  -> (the per-step gradients stacked over steps, d_states, accs)."""
  steps = tf.shape(d_out)[0]
  d_outs = tf.TensorArray(cell_math.elementwise_dtype,
                          size=steps).unstack(d_out)
  cell_math.transpose_for_backward()
  grads = new_arrays(layout, lambda: tf.TensorArray(
      cell_math.elementwise_dtype, size=steps))

  def body(t, carry, accs, grads):
    out, carry, accs = step(t, d_outs.read(t), carry, accs)
    grads = tf.nest.map_structure(lambda a, v: a.write(t, v), grads, out)
    return t - 1, tuple(carry), tuple(accs), grads

  _, d_states, accs, grads = tf.while_loop(
      lambda t, *_: t >= 0, body,
      (steps - 1, tuple(d_final), tuple(accs), grads),
      maximum_iterations=steps)
  return (tf.nest.map_structure(lambda a: a.stack(), grads), list(d_states),
          list(accs))


def colsum(x, shape):
  """Sum of ``x`` over all but its trailing ``len(shape)`` axes, reshaped to
  ``shape`` (a ones-vector matmul: 2x faster than reduce_sum here)."""
  width = int(tf.TensorShape(shape).num_elements())
  rows = tf.reshape(x, [-1, width])
  ones = tf.ones([1, tf.shape(rows)[0]], x.dtype)
  return tf.reshape(tf.matmul(ones, rows), shape)


def _rows(x):
  """(..., n) -> (rows, n)."""
  return tf.reshape(x, [-1, x.shape[-1]])


def matrix_grads(cell_math, saved, d_hw, d_embeddings):
  """The gradients of the recurrent matrices and the embeddings, from all
  steps' rows at once: {LoopWeights field: gradient}."""
  h, hyper_h = saved["h"].stack(), saved["hyper_h"].stack()
  d_hyper_pre = _rows(d_hw[..., 4 * cell_math.units:])
  d_embeddings = _rows(d_embeddings)
  return dict(
      w_rec=cell_math.matmul(_rows(h[:-1]), _rows(d_hw), adjoint_a=True),
      hyper_w_rec=cell_math.matmul(_rows(hyper_h[:-1]), d_hyper_pre,
                                   adjoint_a=True),
      w_embed=cell_math.matmul(_rows(hyper_h[1:]), d_embeddings,
                               adjoint_a=True),
      b_embed=colsum(d_embeddings, [d_embeddings.shape[-1]]))
