"""Train-step speed against the machine's sgemm rate and Keras' own LSTM.

  python -m benchmarks.bench_train [--sizes small,paper] [--reps 3]
      [--intra_op 0 --inter_op 0]

In ONE process (so that machine load hits all of them alike), per size:
  sgemm   tf.linalg.matmul of two 4096x4096 float32 matrices (the machine's limit)
  rows    the recurrence's own matmul shape, (B, H) @ (H, F), F = the fused gate width
  lstm    keras.layers.LSTM(H) train step (fwd + bwd + Adam), input 5 + D, T steps
  dec     our StrokeDecoder + MDN loss train step (fwd + bwd + Adam)
  rec     the recurrence alone (recurrence.run_cell, fwd + bwd, no optimiser)
  rec_ops the same with the cells' steps in TensorFlow ops instead of the
          C++ kernels (model/native_ops.py); dec_ops, enc_ops, full_ops alike
  enc     the encoder alone, fwd + bwd (its instance norms by model/fused_norm.py)
  full_in_ops the full step with the HyperLSTM kernels but the instance norms
          as Keras layers (what the norm kernel gains)
  rec_old the same by autodiff of the plain loop (tests/reference_paths.py)
  full    RPCLPix2SeqH.compiled_train_step, exactly as train.py runs it, on a
          stroke step (warm-up over: the steady state)
  full_old the same step traced with the old paths (reference_paths.old_paths:
          autodiff recurrence, space-to-batch dilated convs, both decoders'
          backward)
  hier    hierarchy update + all losses (+ their backward) at the same B, D, K, L
Times are the minimum over ``reps`` (the machine is shared).  Sizes: ``small``
(the small preset, T=130) and ``paper`` (H=2048, B=128, T=130, D=128, K=L=16:
num_mixture=16, num_sub=1; one warm-up + ``reps_big`` timed steps).

FLOP counts (matmul / conv multiply-adds x 2, executed; elementwise ops ignored):
  LSTM step, input n:      fwd = 2 B (n + H) 4H
  our decoder per step:    2 B 5 F (input rows; the z part 2 B D F once per sequence)
                           + 2 B H F (recurrent, F = 4H [+ 4Nh for the HyperLSTM])
                           + hyper: 2 B Nh 4Nh (hyper recurrence)
                                    + 2 B Nh 12E + 2 B E 12H (the 12 embeddings)
                           + 2 B H (3 + 6M) (mixture head)
  convs (encoder, image decoder): 2 * out_pixels * 9 * Cin * Cout per image
  train step = 3 x fwd (backward: one matmul for the input grad, one for the
  weight grad, each the size of the forward one); the full step counts the
  image decoder's forward only (a stroke step does not back-propagate it).
Threads: model/threads.configure_threads (what train.py uses) unless
--intra_op / --inter_op are given.
"""
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
if __name__ == "__main__":
  flags.DEFINE_list("sizes", ["small", "paper"], "small and/or paper")
  flags.DEFINE_integer("reps", 3, "timed repetitions at the small size")
  flags.DEFINE_integer("reps_big", 1, "timed steps at the paper size")
  flags.DEFINE_integer("seq_len", 130, "T")
  flags.DEFINE_integer("intra_op", -1, "TF intra-op threads (-1: "
                       "configure_threads, 0: TF default)")
  flags.DEFINE_integer("inter_op", -1, "TF inter-op threads (as intra_op)")
  flags.DEFINE_boolean("jit_step", False, "XLA-compile the whole train step "
                       "(hps.jit_compile; also the decoder-alone step)")
  flags.DEFINE_list("parts", [], "subset of " + ",".join(
      ("sgemm", "rows", "lstm", "dec", "dec_ops", "rec", "rec_ops", "rec_old",
       "enc", "enc_ops", "full", "full_ops", "full_in_ops", "full_old",
       "hier")))

import tensorflow as tf  # noqa: E402

from benchmarks.flops import (conv_fwd_flops, decoder_fwd_flops,  # noqa: E402
                              gate_width, lstm_fwd_flops,
                              recurrence_fwd_flops)

ALL_PARTS = ("sgemm", "rows", "lstm", "dec", "dec_ops", "rec", "rec_ops",
             "rec_old", "enc", "enc_ops", "full", "full_ops", "full_in_ops",
             "full_old", "hier")
SIZES = {
    "small": ("small", "max_seq_len=130"),
    "paper": ("paper", "max_seq_len=130,num_mixture=16,num_sub=1"),
}


def maxrss_mb():
  """Peak resident set size of this process so far (Linux: KiB -> MiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def best_time(fn, args=(), reps=3, warmup=1):
  """Minimum wall time of ``fn(*args)`` over ``reps`` calls after ``warmup``.

  Inputs are passed as arguments, never captured: grappler would constant-fold
  computations on captured constants."""
  for _ in range(warmup):
    _block(fn(*args))
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    _block(fn(*args))
    times.append(time.perf_counter() - start)
  return min(times)


def interleaved(steps, reps, log=print):
  """{name: (fn, args)} -> {name: min seconds}: one warm-up call each (RSS
  logged after it), then ``reps`` rounds calling every fn once per round, so
  that a burst of load from other processes hits all of them alike."""
  times = {name: [] for name in steps}
  for name, (fn, args) in steps.items():
    _block(fn(*args))
    log(f"  warm-up {name}: peak RSS so far {maxrss_mb():.0f} MB")
  for _ in range(reps):
    for name, (fn, args) in steps.items():
      start = time.perf_counter()
      _block(fn(*args))
      times[name].append(time.perf_counter() - start)
  return {name: min(t) for name, t in times.items()}


def _block(out):
  """Forces the result (numpy of every tensor) so that timing is complete."""
  for t in tf.nest.flatten(out):
    if hasattr(t, "numpy"):
      t.numpy()


# --- the timed parts ------------------------------------------------------------

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
  import keras
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
  import keras
  from model import losses
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


def recurrence_step(hps, model, old=False):
  """recurrence.run_cell alone, fwd + bwd (gradients w.r.t. the cell's
  weights); ``old``: autodiff of the plain loop instead."""
  from model import recurrence
  from tests.reference_paths import plain_run_cell
  cell = model.stroke_decoder.cell
  run = plain_run_cell if old else recurrence.run_cell
  b = hps.batch_size
  xw = tf.random.normal([b, hps.max_seq_len, gate_width(hps)]) * 0.1
  states = [tf.zeros([b, n]) for n in cell.state_size]
  weights = cell.trainable_variables

  @tf.function
  def step(xw, states):
    with tf.GradientTape() as tape:
      out, _ = run(cell, xw, states, training=True)
      loss = tf.reduce_sum(out * 1e-3)
    return tape.gradient(loss, weights)
  return step, (xw, states)


def traced_in(paths, step):
  """(fn, args) with fn traced now, inside the context ``paths``."""
  with paths():
    step[0].get_concrete_function(*step[1])
  return step


def old_train_step(model, batch, paths=None):
  """model.train_step compiled as compiled_train_step does, traced with the
  old paths (tests/reference_paths.old_paths) or ``paths``."""
  from model.rpcl_model import batch_signature
  from tests.reference_paths import old_paths
  fn = tf.function(model.train_step, jit_compile=model.hps.jit_compile,
                   autograph=False,
                   input_signature=[batch_signature(
                       model.hps, model.hps.batch_size,
                       free_length=model.hps.length_buckets > 0)])
  return traced_in(paths or old_paths, (fn, (batch,)))


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
  from model import losses
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


def run_size(size, parts, reps, seq_len=130, jit_step=False, log=print):
  """Times ``parts`` at one size; returns a dict of FLOP/s, seconds, ratios."""
  from hparams import get_hparams
  preset, over = SIZES[size]
  hps = get_hparams(preset, over.replace("max_seq_len=130",
                                         f"max_seq_len={seq_len}")
                    + f",jit_compile={jit_step},warmup_steps=0")
  b, t = hps.batch_size, hps.max_seq_len
  res = dict(size=size, jit_step=hps.jit_compile, H=hps.dec_rnn_size, B=b, T=t, D=hps.z_size,
             K=hps.num_components, L=hps.num_units, dec_model=hps.dec_model)
  lstm_flops = 3 * lstm_fwd_flops(b, t, 5 + hps.z_size, hps.dec_rnn_size)
  dec_flops = 3 * decoder_fwd_flops(hps, b, t)
  rec_flops = 3 * recurrence_fwd_flops(hps, b, t)
  enc_flops, img_flops = conv_fwd_flops(hps, b)
  full_flops = dec_flops + 3 * enc_flops + img_flops
  res.update(gflop_lstm=lstm_flops / 1e9, gflop_dec=dec_flops / 1e9,
             gflop_full=full_flops / 1e9)

  flops = dict(lstm=lstm_flops, rec=rec_flops, rec_old=rec_flops,
               rec_ops=rec_flops, dec=dec_flops, dec_ops=dec_flops,
               enc=3 * enc_flops, enc_ops=3 * enc_flops, full=full_flops,
               full_old=full_flops, full_ops=full_flops, full_in_ops=full_flops)
  if "rows" in parts:
    res["rows_gflops"] = time_rows(hps, reps) / 1e9
    log(f"  [{size}] rows   {res['rows_gflops']:7.1f} GFLOP/s at (B,H)@(H,F) "
        f"= ({b},{hps.dec_rnn_size})@({hps.dec_rnn_size},{gate_width(hps)})")
  steps = {}
  if "sgemm" in parts:   # again here, interleaved with the steps: same load
    n = SGEMM_N
    steps["sgemm"] = (tf.function(tf.linalg.matmul),
                      (tf.random.normal([n, n]), tf.random.normal([n, n])))
    flops["sgemm"] = 2 * n ** 3
  if "lstm" in parts:
    steps["lstm"] = keras_lstm_step(hps)
  from model import native_ops
  from model.checkpoint import build_model
  from model.rpcl_model import random_batch
  model = build_model(hps)
  batch = random_batch(hps)
  if "rec" in parts:
    steps["rec"] = recurrence_step(hps, model)
  if "rec_old" in parts:
    steps["rec_old"] = recurrence_step(hps, model, old=True)
  if "rec_ops" in parts:
    steps["rec_ops"] = traced_in(native_ops.disabled,
                                 recurrence_step(hps, model))
  if "dec" in parts:
    steps["dec"] = decoder_step(hps, model, batch)
  if "dec_ops" in parts:
    steps["dec_ops"] = traced_in(native_ops.disabled,
                                 decoder_step(hps, model, batch))
  if "enc" in parts:
    steps["enc"] = encoder_step(hps, model, batch)
  if "enc_ops" in parts:
    steps["enc_ops"] = traced_in(native_ops.disabled,
                                 encoder_step(hps, model, batch))
  if "full" in parts:
    train_fn = model.compiled_train_step()
    steps["full"] = (train_fn, (batch,))
  if "full_old" in parts:
    steps["full_old"] = old_train_step(model, batch)
  if "full_ops" in parts:
    steps["full_ops"] = old_train_step(model, batch, native_ops.disabled)
  if "full_in_ops" in parts:
    steps["full_in_ops"] = old_train_step(
        model, batch, lambda: native_ops.disabled(native_ops.NORM))
  if "hier" in parts:
    steps["hier"] = hierarchy_losses_step(hps, model, batch)
  for name, seconds in interleaved(steps, reps, log=log).items():
    res[name + "_s"] = seconds
    line = f"  [{size}] {name:<6} {seconds * 1e3:10.1f} ms"
    if name in flops:
      res[name + "_gflops"] = flops[name] / seconds / 1e9
      line += f"  {res[name + '_gflops']:7.1f} GFLOP/s"
    log(line)
  if "full" in parts:
    res["full_tracing_count"] = train_fn.experimental_get_tracing_count()
  if "lstm" in parts and "dec" in parts:
    res["dec_vs_lstm"] = res["dec_gflops"] / res["lstm_gflops"]
  if "hier" in parts and "full" in parts:
    res["hier_share"] = res["hier_s"] / res["full_s"]
  for name in ("rec", "full"):
    if name in parts and name + "_old" in parts:
      res[name + "_speedup"] = res[name + "_old_s"] / res[name + "_s"]
  for name in ("rec", "dec", "enc", "full"):
    if name in parts and name + "_ops" in parts:
      res[name + "_fused_speedup"] = res[name + "_ops_s"] / res[name + "_s"]
  if "full" in parts and "full_in_ops" in parts:
    res["full_norm_speedup"] = res["full_in_ops_s"] / res["full_s"]
  return res


def run(sizes=("small", "paper"), reps=3, reps_big=1, parts=ALL_PARTS,
        seq_len=130, jit_step=False, log=print, threads="auto"):
  """Every part at every size; returns a flat dict (keys prefixed by size).
  ``threads``: "auto" (model/threads.configure_threads, as train.py) or
  "given" (already set by the caller)."""
  if threads == "auto":
    from model.threads import configure_threads
    configure_threads()
  res = dict(tf_version=tf.__version__, cpus=os.cpu_count(),
             intra_op=tf.config.threading.get_intra_op_parallelism_threads(),
             inter_op=tf.config.threading.get_inter_op_parallelism_threads())
  if "sgemm" in parts:
    res["sgemm_gflops"] = time_sgemm(reps=max(reps, 3)) / 1e9
    log(f"  sgemm 4096^2: {res['sgemm_gflops']:.1f} GFLOP/s")
  for size in sizes:
    out = run_size(size, parts, reps if size == "small" else reps_big,
                   seq_len, jit_step, log)
    for key, value in out.items():
      res[f"{size}_{key}"] = value
    if "sgemm" in parts:   # ratios to the sgemm rate measured alongside
      for name in ("lstm", "dec", "dec_ops", "rec", "rec_ops", "rec_old",
                   "enc", "enc_ops", "full", "full_ops", "full_in_ops",
                   "full_old", "rows"):
        if f"{size}_{name}_gflops" in res:
          res[f"{size}_{name}_vs_sgemm"] = \
              res[f"{size}_{name}_gflops"] / res[f"{size}_sgemm_gflops"]
  res["maxrss_mb"] = maxrss_mb()
  return res


def report(res):
  lines = [f"train-step benchmark (TF {res['tf_version']}, {res['cpus']} CPUs, "
           f"intra {res['intra_op']} / inter {res['inter_op']} threads)"]
  if "sgemm_gflops" in res:
    lines.append(f"  sgemm 4096x4096: {res['sgemm_gflops']:.1f} GFLOP/s")
  for size in SIZES:
    if f"{size}_H" not in res:
      continue
    g = lambda k, default=float("nan"): res.get(f"{size}_{k}", default)
    lines.append(f"  {size}: H={g('H')} B={g('B')} T={g('T')} D={g('D')} "
                 f"K={g('K')} L={g('L')} {g('dec_model')}")
    for name, what in (("sgemm", "sgemm 4096^2, interleaved"),
                       ("rows", "recurrence matmul shapes only"),
                       ("lstm", "keras.layers.LSTM train step"),
                       ("rec", "our recurrence alone (fwd+bwd)"),
                       ("rec_ops", "  the same, TF ops, no C++ kernel"),
                       ("rec_old", "  the same, old (autodiff) path"),
                       ("dec", "our stroke decoder train step"),
                       ("dec_ops", "  the same, TF ops, no C++ kernel"),
                       ("enc", "our encoder alone (fwd+bwd)"),
                       ("enc_ops", "  the same, TF ops, no C++ kernel"),
                       ("full", "our full train step"),
                       ("full_ops", "  the same, TF ops, no C++ kernel"),
                       ("full_in_ops", "  the same, instance norms as TF ops"),
                       ("full_old", "  the same, old paths")):
      if f"{size}_{name}_gflops" in res:
        ms = g(name + "_s") * 1e3 if f"{size}_{name}_s" in res else float("nan")
        lines.append(f"    {what:<32} {ms:9.0f} ms {g(name + '_gflops'):7.1f} "
                     f"GFLOP/s  {100 * g(name + '_vs_sgemm'):5.1f}% of sgemm")
    if f"{size}_dec_vs_lstm" in res:
      lines.append(f"    decoder / keras LSTM FLOP/s: {g('dec_vs_lstm'):.2f} "
                   f"(target >= 0.8)")
    for name in ("rec", "full"):
      if f"{size}_{name}_speedup" in res:
        lines.append(f"    {name}: old / new time {g(name + '_speedup'):.2f}x")
    for name in ("rec", "dec", "enc", "full"):
      if f"{size}_{name}_fused_speedup" in res:
        lines.append(f"    {name}: TF ops / C++ kernel time "
                     f"{g(name + '_fused_speedup'):.2f}x")
    if f"{size}_full_norm_speedup" in res:
      lines.append(f"    full: instance norms as TF ops / C++ kernel time "
                   f"{g('full_norm_speedup'):.2f}x")
    if f"{size}_hier_share" in res:
      lines.append(f"    hierarchy update + losses: {g('hier_s') * 1e3:.1f} ms = "
                   f"{100 * g('hier_share'):.2f}% of the full step")
    if f"{size}_full_tracing_count" in res:
      lines.append(f"    train step traced {g('full_tracing_count')} time(s)")
  lines.append(f"  peak RSS {res['maxrss_mb']:.0f} MB")
  return "\n".join(lines)


def main(argv):
  del argv
  if FLAGS.intra_op >= 0:
    tf.config.threading.set_intra_op_parallelism_threads(FLAGS.intra_op)
  if FLAGS.inter_op >= 0:
    tf.config.threading.set_inter_op_parallelism_threads(FLAGS.inter_op)
  parts = tuple(FLAGS.parts) or ALL_PARTS
  given = FLAGS.intra_op >= 0 or FLAGS.inter_op >= 0
  res = run(FLAGS.sizes, FLAGS.reps, FLAGS.reps_big, parts, FLAGS.seq_len,
            FLAGS.jit_step, threads="given" if given else "auto")
  print(report(res))


if __name__ == "__main__":
  app.run(main)
