"""The stroke decoder p(x|z) and its mixture-density head (method.md §2).

``StrokeDecoder(hps)``: initial state tanh(Linear(z)) split into the cell's state
parts; per-step input concat(stroke-5 row, z); the RNN cell of ``hps.dec_model``
(model/networks/cells.py); optional input / output dropout; output head
Linear(H -> 3 + 6M).

Speed: the input-side gate projection of the whole sequence is computed before the
recurrence, and it is split as ``strokes5 @ W[:5] + z @ W[5:]`` so the z part is one
(B, D) matmul per sequence instead of T of them.  The recurrence is a tf.while_loop
over the projected inputs (``recurrence.run_cell``; for the HyperLSTM with a
hand-written backward, model/fast/hyper_recurrence.py) with stateless per-step dropout
masks (jit-safe).
"""
import collections

import keras
from keras import ops

from model.networks import cells
from model.networks import recurrence
from model.networks.encoder import he_normal_fan_in

MixtureParams = collections.namedtuple(
    "MixtureParams",
    ["pen_logits", "log_pi", "mu_x", "mu_y", "sigma_x", "sigma_y", "rho",
     "log_pen", "log_sigma_x", "log_sigma_y"])
MixtureParams.__doc__ = """The decoder output split per method.md §2.

pen_logits (..., 3) raw; log_pen its log-softmax; log_pi (..., M) log-softmax of
the mixture weights; mu_x, mu_y; sigma_x = exp, sigma_y = exp (log_sigma_* their
logs, for a stable loss); rho = tanh."""


def split_params(raw):
  """method.md (16): the raw head output (..., 3 + 6M) -> MixtureParams,
  in the order [pen (3) | pi | mu_x | mu_y | sigma_x | sigma_y | rho]; each
  mixture field (..., M), the pen fields (..., 3)."""
  num_mix = (raw.shape[-1] - 3) // 6
  pen_logits = raw[..., :3]
  pi, mu_x, mu_y, log_sx, log_sy, rho = [
      raw[..., 3 + k * num_mix:3 + (k + 1) * num_mix] for k in range(6)]
  return MixtureParams(
      pen_logits=pen_logits, log_pi=ops.log_softmax(pi, axis=-1),
      mu_x=mu_x, mu_y=mu_y, sigma_x=ops.exp(log_sx), sigma_y=ops.exp(log_sy),
      rho=ops.tanh(rho), log_pen=ops.log_softmax(pen_logits, axis=-1),
      log_sigma_x=log_sx, log_sigma_y=log_sy)


def head_dtype(dtype):
  """The mixture head's dtype: float32 under a mixed-precision policy (its exp /
  log-softmax outputs feed the loss; model/precision.py), else ``dtype``."""
  policy = keras.mixed_precision.global_policy() if dtype is None else \
      keras.dtype_policies.get(dtype)
  return "float32" if policy.compute_dtype in ("float16", "bfloat16") else dtype


def dropout_if(x, enabled, keep_prob, training, seed_generator):
  """Inverted dropout with keep probability ``keep_prob`` when enabled and
  training; x of any shape, returned in its shape."""
  if not (enabled and training) or keep_prob >= 1.0:
    return x
  return keras.random.dropout(x, 1.0 - keep_prob, seed=seed_generator)


class StrokeDecoder(keras.layers.Layer):
  """Stroke decoder; see the module docstring."""

  def __init__(self, hps, seed=None, **kwargs):
    super().__init__(**kwargs)
    self.hps = hps
    self.num_mix = hps.num_output_mixture
    self.cell = cells.make_cell(hps, dtype=kwargs.get("dtype"))
    # Both dense layers as the release: kernel std sqrt(2 / fan_in), bias 0.
    self.init_dense = keras.layers.Dense(
        sum(self.cell.state_size), activation="tanh",
        kernel_initializer=he_normal_fan_in(),
        name="init_state", dtype=kwargs.get("dtype"))
    self.out_dense = keras.layers.Dense(3 + 6 * self.num_mix, name="output",
                                        kernel_initializer=he_normal_fan_in(),
                                        dtype=head_dtype(kwargs.get("dtype")))
    self.seed_generator = keras.random.SeedGenerator(seed)

  def build(self, inputs5_shape=None, z_shape=None):
    z_size = self.hps.z_size
    self.cell.build((None, 5 + z_size))
    self.init_dense.build((None, z_size))
    self.out_dense.build((None, self.hps.dec_rnn_size))

  def initial_state(self, z):
    """method.md (10): state_0 = tanh(W_0 z + b_0) split into the cell's state
    parts; z (B, D) -> list of (B, n) tensors, n the cell's state_size."""
    flat = self.init_dense(z)
    sizes = self.cell.state_size
    return list(ops.split(flat, [sum(sizes[:k + 1]) for k in range(len(sizes) - 1)],
                          axis=-1))

  def _input_dropout(self, x, training):
    hps = self.hps
    return dropout_if(x, hps.use_input_dropout, hps.input_dropout_prob, training,
                      self.seed_generator)

  def project(self, inputs5, z, training=False):
    """Input-side gate pre-activations of the inputs u_t = [S_{t-1}; z] of
    method.md (11): inputs5 (B, T, 5) and z (B, D) -> (B, T, F), F the cell's
    gate width."""
    if self.hps.use_input_dropout and training:
      steps = ops.shape(inputs5)[1]
      z_seq = ops.repeat(ops.expand_dims(z, 1), steps, axis=1)
      x = self._input_dropout(ops.concatenate([inputs5, z_seq], -1), training)
      return self.cell.project_inputs(x)
    return self.cell.project_split(inputs5, z)

  def _head(self, h, training):
    hps = self.hps
    h = dropout_if(h, hps.use_output_dropout, hps.output_dropout_prob, training,
                   self.seed_generator)
    return self.out_dense(h)

  def call(self, inputs5, z, training=False):
    """Teacher-forced decoding (method.md (10)-(15)): inputs5 (B, T, 5),
    z (B, D) -> raw head output (B, T, 3 + 6M) (split by split_params)."""
    states = self.initial_state(z)
    xw = self.project(inputs5, z, training)
    outputs, _ = recurrence.run_cell(self.cell, xw, states,
                                     training=bool(training))
    return self._head(outputs, training)

  def step(self, x5, z, states, training=False):
    """One decoding step (sampling): x5 (B, 5), z (B, D), states (the cell's,
    each (B, n)) -> (raw (B, 3 + 6M), new states)."""
    xw = self.project(ops.expand_dims(x5, 1), z, training)[:, 0]
    h, new_states = self.cell.recurrent_step(xw, list(states),
                                             training=bool(training))
    return self._head(h, training), new_states

  split_params = staticmethod(split_params)
