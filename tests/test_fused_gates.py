"""The C++ kernels of the main cell's step (model/fast/fused_gates.py) against
a NumPy reference of (14)-(15), and the fused recurrence against the
TensorFlow-op one (values and every gradient, with and without dropout)."""
import numpy as np
import pytest
import tensorflow as tf

from model.fast import fused_gates, native_ops
from model.fast.hyper_fused import FUSED
from model.fast.hyper_recurrence import TF_OPS, run_hyper
from model.networks import cells, recurrence

B, T, H, NH, E = 6, 9, 12, 8, 4
EPS = 1e-3

pytestmark = pytest.mark.skipif(
    native_ops.kernels() is None,
    reason=f"fused kernels not built: {native_ops.unavailable_reason()}")


def np_norm(x):
  centred = x - x.mean(-1, keepdims=True)
  rs = 1.0 / np.sqrt((centred ** 2).mean(-1, keepdims=True) + EPS)
  return centred * rs


def np_forward(factors, x_main, hw, c_prev, mask, bias, gain, offset, c_gain,
               c_offset):
  """One main-cell step written from (14)-(15) (float64)."""
  ax, ah, beta = factors[:4], factors[4:8], factors[8:]     # (4, B, H) each
  x4 = x_main.reshape(-1, 4, H).transpose(1, 0, 2)
  h4 = hw[:, :4 * H].reshape(-1, 4, H).transpose(1, 0, 2)
  pre = ax * x4 + ah * h4 + beta + bias[:, None]
  act = 1 / (1 + np.exp(-(np_norm(pre) * gain[:, None] + offset[:, None])))
  si, sj, sf, so = act
  c = c_prev * sf + si * (2 * sj - 1) * mask
  h = np.tanh(np_norm(c) * c_gain + c_offset) * so
  return h, c


def random_step(rng, dropout):
  f = lambda *s: rng.normal(size=s)
  mask = ((rng.random((B, H)) < 0.75) / 0.75) if dropout else np.ones((B, H))
  return dict(factors=f(12, B, H), x_main=f(B, 4 * H), hw=f(B, 4 * H + 4 * NH),
              c_prev=f(B, H), mask=mask, bias=f(4, H), gain=1 + 0.3 * f(4, H),
              offset=f(4, H), c_gain=1 + 0.3 * f(H), c_offset=f(H))


@pytest.mark.parametrize("dropout", [False, True])
def test_forward_kernel_matches_numpy_equations(dropout):
  args = random_step(np.random.default_rng(1), dropout)
  want_h, want_c = np_forward(**args)
  tensors = {k: tf.constant(v, tf.float32) for k, v in args.items()}
  if not dropout:
    tensors["mask"] = None
  h, c, activations = fused_gates.forward(**tensors, epsilon=EPS)
  np.testing.assert_allclose(h, want_h, atol=2e-5)
  np.testing.assert_allclose(c, want_c, atol=2e-5)
  assert activations.shape == (B, 10 * H + 5)


def test_kernel_rejects_wrong_shapes():
  args = {k: tf.constant(v, tf.float32)
          for k, v in random_step(np.random.default_rng(2), False).items()}
  args["factors"] = args["factors"][:11]
  # The kernel's input is named "ab" (alpha and beta factors).
  with pytest.raises(tf.errors.InvalidArgumentError, match="ab"):
    fused_gates.forward(**args, epsilon=EPS)


def run_both(dropout, impls=None):
  cell = cells.HyperLSTMCell(H, hyper_units=NH, hyper_embedding=E,
                             use_recurrent_dropout=dropout,
                             dropout_keep_prob=0.75)
  cell.build((None, 5))
  rng = np.random.default_rng(3)
  for v in cell.trainable_variables:   # away from the init's symmetries
    v.assign(v.numpy() + 0.3 * rng.normal(size=v.shape).astype("float32"))
  xw = tf.constant(rng.normal(size=(B, T, 4 * H + 4 * NH)), tf.float32)
  states = [tf.constant(rng.normal(size=(B, n)), tf.float32)
            for n in (H, H, NH, NH)]
  probes = [rng.normal(size=(B, T, H))] + [rng.normal(size=s.shape)
                                           for s in states]
  weights = [w for w in cell.trainable_variables
             if w.path.split("/")[-1] != "w_in"]
  seed = tf.constant([3, 7]) if dropout else None
  results = []
  for impl in impls or (TF_OPS, FUSED):
    with tf.GradientTape() as tape:
      tape.watch([xw] + states)
      out, final = run_hyper(cell, xw, states, seed, impl)
      loss = sum(tf.reduce_sum(tf.constant(p, tf.float32) * v)
                 for p, v in zip(probes, [out] + final))
    results.append([out] + final + tape.gradient(loss, [xw] + states + weights))
  return results, len(weights)


@pytest.mark.parametrize("dropout", [False, True])
def test_fused_recurrence_matches_tf_ops(dropout):
  """Outputs, final states, and the gradients of the inputs, the initial
  states and every weight: the same to float32 rounding."""
  (want, got), n_weights = run_both(dropout)
  assert n_weights >= 14 and len(want) == 1 + 4 + 1 + 4 + n_weights
  for w, g in zip(want, got):
    scale = np.abs(w).max()
    assert scale > 0
    np.testing.assert_allclose(g / scale, w / scale, atol=2e-5)


@pytest.mark.skipif(bool(tf.config.list_physical_devices("GPU")),
                    reason="with a GPU the kernels (CPU-only) are never chosen")
def test_run_cell_takes_the_fused_path_only_when_enabled(monkeypatch):
  seen = []
  monkeypatch.setattr(recurrence, "run_hyper",
                      lambda cell, xw, states, seed, impl: seen.append(impl))
  cell = cells.HyperLSTMCell(H, hyper_units=NH, hyper_embedding=E)
  cell.build((None, 5))
  xw = tf.zeros([B, T, 4 * H + 4 * NH])
  states = [tf.zeros([B, n]) for n in (H, H, NH, NH)]
  recurrence.run_cell(cell, xw, states)
  with fused_gates.disabled():
    recurrence.run_cell(cell, xw, states)
  recurrence.run_cell(cell, tf.cast(xw, tf.float64),
                      [tf.cast(s, tf.float64) for s in states])
  tf.function(lambda: recurrence.run_cell(cell, xw, states),
              jit_compile=True).get_concrete_function()     # XLA: no custom op
  tf.function(
      lambda: recurrence.run_cell(cell, xw, states)).get_concrete_function()
  assert seen == [FUSED, TF_OPS, TF_OPS, TF_OPS, FUSED]


def test_kernels_are_bit_deterministic():
  """Two calls on the same inputs give identical bits (no order-dependent
  sums across the threads' row blocks).  Across processes, where scratch
  buffers land at other addresses, tests/test_reproducibility.py checks it
  on whole training runs."""
  (got, again), _ = run_both(True, (FUSED, FUSED))
  for a, b in zip(got, again):
    np.testing.assert_array_equal(a, b)
