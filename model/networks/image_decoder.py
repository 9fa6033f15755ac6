"""The image decoder (deconvolution regulariser), method.md §2.

z (B, D) -> Linear -> (w/16, w/16, 256) + ReLU -> four 3x3 stride-2 transposed
convolutions (128, 64, 32, 1 channels), each with instance norm; ReLU after the
first three, tanh after the last -> (B, w, w, 1) in [-1, 1].
Same initialisers and bias choices as the encoder (model/networks/encoder.py): the
dense kernel He-normal over fan_in, the filters ``filter_initializer(hps)``.
"""
import keras
from keras import ops

from model.networks.encoder import InstanceNorm, filter_initializer, he_normal_fan_in
from model.fast.fused_norm import norm_sum


class ImageDecoder(keras.layers.Layer):
  """``call(z (B, D)) -> images (B, w, w, 1)``, tanh output."""

  def __init__(self, hps, **kwargs):
    super().__init__(**kwargs)
    self.hps = hps
    self.side = hps.png_width // 16
    self.dense = keras.layers.Dense(self.side * self.side * 256, name="dense",
                                    kernel_initializer=he_normal_fan_in())
    self.deconvs = [
        (keras.layers.Conv2DTranspose(filters, 3, strides=2, padding="same",
                                      use_bias=False, name=f"deconv{k}",
                                      kernel_initializer=filter_initializer(hps)),
         InstanceNorm(name=f"in{k}"))
        for k, filters in enumerate((128, 64, 32, 1), start=1)]

  def call(self, z, training=False):
    """method.md (9): x_hat = Dec_img(z), z (B, D) -> (B, w, w, 1) in [-1, 1]."""
    x = ops.relu(self.dense(z))
    x = ops.reshape(x, (-1, self.side, self.side, 256))
    last = len(self.deconvs) - 1
    for k, (deconv, norm) in enumerate(self.deconvs):
      x = norm_sum([deconv(x)], [norm], relu=k < last)
    return ops.tanh(x)
