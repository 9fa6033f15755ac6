"""Decoder cells (model/networks/cells.py) against NumPy references written here."""
import numpy as np
import keras
import pytest
import tensorflow as tf

import hparams
from model.networks import cells
from model.networks import recurrence
from model.fast.hyper_recurrence import VERIFIED_CELL_DIGEST
from tests.reference_paths import plain_run_cell

B, T, N_IN, H = 3, 6, 7, 8
NH, E = 5, 3


def sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def np_layer_norm(x, gamma, beta, eps=1e-3):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * gamma + beta


def np_gates_norm(pre, gamma, beta):
  """Each of the 4 gates normalised over its own units."""
  return np.concatenate([np_layer_norm(g, gamma[k], beta[k])
                         for k, g in enumerate(np.split(pre, 4, -1))], -1)


def np_lstm_tail(gates, c):
  i, j, f, o = np.split(gates, 4, -1)   # order i, j, f, o; forget bias 1
  new_c = c * sigmoid(f + 1.0) + sigmoid(i) * np.tanh(j)
  return new_c, sigmoid(o)


def np_lstm_step(w, x, h, c):
  new_c, o = np_lstm_tail(x @ w["w_in"] + h @ w["w_rec"] + w["bias"], c)
  return np.tanh(new_c) * o, new_c


def np_ln_lstm_step(w, x, h, c):
  gates = np_gates_norm(x @ w["w_in"] + h @ w["w_rec"], w["ln_gates_gamma"],
                        w["ln_gates_beta"])
  new_c, o = np_lstm_tail(gates, c)
  return np.tanh(np_layer_norm(new_c, w["ln_c_gamma"], w["ln_c_beta"])) * o, new_c


def np_hyper_step(w, x, h, c, hh, hc):
  """sketch-rnn's HyperLSTMCell, one matrix per gate / embedding as in the paper."""
  w_hyp = np.concatenate([w["w_in"][:, 4 * H:], w["w_rec"][:, 4 * H:]], 0)
  hyper_gates = np_gates_norm(np.concatenate([x, h], -1) @ w_hyp
                              + hh @ w["hyper_w_rec"],
                              w["hyper_ln_gates_gamma"], w["hyper_ln_gates_beta"])
  hc_new, o = np_lstm_tail(hyper_gates, hc)
  hh_new = np.tanh(np_layer_norm(hc_new, w["hyper_ln_c_gamma"],
                                 w["hyper_ln_c_beta"])) * o

  def hyper_norm(layer, k, bias_k=None):   # k: 0..3 for x parts, 4..7 for h parts
    zw = hh_new @ w["w_embed"][k] + w["b_embed"][k, 0]
    out = (zw @ w["w_alpha"][k]) * layer
    if bias_k is not None:
      zb = hh_new @ w["w_embed"][8 + bias_k]
      out = out + zb @ w["w_beta"][bias_k]
    return out

  xs = np.split(x @ w["w_in"][:, :4 * H], 4, -1)
  hs = np.split(h @ w["w_rec"][:, :4 * H], 4, -1)
  pre = [hyper_norm(xs[g], g) + hyper_norm(hs[g], 4 + g, g) + w["bias"][g]
         for g in range(4)]
  gates = np_gates_norm(np.concatenate(pre, -1), w["ln_gates_gamma"],
                        w["ln_gates_beta"])
  new_c, o = np_lstm_tail(gates, c)
  new_h = np.tanh(np_layer_norm(new_c, w["ln_c_gamma"], w["ln_c_beta"])) * o
  return new_h, new_c, hh_new, hc_new


NP_STEPS = {"lstm": np_lstm_step, "layer_norm": np_ln_lstm_step,
            "hyper": np_hyper_step}


def make(kind, dtype="float32", **kw):
  if kind == "lstm":
    cell = cells.LSTMCell(H, dtype=dtype, **kw)
  elif kind == "layer_norm":
    cell = cells.LayerNormLSTMCell(H, dtype=dtype, **kw)
  else:
    cell = cells.HyperLSTMCell(H, hyper_units=NH, hyper_embedding=E, dtype=dtype,
                               **kw)
  cell.build((None, N_IN))
  # Randomise every weight (the default inits hide errors: zeros, ones, 0.1/E).
  rng = np.random.default_rng(0)
  for v in cell.weights:
    v.assign(rng.normal(0, 0.5, v.shape).astype(dtype))
  return cell


def weights_of(cell):
  return {v.path.split("/")[-1]: v.numpy().astype(np.float64) for v in cell.weights}


def random_data(kind, rng, dtype="float32"):
  x = rng.normal(size=(B, T, N_IN)).astype(dtype)
  sizes = [H, H] + ([NH, NH] if kind == "hyper" else [])
  states = [rng.normal(0, 0.5, (B, n)).astype(dtype) for n in sizes]
  return x, states


KINDS = ["lstm", "layer_norm", "hyper"]


@pytest.mark.parametrize("kind", KINDS)
def test_cell_matches_numpy_reference(kind):
  cell = make(kind)
  x, states = random_data(kind, np.random.default_rng(1))
  w = weights_of(cell)
  ref = [s.astype(np.float64) for s in states]
  ref_out = []
  for t in range(T):
    ref = list(NP_STEPS[kind](w, x[:, t].astype(np.float64), *ref))
    ref_out.append(ref[0])
  out, final = recurrence.run_cell(cell, cell.project_inputs(x), states)
  np.testing.assert_allclose(out.numpy(), np.stack(ref_out, 1), atol=2e-5)
  for got, want in zip(final, ref):
    np.testing.assert_allclose(got.numpy(), want, atol=2e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_sequence_step_and_keras_rnn_agree(kind):
  cell = make(kind)
  x, states = random_data(kind, np.random.default_rng(2))
  seq, final = recurrence.run_cell(cell, cell.project_inputs(x), states)
  assert seq.shape == (B, T, H)
  assert [int(s.shape[-1]) for s in final] == cell.state_size
  step_states, outs = states, []
  for t in range(T):
    h, step_states = cell(x[:, t], step_states)
    outs.append(h)
  np.testing.assert_allclose(np.stack(outs, 1), seq, atol=1e-5)
  rnn = keras.layers.RNN(cell, return_sequences=True, return_state=True)
  keras_out = rnn(x, initial_state=states)
  np.testing.assert_allclose(keras_out[0], seq, atol=1e-5)
  for got, want in zip(keras_out[1:], final):
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_hyper_gradient_matches_finite_differences():
  """d(loss)/d(every weight, the inputs and the initial states), float64."""
  cell = make("hyper", dtype="float64")
  x, states = random_data("hyper", np.random.default_rng(3), "float64")
  x = tf.Variable(x[:, :3])
  states = [tf.Variable(s) for s in states]
  probe = np.random.default_rng(4).normal(size=(B, 3, H))

  def loss():
    out, final = recurrence.run_cell(cell, cell.project_inputs(x), states)
    return tf.reduce_sum(out * probe) + tf.reduce_sum(final[1] ** 2)

  variables = cell.weights + [x] + states
  with tf.GradientTape() as tape:
    value = loss()
  grads = tape.gradient(value, variables)
  rng = np.random.default_rng(5)
  for var, grad in zip(variables, grads):
    base = var.numpy()
    for _ in range(3):   # three random entries of every tensor
      idx = tuple(rng.integers(0, n) for n in base.shape)
      eps, diffs = 1e-6, []
      for sign in (1, -1):
        bumped = base.copy()
        bumped[idx] += sign * eps
        var.assign(bumped)
        diffs.append(float(loss()))
      var.assign(base)
      numeric = (diffs[0] - diffs[1]) / (2 * eps)
      np.testing.assert_allclose(grad.numpy()[idx], numeric, rtol=1e-5,
                                 atol=1e-8, err_msg=var.name)


@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-12), ("float32", 2e-5)])
@pytest.mark.parametrize("dropout", [False, True])
def test_hyper_recurrence_matches_plain_autodiff(dtype, rtol, dropout):
  """The hand-written forward/backward (model/fast/hyper_recurrence.py) against TF
  autodiff of the plain loop of cell.step_from_hw (recurrence=autodiff):
  outputs, final states and the gradients of every weight, the inputs and the
  initial states, with the same dropout masks."""
  cell = make("hyper", dtype=dtype, use_recurrent_dropout=dropout,
              dropout_keep_prob=0.75)
  x, states = random_data("hyper", np.random.default_rng(8), dtype)
  states = [tf.constant(s) for s in states]
  xw = tf.constant(cell.project_inputs(x))
  rng = np.random.default_rng(9)
  probes = [rng.normal(size=(B, T, H)).astype(dtype)] + [
      rng.normal(size=s.shape).astype(dtype) for s in states]
  seed = tf.constant([3, 7])

  @tf.function
  def run(fused):
    with tf.GradientTape() as tape:
      tape.watch([xw] + states)
      if fused:
        out, final = recurrence.run_cell(cell, xw, states, training=dropout)
      else:
        out, final = plain_run_cell(cell, xw, states, training=dropout)
      loss = sum(tf.reduce_sum(p * v) for p, v in zip(probes, [out] + final))
    weights = [w for w in cell.trainable_variables if w.path.split("/")[-1]
               != "w_in"]
    return [out] + final, tape.gradient(loss, [xw] + states + weights)

  cell.seed_generator.state.assign(tf.cast(seed, "int64"))
  want_values, want_grads = run(False)
  cell.seed_generator.state.assign(tf.cast(seed, "int64"))
  got_values, got_grads = run(True)
  for got, want in zip(got_values + got_grads, want_values + want_grads):
    scale = np.abs(want).max()
    assert scale > 0
    np.testing.assert_allclose(got / scale, want / scale, atol=rtol)


def test_hyper_init_matches_sketch_rnn():
  """At init every scaling factor is 0.1 and every recurrent bias 0."""
  cell = cells.HyperLSTMCell(H, hyper_units=NH, hyper_embedding=E)
  cell.build((None, N_IN))
  hyper_h = np.random.default_rng(10).normal(size=(B, NH)).astype("float32")
  alpha_x, alpha_h, beta_h = cell.hyper_factors(hyper_h)
  np.testing.assert_allclose(alpha_x, 0.1, rtol=1e-5)
  np.testing.assert_allclose(alpha_h, 0.1, rtol=1e-5)
  np.testing.assert_array_equal(beta_h, 0.0)
  assert alpha_x.shape == (B, 4, H)


@pytest.mark.parametrize("kind", KINDS)
def test_recurrent_dropout_only_in_training(kind):
  cell = make(kind, use_recurrent_dropout=True, dropout_keep_prob=0.5)
  plain = make(kind)
  x, states = random_data(kind, np.random.default_rng(6))
  xw = cell.project_inputs(x)
  infer = [recurrence.run_cell(cell, xw, states, training=False)[0] for _ in range(2)]
  np.testing.assert_array_equal(infer[0], infer[1])
  np.testing.assert_allclose(infer[0], recurrence.run_cell(plain, xw, states)[0],
                             atol=1e-6)
  train = [recurrence.run_cell(cell, xw, states, training=True)[0] for _ in range(2)]
  assert np.abs(train[0] - infer[0]).max() > 1e-3
  assert np.abs(train[0] - train[1]).max() > 1e-3   # fresh masks per call
  off = make(kind, use_recurrent_dropout=False)
  np.testing.assert_allclose(recurrence.run_cell(off, xw, states, training=True)[0],
                             infer[0], atol=1e-6)


def test_stateless_dropout_masks_scale_and_vary_per_step():
  ones = tf.ones((200, 300))
  a = cells.stateless_dropout(ones, 0.9, tf.constant([7, 0])).numpy()
  b = cells.stateless_dropout(ones, 0.9, tf.constant([7, 1])).numpy()
  assert set(np.unique(a)) == {0.0, np.float32(1 / 0.9)}
  assert abs((a == 0).mean() - 0.1) < 0.01
  assert (a != b).mean() > 0.1   # a different step -> a different mask
  np.testing.assert_array_equal(
      a, cells.stateless_dropout(ones, 0.9, tf.constant([7, 0])).numpy())


def test_make_cell_and_parameter_counts():
  hps = hparams.get_hparams("tiny")
  n_in = 5 + hps.z_size
  for dec_model, cls in (("lstm", cells.LSTMCell),
                         ("layer_norm", cells.LayerNormLSTMCell),
                         ("hyper", cells.HyperLSTMCell)):
    cell = cells.make_cell(hps.replace(dec_model=dec_model))
    assert type(cell) is cls
    cell.build((None, n_in))
    h, nh, e = hps.dec_rnn_size, hps.hyper_num_units, hps.hyper_embedding_size
    lstm = n_in * 4 * h + h * 4 * h
    expected = {"lstm": lstm + 4 * h,
                "layer_norm": lstm + 8 * h + 2 * h,
                "hyper": (lstm + 4 * h + 8 * h + 2 * h            # main, LN
                          + (n_in + h + nh) * 4 * nh + 8 * nh + 2 * nh  # hyper
                          + nh * 12 * e + 8 * e + 12 * e * h)}[dec_model]
    assert cell.count_params() == expected, dec_model
    assert cell.state_size == [h, h] + ([nh, nh] if dec_model == "hyper" else [])


def test_recurrent_init_is_block_orthogonal():
  cell = cells.LSTMCell(16)
  cell.build((None, 4))
  for block in np.split(cell.w_rec.numpy(), 4, axis=1):
    np.testing.assert_allclose(block.T @ block, np.eye(16), atol=1e-5)


def test_fast_path_was_verified_for_this_cell():
  """The fast path records the digest of the HyperLSTMCell it computes.  If
  this fails, cells.py's math changed: the model now trains with autodiff
  (the edited math); bring model/fast/ in line with it, check it with the
  equivalence tests of this file and tests/test_fused_gates.py, and renew
  VERIFIED_CELL_DIGEST with the digest printed here."""
  digest = recurrence.cell_digest(cells.HyperLSTMCell)
  assert digest == VERIFIED_CELL_DIGEST, digest
  cell = make("hyper")
  assert recurrence.uses_fused(cell, "fused")
  assert recurrence.uses_fused(cell, "auto") == (
      not tf.config.list_logical_devices("GPU"))
  assert not recurrence.uses_fused(cell, "autodiff")
  assert not recurrence.uses_fused(make("layer_norm"), "fused")   # none exists


class _EditedHyperCell(cells.HyperLSTMCell):
  """A researcher's edit of the cell: the output halved."""

  def step_from_hw(self, xw, hw, states, training=False, seed=None):
    h, new_states = super().step_from_hw(xw, hw, states, training, seed)
    return 0.5 * h, [0.5 * h] + new_states[1:]


def test_an_edited_cell_runs_with_its_own_math():
  """A cell whose code differs from the verified one is never run by the fast
  path, even with recurrence=fused: outputs and gradients are autodiff's of
  the edited step, not the original math."""
  cell = make("hyper")
  edited = _EditedHyperCell(H, hyper_units=NH, hyper_embedding=E,
                            recurrence="fused")
  edited.build((None, N_IN))
  edited.set_weights(cell.get_weights())
  assert recurrence.cell_digest(_EditedHyperCell) != VERIFIED_CELL_DIGEST
  assert not recurrence.uses_fused(edited)
  x, states = random_data("hyper", np.random.default_rng(11))
  xw = tf.constant(cell.project_inputs(x))

  def run(c, choice):
    with tf.GradientTape() as tape:
      tape.watch(xw)
      out, _ = recurrence.run_cell(c, xw, states, recurrence=choice)
      loss = tf.reduce_sum(out ** 2)
    return out.numpy(), tape.gradient(loss, xw).numpy()

  got = run(edited, "fused")
  want = run(edited, "autodiff")
  original = run(cell, "fused")
  for a, b in zip(got, want):
    np.testing.assert_array_equal(a, b)
  h_last = original[0][:, 0]   # step 0: the same inputs, the edit halves h
  np.testing.assert_allclose(got[0][:, 0], 0.5 * h_last, rtol=1e-5, atol=1e-7)
