"""The timed parts of benchmarks/bench_train.py: each builder returns a compiled
step and its arguments, ``(fn, args)``, built the way train.py builds it
(the parts are described in bench_train's docstring)."""
import contextlib

import keras
import tensorflow as tf

from benchmarks.flops import gate_width
from benchmarks.timing import best_time
from model import losses
from model.fast import native_ops
from model.networks import recurrence
from model.rpcl_model import batch_signature

SGEMM_N = 4096


def time_sgemm(n=SGEMM_N, reps=5):
  a = tf.random.normal([n, n])
  b = tf.random.normal([n, n])
  fn = tf.function(tf.linalg.matmul)
  return 2.0 * n ** 3 / best_time(fn, (a, b), reps)


def time_rows(hps, reps):
  """(B, H) @ (H, F) + the two backward shapes, T times, as one compiled loop:
  the best the recurrence's matmuls can do at this batch size."""
  b, h, f, steps = hps.batch_size, hps.dec_rnn_size, gate_width(hps), \
      hps.max_seq_len
  x, w = tf.random.normal([b, h]), tf.random.normal([h, f]) * 0.01

  @tf.function
  def loop(x, w):
    def body(t, acc, dw):   # every product depends on the loop state
      y = tf.linalg.matmul(acc, w)                    # fwd
      dy = 1e-3 * y
      dx = tf.linalg.matmul(dy, w, transpose_b=True)   # bwd, input grad
      dw = dw + tf.linalg.matmul(acc, dy, transpose_a=True)  # bwd, weight grad
      return t + 1, acc + dx, dw
    return tf.while_loop(lambda t, *_: t < steps, body,
                         (0, x, tf.zeros_like(w)))[1:]
  return 3 * steps * 2 * b * h * f / best_time(loop, (x, w), reps)


def keras_lstm_step(hps):
  """A compiled keras.layers.LSTM train step on inputs of width 5 + D."""
  layer = keras.layers.LSTM(hps.dec_rnn_size, return_sequences=True)
  opt = keras.optimizers.Adam(1e-3)
  x = tf.random.normal([hps.batch_size, hps.max_seq_len, 5 + hps.z_size])
  layer(x[:, :2])
  opt.build(layer.trainable_variables)

  @tf.function
  def step(x):
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(tf.square(layer(x)))
    opt.apply_gradients(zip(tape.gradient(loss, layer.trainable_variables),
                            layer.trainable_variables))
    return loss
  return step, (x,)


def decoder_step(hps, model, batch):
  """Our stroke decoder + MDN loss, fwd + bwd + Adam (its own optimiser)."""
  dec = model.stroke_decoder
  opt = keras.optimizers.Adam(1e-3)
  opt.build(dec.trainable_variables)
  z = tf.random.normal([hps.batch_size, hps.z_size])

  @tf.function(jit_compile=hps.jit_compile)
  def step(strokes, z):
    with tf.GradientTape() as tape:
      params = dec.split_params(dec(strokes[:, :-1], z, training=True))
      loss = tf.reduce_mean(losses.mdn_loss(params, strokes[:, 1:], True))
    opt.apply_gradients(zip(tape.gradient(loss, dec.trainable_variables),
                            dec.trainable_variables))
    return loss
  return step, (batch[0], z)


def recurrence_step(hps, model, path=None):
  """recurrence.run_cell alone, fwd + bwd (gradients w.r.t. the cell's
  weights); ``path``: the cell's ``recurrence`` setting (None) or another
  (``"autodiff"``: the plain loop, differentiated by TensorFlow)."""
  cell = model.stroke_decoder.cell
  b = hps.batch_size
  xw = tf.random.normal([b, hps.max_seq_len, gate_width(hps)]) * 0.1
  states = [tf.zeros([b, n]) for n in cell.state_size]
  weights = cell.trainable_variables

  @tf.function
  def step(xw, states):
    with tf.GradientTape() as tape:
      out, _ = recurrence.run_cell(cell, xw, states, training=True,
                                   recurrence=path)
      loss = tf.reduce_sum(out * 1e-3)
    return tape.gradient(loss, weights)
  return step, (xw, states)


def traced_in(paths, step):
  """(fn, args) with fn traced now, inside the context ``paths``."""
  with paths():
    step[0].get_concrete_function(*step[1])
  return step


@contextlib.contextmanager
def fast_paths_off(model):
  """Within the block, ``model`` traces its plain paths, set by the model's
  own switches: the decoder cell by autodiff (its ``recurrence`` setting,
  model/networks/recurrence.py) and no C++ kernel (model/fast/native_ops.py)."""
  cell = model.stroke_decoder.cell
  setting, cell.recurrence = cell.recurrence, "autodiff"
  try:
    with native_ops.disabled():
      yield
  finally:
    cell.recurrence = setting


def old_train_step(model, batch, paths=None):
  """model.train_step compiled as compiled_train_step does, traced inside
  ``paths()`` (default: :func:`fast_paths_off`)."""
  fn = tf.function(model.train_step, jit_compile=model.hps.jit_compile,
                   autograph=False,
                   input_signature=[batch_signature(
                       model.hps, model.hps.batch_size,
                       free_length=model.hps.length_buckets > 0)])
  return traced_in(paths or (lambda: fast_paths_off(model)), (fn, (batch,)))


def encoder_step(hps, model, batch):
  """The encoder alone, fwd + bwd (gradients w.r.t. its weights)."""
  enc = model.encoder

  @tf.function
  def step(images):
    with tf.GradientTape() as tape:
      mean, var = enc(images, training=True)
      loss = tf.reduce_sum(mean * 1e-3) + tf.reduce_sum(var * 1e-3)
    return tape.gradient(loss, enc.trainable_variables)
  return step, (batch[2],)


def hierarchy_losses_step(hps, model, batch):
  """Hierarchy update + gaussian / ij / MDN / image losses and their backward
  w.r.t. the networks' outputs: everything of the step but the networks."""
  b, t, d = hps.batch_size, hps.max_seq_len, hps.z_size
  m = tf.random.normal([b, d])
  s = tf.nn.softplus(tf.random.normal([b, d]))
  raw = tf.random.normal([b, t, 3 + 6 * hps.num_output_mixture]) * 0.1
  x_hat = tf.tanh(tf.random.normal(batch[2].shape))
  step_var = model.global_step

  @tf.function
  def step(m, s, raw, x_hat, strokes, images):
    with tf.GradientTape() as tape:
      tape.watch([m, s, raw, x_hat])
      z = m + tf.sqrt(s) * tf.random.normal([b, d])
      outs = model.hierarchy.update(z, m, s, step_var)
      h = model.hierarchy
      gau = losses.gaussian_kl_loss(m, s, h.mu, h.sigma2, outs.post_k)
      ij = losses.ij_loss(outs.post_k, outs.p_l_given_yk, h.pi_l, h.q_kl)
      params = model.stroke_decoder.split_params(raw)
      lil = tf.reduce_mean(losses.mdn_loss(params, strokes[:, 1:], True))
      de = losses.image_l1_loss(images, x_hat)
      total = losses.total_loss(gau, ij, lil, de, step_var, hps)
    return tape.gradient(total, [m, s, raw, x_hat])
  return step, (m, s, raw, x_hat, batch[0], batch[2])


