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
          C++ kernels (model/fast/native_ops.py); dec_ops, enc_ops, full_ops alike
  enc     the encoder alone, fwd + bwd (its instance norms by model/fast/fused_norm.py)
  full_in_ops the full step with the HyperLSTM kernels but the instance norms
          as Keras layers (what the norm kernel gains)
  rec_old the same by autodiff of the plain loop (recurrence=autodiff)
  full    RPCLPix2SeqH.compiled_train_step, exactly as train.py runs it, on a
          stroke step (warm-up over: the steady state)
  full_old the same step traced with the fast paths off by the model's own
          switches (train_parts.fast_paths_off: recurrence=autodiff, no C++
          kernel); the dilated convs as single Conv2D ops and the backward
          through one decoder stay, as they have no switch
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
Threads: model/training/threads.configure_threads (what train.py uses) unless
--intra_op / --inter_op are given.
"""
import os
import sys

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
from benchmarks.timing import interleaved, maxrss_mb  # noqa: E402
from data.random_batch import random_batch  # noqa: E402
from hparams import get_hparams  # noqa: E402
from model.fast import native_ops  # noqa: E402
from model.storage.checkpoint import build_model  # noqa: E402
from model.training.threads import configure_threads  # noqa: E402
from benchmarks.train_parts import (SGEMM_N, decoder_step,  # noqa: E402
                                    encoder_step, hierarchy_losses_step,
                                    keras_lstm_step, old_train_step,
                                    recurrence_step, time_rows, time_sgemm,
                                    traced_in)

ALL_PARTS = ("sgemm", "rows", "lstm", "dec", "dec_ops", "rec", "rec_ops",
             "rec_old", "enc", "enc_ops", "full", "full_ops", "full_in_ops",
             "full_old", "hier")
SIZES = {
    "small": ("small", "max_seq_len=130"),
    "paper": ("paper", "max_seq_len=130,num_mixture=16,num_sub=1"),
}


def run_size(size, parts, reps, seq_len=130, jit_step=False, log=print):
  """Times ``parts`` at one size; returns a dict of FLOP/s, seconds, ratios."""
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
  model = build_model(hps)
  batch = random_batch(hps)
  if "rec" in parts:
    steps["rec"] = recurrence_step(hps, model)
  if "rec_old" in parts:
    steps["rec_old"] = recurrence_step(hps, model, "autodiff")
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
  ``threads``: "auto" (model/training/threads.configure_threads, as train.py) or
  "given" (already set by the caller)."""
  if threads == "auto":
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
