"""Fidelity to the released TF1 code: initialisations, loss weights, presets.

Numbers pinned here come from the release (CMACH508/RPCL-pix2seqH):
Cnn.py's ``xavier_init`` gives every filter std 1/sqrt(size[0]/2), size[0] the
kernel height; model.py's initial state is a tanh dense layer from z with the
same init (std sqrt(2 / z_size)); its total loss adds de_loss unweighted; its
train.py trains K = L = 16 with q(k|l) = 1 + 16 I column-normalised, batch 200
and 8 categories.
"""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import hparams as hp
from model import losses
from model.hierarchy import Hierarchy
from model.networks.encoder import Encoder
from model.networks.image_decoder import ImageDecoder
from model.networks.stroke_decoder import StrokeDecoder
from model.storage.checkpoint import build_model

RELEASE_FILTER_STD = 1.0 / math.sqrt(3 / 2.0)   # 0.8165 for a 3x3 filter


def _std_tolerance(n):
  """4 standard errors of a sample std of n Gaussian draws (std 0.8165)."""
  return 4 * RELEASE_FILTER_STD / math.sqrt(2 * n)


def test_conv_and_deconv_filters_have_the_release_std():
  hps = hp.get_hparams("paper")   # the paper's channel counts: 1 .. 256
  encoder, decoder = Encoder(hps), ImageDecoder(hps)
  encoder(np.zeros((1, 48, 48, 1), "float32"))
  decoder(np.zeros((1, hps.z_size), "float32"))
  kernels = [v for v in encoder.weights + decoder.weights
             if v.path.endswith("kernel") and len(v.shape) == 4]
  assert len(kernels) == 10 + 4   # 2 blocks x 4 convs, conv3, conv4; 4 deconvs
  for v in kernels:
    w = v.numpy()
    assert abs(w.std() - RELEASE_FILTER_STD) < _std_tolerance(w.size), v.path
    assert abs(w.mean()) < 4 * RELEASE_FILTER_STD / math.sqrt(w.size), v.path
  # the biggest filters pin the number to 2 decimals: 0.816, not He's 0.029
  assert abs(encoder.convs[1][0].kernel.numpy().std() - 0.8165) < 0.005
  assert abs(decoder.deconvs[0][0].kernel.numpy().std() - 0.8165) < 0.005
  # dense kernels: std sqrt(2 / fan_in), as the release's FcNet
  head = encoder.mean_head.kernel.numpy()
  assert abs(head.std() - math.sqrt(2 / 2304)) < 0.01 * math.sqrt(2 / 2304) * 4


def test_he_conv_init_scales_filters_by_their_fan_in():
  """conv_init=he: every filter (kh, kw, a, b) has std sqrt(2 / (kh kw a))
  (Keras' fan_in: a = input channels of a conv, output channels of a
  transposed conv); 0.816 only remains the release's."""
  hps = hp.get_hparams("paper", "conv_init=he")
  encoder, decoder = Encoder(hps), ImageDecoder(hps)
  encoder(np.zeros((1, 48, 48, 1), "float32"))
  decoder(np.zeros((1, hps.z_size), "float32"))
  kernels = [v.numpy() for v in encoder.weights + decoder.weights
             if v.path.endswith("kernel") and len(v.shape) == 4]
  assert len(kernels) == 14
  for w in kernels:
    want = math.sqrt(2.0 / (w.shape[0] * w.shape[1] * w.shape[2]))
    assert abs(w.std() - want) < 4 * want / math.sqrt(2 * w.size), w.shape
  assert encoder.convs[1][0].kernel.numpy().std() < 0.05   # was 0.816


def test_decoder_initial_state_is_a_tanh_dense_from_z_with_the_release_init():
  hps = hp.get_hparams("small")
  dec = StrokeDecoder(hps)
  dec.build()
  kernel = dec.init_dense.kernel.numpy()
  assert kernel.shape == (hps.z_size, sum(dec.cell.state_size))
  want = math.sqrt(2.0 / hps.z_size)   # 0.25 at z_size 32 (it was 0.001)
  assert abs(kernel.std() - want) < 4 * want / math.sqrt(2 * kernel.size)
  np.testing.assert_array_equal(dec.init_dense.bias.numpy(), 0.0)
  z = np.random.default_rng(0).normal(size=(3, hps.z_size)).astype("float32")
  states = dec.initial_state(z)
  np.testing.assert_allclose(np.concatenate([s.numpy() for s in states], -1),
                             np.tanh(z @ kernel), atol=1e-5)
  out = dec.out_dense.kernel.numpy()   # the release's output head: sqrt(2/H)
  assert abs(out.std() - math.sqrt(2 / hps.dec_rnn_size)) < 0.05 * math.sqrt(
      2 / hps.dec_rnn_size)


def test_total_loss_weights_the_image_loss_as_the_release():
  gau, ij, lil, de = 2.0, 3.0, 7.0, 11.0
  hps = hp.get_hparams("release")
  assert hps.de_weight == 1.0
  # step 5 < 1000, 5 % 4 != 0: an image step; 0.1 * kl_weight(5) * (ij + gau) + de
  kl_5 = 1.0 - 0.999 * 0.9999 ** 5
  np.testing.assert_allclose(losses.total_loss(gau, ij, lil, de, 5, hps),
                             0.1 * kl_5 * 5.0 + 11.0, rtol=1e-6)
  # step 8 (% 4 == 0) and step 1500 (warm-up over) are stroke steps
  for step in (8, 1500):
    kl = 1.0 - 0.999 * 0.9999 ** step
    np.testing.assert_allclose(losses.total_loss(gau, ij, lil, de, step, hps),
                               0.1 * kl * 5.0 + 7.0, rtol=1e-6)
  # de_weight is a real knob
  half = hps.replace(de_weight=0.5)
  np.testing.assert_allclose(losses.total_loss(gau, ij, lil, de, 5, half),
                             0.1 * kl_5 * 5.0 + 5.5, rtol=1e-6)
  assert hp.HParams().de_weight == 1.0


def np_release_q(k):
  q = 1.0 + k * np.eye(k)
  return q / q.sum(0, keepdims=True)


def test_release_preset_is_the_released_configuration():
  hps = hp.get_hparams("release")
  assert hps.categories == ["bee", "bus", "car", "cat", "flower", "giraffe",
                            "horse", "pig"]
  assert hps.batch_size == 200 and hps.num_components == hps.num_units == 16
  assert (hps.dec_rnn_size, hps.z_size, hps.dec_model) == (2048, 128, "hyper")
  assert (hps.hyper_num_units, hps.hyper_embedding_size,
          hps.num_output_mixture) == (256, 32, 20)
  assert (hps.learning_rate, hps.decay_rate, hps.min_learning_rate,
          hps.grad_clip) == (0.001, 0.9999, 0.00001, 1.0)
  assert (hps.eta, hps.gamma, hps.em_steps, hps.rpcl_every, hps.warmup_steps,
          hps.kl_factor) == (0.05, 1e-4, 100, 3, 1000, 0.1)
  assert (hps.recurrent_dropout_prob, hps.random_scale_factor,
          hps.augment_stroke_prob, hps.png_scale_ratio) == (0.9, 0.1, 0.1, 0.98)
  h = Hierarchy(hps, seed=3)
  np.testing.assert_allclose(h.q_kl.numpy(), np_release_q(16), rtol=1e-12)
  np.testing.assert_allclose(h.q_kl.numpy()[:, 0],
                             [17 / 32] + [1 / 32] * 15, rtol=1e-12)
  assert h.mu.shape == (16, 128) and h.pi_l.shape == (16,)
  # the preset's list is not shared between calls
  hps.categories.append("x")
  assert len(hp.get_hparams("release").categories) == 8


@pytest.mark.parametrize("mode", ["block", "anchor"])
def test_q_init_modes(mode):
  hps = hp.get_hparams("paper", f"z_size=4,num_mixture=3,num_sub=2,q_init={mode}")
  q = Hierarchy(hps, seed=0).q_kl.numpy()
  k, l = 6, 3
  own = np.kron(np.eye(l), np.ones((2, 1)))      # unit l's block
  anchor = np.zeros((k, l))
  anchor[[0, 2, 4], [0, 1, 2]] = 1.0             # the first of each block
  want = 1.0 + k * (own if mode == "block" else anchor)
  np.testing.assert_allclose(q, want / want.sum(0), rtol=1e-12)
  # with num_sub = 1 both modes are the release's 1 + K I
  one = hp.get_hparams("paper", f"z_size=4,num_mixture=5,num_sub=1,q_init={mode}")
  np.testing.assert_allclose(Hierarchy(one).q_kl.numpy(), np_release_q(5),
                             rtol=1e-12)


def test_existing_presets_keep_the_block_init():
  for preset in ("paper", "small", "tiny"):
    assert hp.get_hparams(preset).q_init == "block"
  with pytest.raises(hp.HParamsError, match="q_init"):
    hp.get_hparams("paper", "q_init=diagonal")


def test_release_preset_builds(monkeypatch):
  """The whole model at the release's sizes (23.9M weights) builds; the four
  (2048, 2048) orthogonal draws, the only slow part, are replaced by zeros."""
  monkeypatch.setattr(keras.initializers.Orthogonal, "__call__",
                      lambda self, shape, dtype=None: tf.zeros(shape, dtype))
  model = build_model(hp.get_hparams("release", "max_seq_len=4"))
  n = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
  assert n == 23872445
  np.testing.assert_allclose(model.hierarchy.q_kl.numpy(), np_release_q(16),
                             rtol=1e-12)
