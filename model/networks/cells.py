"""Decoder RNN cells with fused gate matmuls (method.md §2, "Stroke decoder").

Three Keras 3 cells, written for speed:

* ``LSTMCell``          vanilla LSTM, block-orthogonal recurrent init, forget bias 1.
* ``LayerNormLSTMCell`` the same with layer norm of each gate's pre-activation and
                        of the cell state (no gate bias: the norm's offset is it).
* ``HyperLSTMCell``     Ha et al. 2016 as used by sketch-rnn: a small layer-norm
                        LSTM reads concat(x, h) and emits embeddings that scale, per
                        unit, the input and recurrent contributions of each gate of
                        the main layer-norm LSTM and add a bias to the recurrent ones.

All cells use recurrent dropout on the candidate g "without memory loss" (keep
probability ``dropout_keep_prob``, a new mask every step) when enabled and training.

Gate layout: every fused pre-activation is ``[i | j | f | o]`` (input gate, candidate,
forget gate, output gate), H columns each.  The input-side projection is a separate
method, ``project_inputs(x)``, that works on a whole sequence (B, T, in) at once; the
recurrence (model/networks/recurrence.py) then only does ``recurrent_step(xw, states)`` =
``step_from_hw(xw, h @ w_rec, states)``.  ``call(x, states)`` (what
``keras.layers.RNN`` uses) is exactly ``recurrent_step(project_inputs(x), states)``, so
training and one-step sampling share weights and arithmetic.

States (lists of tensors, ``state_size`` is a list for ``keras.layers.RNN``):
LSTM / layer norm: ``[h, c]``;  HyperLSTM: ``[h, c, hyper_h, hyper_c]``.
The HyperLSTM stores the main and hyper weights fused: ``w_in`` (in, 4H + 4Nh) holds
x->main gates and x->hyper gates, ``w_rec`` (H, 4H + 4Nh) holds h->main gates and
h->hyper gates (the hyper LSTM reads concat(x, h)), so one matmul per input.
"""
import keras
import numpy as np
import tensorflow as tf
from keras import ops

LN_EPSILON = 1e-3   # sketch-rnn's layer norm epsilon


class FusedInitializer(keras.initializers.Initializer):
  """Concatenates the draws of several initializers along ``axis``."""

  def __init__(self, parts, axis=-1):
    # [(initializer or its name, size along axis), ...]
    self.parts = [(keras.initializers.get(init), n) for init, n in parts]
    self.axis = axis

  def __call__(self, shape, dtype=None):
    shape, axis = list(shape), self.axis % len(shape)
    assert sum(n for _, n in self.parts) == shape[axis], (shape, self.parts)
    draws = []
    for init, n in self.parts:
      part = list(shape)
      part[axis] = n
      draws.append(init(tuple(part), dtype=dtype))
    return ops.concatenate(draws, axis=axis)


def block_orthogonal(rows, num_blocks):
  """sketch-rnn's lstm_ortho_initializer: each (rows, rows) gate block orthogonal."""
  return FusedInitializer(
      [(keras.initializers.Orthogonal(), rows) for _ in range(num_blocks)])


def glorot_uniform_for(fan_in, fan_out):
  """Glorot-uniform limits of a (fan_in, fan_out) matrix, for a slice of it."""
  limit = float(np.sqrt(6.0 / (fan_in + fan_out)))
  return keras.initializers.RandomUniform(-limit, limit)


def layer_norm(x, gamma, beta, epsilon=LN_EPSILON):
  """Layer normalisation over the last axis (Ba et al. 2016), the LN of
  method.md (14)-(15): x (..., n), gamma / beta (n,) -> (..., n).

  float16 / bfloat16 inputs (mixed precision) are normalised in float32 and
  the result cast back."""
  low = keras.backend.standardize_dtype(x.dtype) in ("float16", "bfloat16")
  if low:
    dtype = x.dtype
    x, gamma, beta = (ops.cast(t, "float32") for t in (x, gamma, beta))
  mean = ops.mean(x, axis=-1, keepdims=True)
  centred = x - mean
  var = ops.mean(ops.square(centred), axis=-1, keepdims=True)
  out = centred * ops.rsqrt(var + epsilon) * gamma + beta
  return ops.cast(out, dtype) if low else out


def layer_norm_gates(pre, gamma, beta, num_gates=4):
  """Layer norm of each gate's pre-activation separately: (B, G*H) -> (B, G*H).

  ``gamma``/``beta`` have shape (G, H) (sketch-rnn's layer_norm_all).
  """
  units = gamma.shape[-1]
  shaped = ops.reshape(pre, (-1, num_gates, units))
  return ops.reshape(layer_norm(shaped, gamma, beta), (-1, num_gates * units))


def lstm_update(gates, c, forget_bias, g_dropout=None):
  """One LSTM update from fused gates [i|j|f|o] (B, 4H), c (B, H): the
  cell-state part of method.md (15).

  Returns (new_c, o_gate).  ``g_dropout`` (optional) is applied to tanh(j): the
  recurrent dropout without memory loss of Semeniuta et al. 2016.
  """
  i, j, f, o = ops.split(gates, 4, axis=-1)
  g = ops.tanh(j)
  if g_dropout is not None:
    g = g_dropout(g)
  new_c = c * ops.sigmoid(f + forget_bias) + ops.sigmoid(i) * g
  return new_c, ops.sigmoid(o)


def stateless_dropout(x, keep_prob, seed):
  """Inverted dropout with a (2,) int seed tensor (jit- and while_loop-safe)."""
  keep = tf.random.stateless_uniform(tf.shape(x), seed, dtype=x.dtype) < keep_prob
  return ops.where(keep, x / ops.cast(keep_prob, x.dtype), ops.zeros_like(x))


class _RecurrentCell(keras.layers.Layer):
  """Shared plumbing: dropout, the keras RNN ``call``, zero initial state."""

  ln_epsilon = LN_EPSILON

  def __init__(self, units, forget_bias=1.0, use_recurrent_dropout=False,
               dropout_keep_prob=0.9, seed=None, recurrence="auto", **kwargs):
    super().__init__(**kwargs)
    # How model/networks/recurrence.py runs this cell over a sequence.
    self.recurrence = recurrence
    self.units = int(units)
    self.forget_bias = float(forget_bias)
    self.use_recurrent_dropout = bool(use_recurrent_dropout)
    self.dropout_keep_prob = float(dropout_keep_prob)
    self.seed_generator = keras.random.SeedGenerator(seed)

  @property
  def output_size(self):
    return self.units

  def uses_dropout(self, training):
    return bool(training) and self.use_recurrent_dropout and \
        self.dropout_keep_prob < 1.0

  def _g_dropout(self, training, seed):
    """The dropout applied to the candidate g, or None when inactive.

    ``seed``: a (2,) int tensor (stateless, used inside our own loops) or None
    (draw from this cell's SeedGenerator: the keras.layers.RNN path).
    """
    if not self.uses_dropout(training):
      return None
    keep = self.dropout_keep_prob
    if seed is None:
      return lambda g: keras.random.dropout(g, 1.0 - keep,
                                            seed=self.seed_generator)
    return lambda g: stateless_dropout(g, keep, seed)

  def get_initial_state(self, batch_size=None):
    return [ops.zeros((batch_size, n), dtype=self.compute_dtype)
            for n in self.state_size]

  def input_bias(self):
    """The gate bias folded into the input projection (None: no such bias)."""
    return None

  def project_inputs(self, x):
    """Input-side gate pre-activations for (..., in) inputs: x @ w_in (+ bias)."""
    out = ops.matmul(x, self.w_in)
    bias = self.input_bias()
    return out if bias is None else out + bias

  def project_split(self, x_seq, z):
    """The input-side part of method.md (11)-(14) for u_t = [S_{t-1}; y]:
    ``project_inputs(concat(x_seq[:, t], z))`` for all t, computed as
    x_seq @ w_in[:n] + z @ w_in[n:]: the per-sequence z part once, not T times.

    x_seq (B, T, n), z (B, D) -> (B, T, F).
    """
    n = x_seq.shape[-1]
    zw = ops.matmul(z, self.w_in[n:])
    bias = self.input_bias()
    if bias is not None:
      zw = zw + bias
    return ops.matmul(x_seq, self.w_in[:n]) + ops.expand_dims(zw, 1)

  def recurrent_step(self, xw, states, training=False, seed=None):
    """One step from projected inputs xw (B, F): returns (h, new_states).

    ``seed``: None (dropout masks from the cell's SeedGenerator) or a (2,) int
    tensor (stateless masks; used by recurrence.run_cell inside its loop).
    """
    hw = ops.matmul(states[0], self.w_rec)
    return self.step_from_hw(xw, hw, list(states), training=training, seed=seed)

  def _add_layer_norm_weights(self, units):
    """Gains/offsets of the layer norms on the 4 gates and on the cell state."""
    self.ln_gates_gamma = self.add_weight(name="ln_gates_gamma",
                                          shape=(4, units), initializer="ones")
    self.ln_gates_beta = self.add_weight(name="ln_gates_beta",
                                         shape=(4, units), initializer="zeros")
    self.ln_c_gamma = self.add_weight(name="ln_c_gamma", shape=(units,),
                                      initializer="ones")
    self.ln_c_beta = self.add_weight(name="ln_c_beta", shape=(units,),
                                     initializer="zeros")

  def call(self, inputs, states, training=None):
    return self.recurrent_step(self.project_inputs(inputs), list(states),
                               training=training)


class _TwoStateCell(_RecurrentCell):
  """An LSTM with state [h, c] and fused gate weights w_in (in, 4H), w_rec (H, 4H)."""

  @property
  def state_size(self):
    return [self.units, self.units]

  def _add_fused_weights(self, input_shape):
    n_in, units = int(input_shape[-1]), self.units
    self.w_in = self.add_weight(name="w_in", shape=(n_in, 4 * units),
                                initializer="glorot_uniform")
    self.w_rec = self.add_weight(name="w_rec", shape=(units, 4 * units),
                                 initializer=block_orthogonal(units, 4))
    return units


class LSTMCell(_TwoStateCell):
  """Vanilla LSTM (sketch-rnn LSTMCell); state [h, c]."""

  def build(self, input_shape):
    units = self._add_fused_weights(input_shape)
    self.bias = self.add_weight(name="bias", shape=(4 * units,),
                                initializer="zeros")

  def input_bias(self):
    return self.bias

  def step_from_hw(self, xw, hw, states, training=False, seed=None):
    h, c = states
    gates = xw + hw
    new_c, o = lstm_update(gates, c, self.forget_bias,
                           self._g_dropout(training, seed))
    new_h = ops.tanh(new_c) * o
    return new_h, [new_h, new_c]


class LayerNormLSTMCell(_TwoStateCell):
  """Layer-norm LSTM (sketch-rnn LayerNormLSTMCell); state [h, c]."""

  def build(self, input_shape):
    units = self._add_fused_weights(input_shape)
    self._add_layer_norm_weights(units)

  def step_from_hw(self, xw, hw, states, training=False, seed=None):
    h, c = states
    gates = layer_norm_gates(xw + hw,
                             self.ln_gates_gamma, self.ln_gates_beta)
    new_c, o = lstm_update(gates, c, self.forget_bias,
                           self._g_dropout(training, seed))
    new_h = ops.tanh(layer_norm(new_c, self.ln_c_gamma, self.ln_c_beta)) * o
    return new_h, [new_h, new_c]


class HyperLSTMCell(_RecurrentCell):
  """HyperLSTM (Ha et al. 2016; sketch-rnn HyperLSTMCell); state [h, c, hh, hc].

  The hyper cell is a layer-norm LSTM of ``hyper_units`` reading concat(x, h)
  (no recurrent dropout, as sketch-rnn's default).  Its output feeds 12 embeddings
  of size E: 8 "zw" (bias 1, for the scalings of the x and h contributions of
  i, j, f, o) and 4 "zb" (for the biases added to the h contributions).  Each
  embedding maps linearly to H per-unit factors (sketch-rnn's hyper_norm).
  """

  def __init__(self, units, hyper_units=256, hyper_embedding=32, **kwargs):
    super().__init__(units, **kwargs)
    self.hyper_units = int(hyper_units)
    self.hyper_embedding = int(hyper_embedding)

  @property
  def state_size(self):
    return [self.units, self.units, self.hyper_units, self.hyper_units]

  def build(self, input_shape):
    n_in, units = int(input_shape[-1]), self.units
    nh, emb = self.hyper_units, self.hyper_embedding
    hyper_w = glorot_uniform_for(n_in + units, 4 * nh)  # hyper reads [x, h]
    self.w_in = self.add_weight(
        name="w_in", shape=(n_in, 4 * units + 4 * nh),
        initializer=FusedInitializer([(glorot_uniform_for(n_in, 4 * units),
                                       4 * units), (hyper_w, 4 * nh)]))
    self.w_rec = self.add_weight(
        name="w_rec", shape=(units, 4 * units + 4 * nh),
        initializer=FusedInitializer([(block_orthogonal(units, 4), 4 * units),
                                      (hyper_w, 4 * nh)]))
    self.bias = self.add_weight(name="bias", shape=(4, units),
                                initializer="zeros")
    self._add_layer_norm_weights(units)
    # The hyper layer-norm LSTM's own recurrent weights and norms.
    self.hyper_w_rec = self.add_weight(name="hyper_w_rec", shape=(nh, 4 * nh),
                                       initializer=block_orthogonal(nh, 4))
    self.hyper_ln_gates_gamma = self.add_weight(
        name="hyper_ln_gates_gamma", shape=(4, nh), initializer="ones")
    self.hyper_ln_gates_beta = self.add_weight(
        name="hyper_ln_gates_beta", shape=(4, nh), initializer="zeros")
    self.hyper_ln_c_gamma = self.add_weight(name="hyper_ln_c_gamma",
                                            shape=(nh,), initializer="ones")
    self.hyper_ln_c_beta = self.add_weight(name="hyper_ln_c_beta",
                                           shape=(nh,), initializer="zeros")
    # Embeddings, gate-major: 8 zw (weights 0, bias 1) then 4 zb (gaussian 0.01,
    # no bias); (12, Nh, E) so that one broadcast batch matmul gives (12, B, E).
    self.w_embed = self.add_weight(
        name="w_embed", shape=(12, nh, emb),
        initializer=FusedInitializer(
            [("zeros", 8), (keras.initializers.RandomNormal(stddev=0.01), 4)],
            axis=0))
    self.b_embed = self.add_weight(name="b_embed", shape=(8, 1, emb),
                                   initializer="ones")
    # Per-gate linear maps embedding -> H factors (cooijmans' 0.1 init).
    self.w_alpha = self.add_weight(
        name="w_alpha", shape=(8, emb, units),
        initializer=keras.initializers.Constant(0.1 / emb))
    self.w_beta = self.add_weight(name="w_beta", shape=(4, emb, units),
                                  initializer="zeros")

  def hyper_factors(self, hyper_h):
    """sketch-rnn's hyper_norm factors from the hyper output, method.md (13):
    hyper_h (B, Nh).

    Returns (alpha_x (B,4,H), alpha_h (B,4,H), beta_h (B,4,H)).
    """
    z = ops.matmul(ops.expand_dims(hyper_h, 0), self.w_embed)   # (12, B, E)
    alpha = ops.matmul(z[:8] + self.b_embed, self.w_alpha)       # (8, B, H)
    beta = ops.transpose(ops.matmul(z[8:], self.w_beta), (1, 0, 2))
    alpha = ops.transpose(alpha, (1, 0, 2))                      # (B, 8, H)
    return alpha[:, :4], alpha[:, 4:], beta

  def hyper_step(self, hyper_pre, hyper_h, hyper_c):
    """The hyper layer-norm LSTM, method.md (12): pre-activations from x and
    h (B, 4Nh), hyper_h / hyper_c (B, Nh) -> (new hyper_h, new hyper_c)."""
    gates = layer_norm_gates(hyper_pre + ops.matmul(hyper_h, self.hyper_w_rec),
                             self.hyper_ln_gates_gamma, self.hyper_ln_gates_beta)
    new_c, o = lstm_update(gates, hyper_c, self.forget_bias)
    new_h = ops.tanh(layer_norm(new_c, self.hyper_ln_c_gamma,
                                self.hyper_ln_c_beta)) * o
    return new_h, new_c

  def step_from_hw(self, xw, hw, states, training=False, seed=None):
    """One HyperLSTM step, method.md (12)-(15): xw = x @ w_in and hw = h @
    w_rec, both (B, 4H + 4Nh); states [h, c, hyper_h, hyper_c].
    Returns (h (B, H), new states)."""
    h, c, hyper_h, hyper_c = states
    units = self.units
    new_hyper_h, new_hyper_c = self.hyper_step(
        xw[:, 4 * units:] + hw[:, 4 * units:], hyper_h, hyper_c)
    alpha_x, alpha_h, beta_h = self.hyper_factors(new_hyper_h)
    x_part = ops.reshape(xw[:, :4 * units], (-1, 4, units))
    h_part = ops.reshape(hw[:, :4 * units], (-1, 4, units))
    pre = alpha_x * x_part + alpha_h * h_part + beta_h + self.bias
    gates = ops.reshape(layer_norm(pre, self.ln_gates_gamma, self.ln_gates_beta),
                        (-1, 4 * units))
    new_c, o = lstm_update(gates, c, self.forget_bias,
                           self._g_dropout(training, seed))
    new_h = ops.tanh(layer_norm(new_c, self.ln_c_gamma, self.ln_c_beta)) * o
    return new_h, [new_h, new_c, new_hyper_h, new_hyper_c]


def make_cell(hps, dtype=None):
  """The decoder cell named by ``hps.dec_model`` (lstm | layer_norm | hyper)."""
  common = dict(forget_bias=1.0,
                use_recurrent_dropout=hps.use_recurrent_dropout,
                dropout_keep_prob=hps.recurrent_dropout_prob,
                recurrence=hps.recurrence, dtype=dtype)
  if hps.dec_model == "lstm":
    return LSTMCell(hps.dec_rnn_size, name="lstm_cell", **common)
  if hps.dec_model == "layer_norm":
    return LayerNormLSTMCell(hps.dec_rnn_size, name="layer_norm_cell", **common)
  if hps.dec_model == "hyper":
    return HyperLSTMCell(hps.dec_rnn_size, hyper_units=hps.hyper_num_units,
                         hyper_embedding=hps.hyper_embedding_size,
                         name="hyper_cell", **common)
  raise ValueError(f"unknown dec_model {hps.dec_model!r}")

