"""Encoder, image decoder and stroke decoder (method.md §2) against NumPy."""
import numpy as np
import keras
import pytest
import tensorflow as tf

import hparams
from model.networks import encoder as enc
from model.networks.image_decoder import ImageDecoder
from model.networks.stroke_decoder import StrokeDecoder, split_params


def np_instance_norm(x, scale, offset, eps=1e-6):
  mean = x.mean((1, 2), keepdims=True)
  var = x.var((1, 2), keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * scale + offset


def np_conv_same(x, kernel, stride=1, dilation=1):
  """TF 'SAME' 3x3 convolution (cross-correlation) with dilation and stride."""
  k = kernel.shape[0]
  span = (k - 1) * dilation + 1
  size = x.shape[1]
  out_size = -(-size // stride)
  pad = max((out_size - 1) * stride + span - size, 0)
  lo = pad // 2
  xp = np.pad(x, ((0, 0), (lo, pad - lo), (lo, pad - lo), (0, 0)))
  out = np.zeros((x.shape[0], out_size, out_size, kernel.shape[-1]))
  for a in range(k):
    for b in range(k):
      win = xp[:, a * dilation:a * dilation + (out_size - 1) * stride + 1:stride,
               b * dilation:b * dilation + (out_size - 1) * stride + 1:stride]
      out += win @ kernel[a, b]
  return out


def randomize(layer, seed=0):
  rng = np.random.default_rng(seed)
  for v in layer.weights:
    v.assign(rng.normal(0, 0.3, v.shape).astype("float32")
             + (1.0 if "gamma" in v.path else 0.0))


def test_dilated_block_matches_numpy():
  block = enc.DilatedBlock(4, enc.filter_height_normal())
  x = np.random.default_rng(1).normal(size=(2, 16, 16, 3)).astype("float32")
  block(x)   # builds the weights
  randomize(block)
  got = block(x).numpy()
  summed = 0
  for (conv, norm), d in zip(block.branches, (1, 2, 5)):
    assert conv.dilation_rate == (d, d)
    summed = summed + np_instance_norm(
        np_conv_same(x, conv.kernel.numpy(), dilation=d),
        norm.gamma.numpy(), norm.beta.numpy())
  down = np_conv_same(np.maximum(summed, 0), block.down.kernel.numpy(), stride=2)
  want = np.maximum(np_instance_norm(down, block.down_norm.gamma.numpy(),
                                     block.down_norm.beta.numpy()), 0)
  assert got.shape == (2, 8, 8, 4)
  np.testing.assert_allclose(got, want, atol=1e-4)


def test_instance_norm_matches_numpy():
  norm = enc.InstanceNorm()
  x = np.random.default_rng(2).normal(3, 2, size=(2, 6, 6, 5)).astype("float32")
  norm.build(x.shape)
  randomize(norm)
  np.testing.assert_allclose(norm(x), np_instance_norm(
      x, norm.gamma.numpy(), norm.beta.numpy()), atol=1e-5)


@pytest.mark.parametrize("preset,width", [("tiny", 48), ("tiny", 64),
                                          ("small", 48), ("tiny", 32)])
def test_encoder_and_image_decoder_shapes(preset, width):
  hps = hparams.get_hparams(preset, f"png_width={width}")
  encoder, decoder = enc.Encoder(hps), ImageDecoder(hps)
  images = np.random.default_rng(3).uniform(-1, 1, (4, width, width, 1))
  mean, var = encoder(images.astype("float32"))
  assert mean.shape == var.shape == (4, hps.z_size)
  assert np.all(var.numpy() > 0)
  out = decoder(mean).numpy()
  assert out.shape == (4, width, width, 1)
  assert np.all(np.abs(out) <= 1.0) and out.std() > 0


def test_encoder_variance_positive_even_when_head_is_very_negative():
  hps = hparams.get_hparams("tiny")
  encoder = enc.Encoder(hps)
  images = np.ones((2, 48, 48, 1), "float32")
  encoder(images)
  encoder.var_head.bias.assign(np.full(hps.z_size, -200.0, "float32"))
  _, var = encoder(images)
  assert np.all(var.numpy() > 0) and np.all(np.isfinite(var.numpy()))


def test_reparameterize():
  rng = np.random.default_rng(4)
  mean, var, eps = rng.normal(size=(3, 5)), rng.uniform(0.1, 2, (3, 5)), \
      rng.normal(size=(3, 5))
  np.testing.assert_allclose(enc.reparameterize(mean, var, eps),
                             mean + np.sqrt(var) * eps, rtol=1e-6)


def test_split_params_order_and_transforms():
  m = 4
  raw = np.random.default_rng(5).normal(size=(2, 3, 3 + 6 * m)).astype("float32")
  p = split_params(tf.constant(raw))
  chunk = lambda k: raw[..., 3 + k * m:3 + (k + 1) * m]
  np.testing.assert_allclose(p.pen_logits, raw[..., :3])
  log_sm = lambda v: v - np.log(np.exp(v).sum(-1, keepdims=True))
  np.testing.assert_allclose(p.log_pen, log_sm(raw[..., :3]), atol=1e-6)
  np.testing.assert_allclose(p.log_pi, log_sm(chunk(0)), atol=1e-6)
  np.testing.assert_allclose(p.mu_x, chunk(1))
  np.testing.assert_allclose(p.mu_y, chunk(2))
  np.testing.assert_allclose(p.sigma_x, np.exp(chunk(3)), rtol=1e-6)
  np.testing.assert_allclose(p.sigma_y, np.exp(chunk(4)), rtol=1e-6)
  np.testing.assert_allclose(p.log_sigma_y, chunk(4))
  np.testing.assert_allclose(p.rho, np.tanh(chunk(5)), rtol=1e-6)


@pytest.mark.parametrize("dec_model", ["lstm", "layer_norm", "hyper"])
def test_stroke_decoder_sequence_equals_steps(dec_model):
  hps = hparams.get_hparams("tiny", f"dec_model={dec_model}")
  dec = StrokeDecoder(hps)
  rng = np.random.default_rng(6)
  x = rng.normal(size=(3, 7, 5)).astype("float32")
  z = rng.normal(size=(3, hps.z_size)).astype("float32")
  raw = dec(x, z)
  assert raw.shape == (3, 7, 3 + 6 * hps.num_output_mixture)
  states = dec.initial_state(z)
  flat = np.tanh(z @ dec.init_dense.kernel.numpy() + dec.init_dense.bias.numpy())
  np.testing.assert_allclose(np.concatenate(states, -1), flat, atol=1e-6)
  assert [int(s.shape[-1]) for s in states] == dec.cell.state_size
  steps = []
  for t in range(7):
    out, states = dec.step(x[:, t], z, states)
    steps.append(out)
  np.testing.assert_allclose(np.stack(steps, 1), raw, atol=1e-5)
  # The split z projection equals projecting concat(x_t, z) at every step.
  z_seq = np.repeat(z[:, None], 7, 1)
  np.testing.assert_allclose(
      dec.cell.project_inputs(np.concatenate([x, z_seq], -1)),
      dec.project(x, z), atol=1e-5)
  compiled = tf.function(lambda a, b: dec(a, b), jit_compile=True)
  np.testing.assert_allclose(compiled(x, z), raw, atol=1e-5)


@pytest.mark.parametrize("option", ["use_input_dropout", "use_output_dropout",
                                    "use_recurrent_dropout"])
def test_decoder_dropout_options(option):
  hps = hparams.get_hparams("tiny", f"{option}=True,input_dropout_prob=0.5,"
                            "output_dropout_prob=0.5,recurrent_dropout_prob=0.5")
  dec = StrokeDecoder(hps)
  rng = np.random.default_rng(7)
  x = rng.normal(size=(2, 5, 5)).astype("float32")
  z = rng.normal(size=(2, hps.z_size)).astype("float32")
  infer = dec(x, z, training=False).numpy()
  np.testing.assert_array_equal(infer, dec(x, z, training=False).numpy())
  train = dec(x, z, training=True).numpy()
  assert np.abs(train - infer).max() > 1e-3


def count(layer):
  return int(sum(np.prod(v.shape) for v in layer.weights))


@pytest.mark.parametrize("preset", ["small", "paper"])
def test_parameter_counts(preset, capsys):
  hps = hparams.get_hparams(preset)
  w = hps.png_width
  parts = {"encoder": enc.Encoder(hps), "image_decoder": ImageDecoder(hps),
           "stroke_decoder": StrokeDecoder(hps)}
  parts["encoder"](np.zeros((1, w, w, 1), "float32"))
  parts["image_decoder"](np.zeros((1, hps.z_size), "float32"))
  parts["stroke_decoder"].build()
  counts = {k: count(v) for k, v in parts.items()}
  with capsys.disabled():
    print(f"\n{preset} parameters: {counts}, total {sum(counts.values())}")
  flat = (w // 16) ** 2 * 256
  assert counts["encoder"] == (
      3 * 9 * 1 * 32 + 9 * 32 * 32 + 3 * 9 * 32 * 64 + 9 * 64 * 64 + 9 * 64 * 128
      + 9 * 128 * 256 + 2 * (32 * 4 + 64 * 4 + 128 + 256)
      + 2 * (flat * hps.z_size + hps.z_size))
  dec = parts["stroke_decoder"]
  assert counts["stroke_decoder"] == count(dec.cell) + (
      hps.z_size + 1) * sum(dec.cell.state_size) + (hps.dec_rnn_size + 1) * (
          3 + 6 * hps.num_output_mixture)
