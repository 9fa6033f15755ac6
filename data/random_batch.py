"""A random training batch in the layout of data/pipeline.py, for tests and
benchmarks that need no data set.

The batch is ``(strokes5 float32 (B, T + 1, 5), seq_len int32 (B,), images
float32 (B, w, w, 1) in [-1, 1], labels int32 (B,))`` with B =
``hps.batch_size``, T = ``hps.max_seq_len`` and w = ``hps.png_width``: what
the compiled train step of model/rpcl_model.py takes (its
``batch_signature(hps, hps.batch_size)``).
"""
import numpy as np
import tensorflow as tf


def random_batch(hps, rng=0):
  """Realistic stroke-5 rows of full length (S0 first, then random offsets,
  mostly pen-down) and uniform random images, all labels 0.

  Args:
    hps: the hparams (batch_size, max_seq_len >= 1, png_width).
    rng: a seed or a ``np.random.Generator`` (several batches drawn from one
      generator differ).
  Returns:
    (strokes5 (B, T + 1, 5), seq_len (B,) all T, images (B, w, w, 1),
    labels (B,)) as tensors.
  """
  rng = np.random.default_rng(rng)
  b, t, w = hps.batch_size, hps.max_seq_len, hps.png_width
  strokes = np.zeros((b, t + 1, 5), np.float32)
  strokes[:, 1:, :2] = rng.normal(size=(b, t, 2))
  pen = rng.choice(3, size=(b, t), p=[0.8, 0.15, 0.05])
  strokes[:, 1:, 2:] = np.eye(3, dtype=np.float32)[pen]
  strokes[:, 0, 2] = 1.0
  images = rng.uniform(-1, 1, (b, w, w, 1)).astype(np.float32)
  return (tf.constant(strokes), tf.fill([b], t), tf.constant(images),
          tf.zeros([b], tf.int32))
