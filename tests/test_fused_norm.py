"""The instance-norm kernels (model/fast/fused_norm.py, model/fast/kernels/instance_norm.cc)
against a NumPy transcription of the equations and against Keras'
GroupNormalization (values and every gradient), the path selection, and
bit-determinism."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from hparams import get_hparams
from model.fast import fused_norm, native_ops
from model.networks.encoder import Encoder, InstanceNorm
from utils.errors import UserError

pytestmark = pytest.mark.skipif(
    native_ops.kernels() is None,
    reason=f"C++ kernels not built: {native_ops.unavailable_reason()}")

EPS = 1e-6


def np_norm_sum(xs, gammas, betas, relu):
  """relu(sum_k IN_k(x_k)) in float64, from the definition."""
  total = 0.0
  for x, g, b in zip(xs, gammas, betas):
    x = x.astype(np.float64)
    mean = x.mean(axis=(1, 2), keepdims=True)
    var = ((x - mean) ** 2).mean(axis=(1, 2), keepdims=True)
    total = total + (x - mean) / np.sqrt(var + EPS) * g + b
  return np.maximum(total, 0.0) if relu else total


def make(n, shape, seed):
  rng = np.random.default_rng(seed)
  xs = [tf.constant((rng.normal(size=shape) * 1.5 + 0.7).astype(np.float32))
        for _ in range(n)]
  norms = []
  for _ in range(n):
    norm = InstanceNorm(epsilon=EPS)
    norm.build(shape)
    norm.gamma.assign(rng.normal(size=shape[-1]).astype(np.float32))
    norm.beta.assign(rng.normal(size=shape[-1]).astype(np.float32))
    norms.append(norm)
  cot = tf.constant(rng.normal(size=shape).astype(np.float32))
  return xs, norms, cot


def value_and_grads(xs, norms, cot, relu, fused):
  """y and d<y, cot>/d(xs, gammas, betas), by the kernel or by Keras."""
  def run():
    with tf.GradientTape() as tape:
      tape.watch(xs)
      y = fused_norm.norm_sum(xs, norms, relu)
      loss = tf.reduce_sum(y * cot)
    weights = [w for norm in norms for w in (norm.gamma, norm.beta)]
    return y, tape.gradient(loss, list(xs) + weights)
  if fused:
    return run()
  with native_ops.disabled(native_ops.NORM):
    return run()


CASES = [(3, True, (4, 6, 5, 8)), (1, True, (3, 4, 4, 16)),
         (1, False, (2, 3, 5, 4)), (2, False, (5, 2, 2, 3))]


@pytest.mark.parametrize("n,relu,shape", CASES)
def test_forward_matches_numpy(n, relu, shape):
  xs, norms, _ = make(n, shape, seed=n)
  y, _ = value_and_grads(xs, norms, tf.zeros(shape), relu, fused=True)
  want = np_norm_sum([x.numpy() for x in xs], [nm.gamma.numpy() for nm in norms],
                     [nm.beta.numpy() for nm in norms], relu)
  np.testing.assert_allclose(y.numpy(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n,relu,shape", CASES)
def test_kernel_matches_keras_values_and_gradients(n, relu, shape):
  xs, norms, cot = make(n, shape, seed=10 + n)
  y1, g1 = value_and_grads(xs, norms, cot, relu, fused=True)
  y0, g0 = value_and_grads(xs, norms, cot, relu, fused=False)
  np.testing.assert_allclose(y1.numpy(), y0.numpy(), rtol=1e-5, atol=1e-5)
  assert len(g1) == len(g0) == 3 * n
  for a, b in zip(g1, g0):
    scale = float(np.abs(b.numpy()).max())
    assert scale > 0
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=2e-5 * scale)


def test_bit_identical_repeats():
  xs, norms, cot = make(3, (8, 12, 12, 32), seed=3)
  first = value_and_grads(xs, norms, cot, True, fused=True)
  again = value_and_grads(xs, norms, cot, True, fused=True)
  for a, b in zip(tf.nest.flatten(first), tf.nest.flatten(again)):
    assert np.array_equal(a.numpy(), b.numpy())


def _op_types(fn, *args):
  graph = tf.function(fn).get_concrete_function(*args).graph
  return {op.type for op in graph.get_operations()}


@pytest.mark.skipif(bool(tf.config.list_physical_devices("GPU")),
                    reason="with a GPU the kernels (CPU-only) are never chosen")
def test_path_selection():
  xs, norms, _ = make(1, (2, 4, 4, 3), seed=4)
  run = lambda x: fused_norm.norm_sum([x], norms)
  assert "RpclInstanceNormForward" in _op_types(run, xs[0])
  with native_ops.disabled(native_ops.NORM):
    assert "RpclInstanceNormForward" not in _op_types(run, xs[0])
  # XLA cannot compile a custom op: traced for jit_compile, Keras' layer runs.
  graph = tf.function(run, jit_compile=True).get_concrete_function(xs[0]).graph
  assert "RpclInstanceNormForward" not in {op.type for op in graph.get_operations()}
  norms64 = [keras.layers.GroupNormalization(groups=-1, epsilon=EPS, dtype="float64")]
  x64 = tf.cast(xs[0], tf.float64)
  assert "RpclInstanceNormForward" not in _op_types(
      lambda x: fused_norm.norm_sum([x], norms64), x64)


def test_shape_errors_are_clear():
  lib = native_ops.kernels()
  x = tf.zeros((2, 3, 3, 4))
  with pytest.raises(tf.errors.InvalidArgumentError, match="differ in shape"):
    lib.rpcl_instance_norm_forward([x, tf.zeros((2, 3, 3, 5))], tf.ones((2, 4)),
                                   tf.zeros((2, 4)), epsilon=EPS, relu=True)
  with pytest.raises(tf.errors.InvalidArgumentError, match=r"gamma must be \(N, C\)"):
    lib.rpcl_instance_norm_forward([x], tf.ones((1, 3)), tf.zeros((1, 3)),
                                   epsilon=EPS, relu=True)


def test_encoder_same_with_and_without_kernel():
  hps = get_hparams("tiny")
  enc = Encoder(hps)   # (no global seeding: other modules' fixtures draw after)
  images = tf.random.stateless_uniform((4, hps.png_width, hps.png_width, 1),
                                       seed=(1, 2), minval=-1.0, maxval=1.0)
  enc(images)

  def run():
    with tf.GradientTape() as tape:
      mean, var = enc(images)
      loss = tf.reduce_sum(mean * tf.range(1.0, hps.z_size + 1)) + tf.reduce_sum(var)
    return [mean, var] + tape.gradient(loss, enc.trainable_variables)
  fused = run()
  with native_ops.disabled(native_ops.NORM):
    keras_path = run()
  for a, b in zip(fused, keras_path):
    scale = max(float(np.abs(b.numpy()).max()), 1e-30)
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-4 * scale)


def test_empty_batch_takes_gammas_channels():
  # A replica's empty share of a short last batch; TF's eager CPU conv hands
  # an empty batch back with its input's channel count (here 1, not 3).
  xs, norms, _ = make(1, (2, 4, 4, 3), seed=5)
  empty = tf.zeros((0, 4, 4, 1))
  with tf.GradientTape() as tape:
    tape.watch(empty)
    y = fused_norm.norm_sum([empty], norms)
    loss = tf.reduce_sum(y)
  grads = tape.gradient(loss, [empty, norms[0].gamma, norms[0].beta])
  assert y.shape == (0, 4, 4, 3)   # as the broadcasting norm in a graph
  assert grads[0].shape == (0, 4, 4, 1)
  assert not np.any(grads[1].numpy()) and not np.any(grads[2].numpy())


@pytest.mark.skipif(bool(tf.config.list_physical_devices("GPU")),
                    reason="with a GPU the kernels (CPU-only) are never chosen")
@pytest.mark.parametrize("value,want", [("1", {"gates": True, "norm": True}),
                                        ("gates", {"gates": True, "norm": False}),
                                        (" norm, ", {"gates": False, "norm": True})])
def test_env_selects_kernel_families(monkeypatch, value, want):
  monkeypatch.setenv("RPCL_CPU_KERNELS", value)
  monkeypatch.setattr(native_ops, "_env", {"read": False})
  monkeypatch.setattr(native_ops, "_enabled", {"gates": True, "norm": True})
  got = {family: native_ops.usable(family, tf.float32) for family in want}
  assert got == want


def test_env_unknown_family_is_a_clear_error(monkeypatch):
  monkeypatch.setenv("RPCL_CPU_KERNELS", "gates,convs")
  monkeypatch.setattr(native_ops, "_env", {"read": False})
  with pytest.raises(UserError, match=r"RPCL_CPU_KERNELS='gates,convs': unknown "
                     r"kernel family convs; expected 0, 1 or a comma list of "
                     r"gates, norm"):
    native_ops.usable("norm", tf.float32)
