"""The CNN encoder q(z|x) of RPCL-pix2seqH (method.md §2, "Encoder").

Image (B, w, w, 1) -> two dilated blocks (32, 64 ch) -> two stride-2 convs (128,
256 ch) -> flatten -> mean m (D) and variance s = softplus(.) + 1e-10 (D).
Works for any ``png_width`` that is a multiple of 16 (four halvings).

Weights follow the release's ``xavier_init``: a Gaussian with std
sqrt(2 / size[0]), where size[0] is the weight's first dimension.  For a dense
kernel (in, out) that is He-normal over fan_in (``he_normal_fan_in``); for a
3x3 conv or deconv filter it is the kernel height, std sqrt(2/3) ~ 0.816
whatever the channel count (``filter_height_normal``).
``hps.conv_init = "he"`` gives the filters He-normal over their fan_in
(kh * kw * in channels) instead: under instance norm a filter's scale does not
change the forward pass, only how far each Adam step moves it relative to its
size, so the smaller filters (std 0.04-0.47 instead of 0.816) learn 2-20x
faster (the demo preset's choice, README).
Convolutions have no bias (as in the release): each is followed by instance
norm, whose learnable offset plays that role.  Instance norm epsilon 1e-6, the
release's (tf.contrib.layers.instance_norm).
"""
import keras
import tensorflow as tf
from keras import ops

from model.fast.fused_norm import norm_sum

VAR_EPSILON = 1e-10


def he_normal_fan_in():
  """Gaussian, std sqrt(2 / fan_in): the release's init of dense kernels."""
  return keras.initializers.VarianceScaling(
      scale=2.0, mode="fan_in", distribution="untruncated_normal")


class FilterHeightNormal(keras.initializers.RandomNormal):
  """Gaussian with std sqrt(2 / shape[0]): the release's ``xavier_init``
  applied to a conv or deconv filter (kh, kw, ., .), where shape[0] is the
  kernel height, so every 3x3 filter gets std sqrt(2/3) whatever its channels.
  Seeding as keras' RandomNormal (reproducible under keras.utils.set_random_seed)."""

  def __init__(self, seed=None):
    super().__init__(mean=0.0, stddev=1.0, seed=seed)

  def __call__(self, shape, dtype=None):
    self.stddev = (2.0 / float(shape[0])) ** 0.5
    return super().__call__(shape, dtype=dtype)

  def get_config(self):
    return {"seed": self._init_seed}


def filter_height_normal():
  """The release's conv / deconv filter initialiser (FilterHeightNormal)."""
  return FilterHeightNormal()


def filter_initializer(hps):
  """Conv / deconv filters' initialiser for ``hps.conv_init``: "release"
  (std sqrt(2 / kernel height)) or "he" (He-normal over fan_in)."""
  return he_normal_fan_in() if hps.conv_init == "he" else filter_height_normal()


def InstanceNorm(epsilon=1e-6, name=None):
  """Instance normalisation: per sample and channel over (H, W), then a learnable
  per-channel scale and offset (Ulyanov et al. 2016), method.md §2.

  This is ``keras.layers.GroupNormalization(groups=-1)`` (one group per channel):
  jit-compatible, statistics in float32 under mixed precision, and it folds
  scale and offset into one multiply-add of the full tensor.
  """
  return keras.layers.GroupNormalization(groups=-1, epsilon=epsilon, name=name)


def conv(filters, init, strides=1, dilation=1, name=None):
  """3x3 SAME convolution without bias (instance norm follows); ``init``:
  the filters' initialiser (filter_initializer)."""
  return keras.layers.Conv2D(filters, 3, strides=strides, padding="same",
                             dilation_rate=dilation, use_bias=False,
                             kernel_initializer=init, name=name)


def apply_conv(layer, x):
  """``layer(x)``, x (B, h, w, C) -> the conv's (B, h', w', filters); a dilated
  stride-1 float32 ``conv`` runs as one Conv2D op with a dilations attribute
  (same weights and result), because Keras lowers it to space-to-batch + conv
  + batch-to-space, 1.5x slower forward + backward on CPU
  (benchmarks/README.md).  (16-bit: Keras' path, as TF's non-oneDNN CPU
  kernels have no dilated backward.)"""
  if max(layer.dilation_rate) == 1 or x.dtype != tf.float32:
    return layer(x)
  if not layer.built:
    layer.build(tuple(x.shape))
  return tf.nn.conv2d(x, ops.cast(layer.kernel, x.dtype), strides=1,
                      padding="SAME", dilations=list(layer.dilation_rate))


class DilatedBlock(keras.layers.Layer):
  """Three parallel 3x3 convs (dilation 1, 2, 5) + IN, summed, ReLU, then a 3x3
  stride-2 conv + IN + ReLU (method.md §2)."""

  def __init__(self, filters, init, **kwargs):
    super().__init__(**kwargs)
    self.branches = [(conv(filters, init, dilation=d, name=f"conv_d{d}"),
                      InstanceNorm(name=f"in_d{d}")) for d in (1, 2, 5)]
    self.down = conv(filters, init, strides=2, name="conv_down")
    self.down_norm = InstanceNorm(name="in_down")

  def call(self, x):
    """The dilated block of method.md (7)'s encoder: x (B, h, w, C) ->
    (B, h/2, w/2, filters)."""
    summed = norm_sum([apply_conv(conv_layer, x) for conv_layer, _ in self.branches],
                      [norm for _, norm in self.branches])
    return norm_sum([self.down(summed)], [self.down_norm])


def reparameterize(mean, var, eps):
  """method.md (8): z = m + sqrt(s) * eps; mean, var, eps (B, D) -> z (B, D)."""
  return mean + ops.sqrt(var) * eps


class Encoder(keras.layers.Layer):
  """q(z|x): ``call(images (B,w,w,1), training=False) -> (mean, var)`` (B, D)."""

  def __init__(self, hps, **kwargs):
    super().__init__(**kwargs)
    self.hps = hps
    init = filter_initializer(hps)
    self.blocks = [DilatedBlock(32, init, name="block1"),
                   DilatedBlock(64, init, name="block2")]
    self.convs = [(conv(128, init, strides=2, name="conv3"), InstanceNorm(name="in3")),
                  (conv(256, init, strides=2, name="conv4"), InstanceNorm(name="in4"))]
    self.flatten = keras.layers.Flatten()
    self.mean_head = keras.layers.Dense(hps.z_size, name="mean",
                                        kernel_initializer=he_normal_fan_in())
    self.var_head = keras.layers.Dense(hps.z_size, name="var",
                                       kernel_initializer=he_normal_fan_in())

  def call(self, images, training=False):
    """Encoder mean and variance, method.md (7): images (B, w, w, 1) in [-1, 1]
    -> (m (B, D), s (B, D)), s = softplus(W_s f + b_s) + 1e-10."""
    x = images
    for block in self.blocks:
      x = block(x)
    for conv_layer, norm in self.convs:
      x = norm_sum([conv_layer(x)], [norm])
    x = self.flatten(x)
    return self.mean_head(x), ops.softplus(self.var_head(x)) + VAR_EPSILON
