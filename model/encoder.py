"""The CNN encoder q(z|x) of RPCL-pix2seqH (REFERENCE §2, "Encoder").

Image (B, w, w, 1) -> two dilated blocks (32, 64 ch) -> two stride-2 convs (128,
256 ch) -> flatten -> mean m (D) and variance s = softplus(.) + 1e-10 (D).
Works for any ``png_width`` that is a multiple of 16 (four halvings).

Choices where the spec is silent:
* Weights: Gaussian with std sqrt(2 / fan_in) ("xavier" in the reference's sense),
  i.e. ``VarianceScaling(2.0, "fan_in", "untruncated_normal")``, for convs and heads.
* Convolutions have no bias: each is followed by instance norm, whose learnable
  offset makes a bias redundant.
* Instance norm epsilon 1e-5 (keras GroupNormalization(groups=-1), see InstanceNorm).
"""
import keras
from keras import ops

VAR_EPSILON = 1e-10


def xavier_initializer():
  """Gaussian, std sqrt(2 / fan_in) (REFERENCE §2 weights)."""
  return keras.initializers.VarianceScaling(
      scale=2.0, mode="fan_in", distribution="untruncated_normal")


def InstanceNorm(epsilon=1e-5, name=None):
  """Instance normalisation: per sample and channel over (H, W), then a learnable
  per-channel scale and offset (Ulyanov et al. 2016), REFERENCE §2.

  This is ``keras.layers.GroupNormalization(groups=-1)`` (one group per channel):
  jit-compatible, statistics in float32 under mixed precision, and as fast as a
  hand-written layer on this CPU (it folds scale and offset into one
  multiply-add of the full tensor).
  """
  return keras.layers.GroupNormalization(groups=-1, epsilon=epsilon, name=name)


def conv(filters, strides=1, dilation=1, name=None):
  """3x3 SAME convolution without bias (instance norm follows)."""
  return keras.layers.Conv2D(filters, 3, strides=strides, padding="same",
                             dilation_rate=dilation, use_bias=False,
                             kernel_initializer=xavier_initializer(), name=name)


class DilatedBlock(keras.layers.Layer):
  """Three parallel 3x3 convs (dilation 1, 2, 5) + IN, summed, ReLU, then a 3x3
  stride-2 conv + IN + ReLU (REFERENCE §2)."""

  def __init__(self, filters, **kwargs):
    super().__init__(**kwargs)
    self.branches = [(conv(filters, dilation=d, name=f"conv_d{d}"),
                      InstanceNorm(name=f"in_d{d}")) for d in (1, 2, 5)]
    self.down = conv(filters, strides=2, name="conv_down")
    self.down_norm = InstanceNorm(name="in_down")

  def call(self, x):
    summed = None
    for conv_layer, norm in self.branches:
      branch = norm(conv_layer(x))
      summed = branch if summed is None else summed + branch
    return ops.relu(self.down_norm(self.down(ops.relu(summed))))


def reparameterize(mean, var, eps):
  """z = m + sqrt(s) * eps (REFERENCE §2, reparameterisation)."""
  return mean + ops.sqrt(var) * eps


class Encoder(keras.layers.Layer):
  """q(z|x): ``call(images (B,w,w,1), training=False) -> (mean, var)`` (B, D)."""

  def __init__(self, hps, **kwargs):
    super().__init__(**kwargs)
    self.hps = hps
    self.blocks = [DilatedBlock(32, name="block1"), DilatedBlock(64, name="block2")]
    self.convs = [(conv(128, strides=2, name="conv3"), InstanceNorm(name="in3")),
                  (conv(256, strides=2, name="conv4"), InstanceNorm(name="in4"))]
    self.flatten = keras.layers.Flatten()
    self.mean_head = keras.layers.Dense(hps.z_size, name="mean",
                                        kernel_initializer=xavier_initializer())
    self.var_head = keras.layers.Dense(hps.z_size, name="var",
                                       kernel_initializer=xavier_initializer())

  def call(self, images, training=False):
    x = images
    for block in self.blocks:
      x = block(x)
    for conv_layer, norm in self.convs:
      x = ops.relu(norm(conv_layer(x)))
    x = self.flatten(x)
    return self.mean_head(x), ops.softplus(self.var_head(x)) + VAR_EPSILON
