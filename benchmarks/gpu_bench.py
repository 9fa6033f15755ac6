"""Paper-size train-step and sampling times on this machine's accelerator.

  python -m benchmarks.gpu_bench --out_dir DIR [--dry_run] [--deadline_s 300]

Times, on the first GPU (or the CPU with --dry_run):
* RPCLPix2SeqH.compiled_train_step at the paper size (H=2048, B=128, D=128,
  K=L=16, T=--seq_len) for float32 and mixed_bfloat16, each with and without
  ``jit_compile``: first call (trace + compile) and the median of --steps
  timed steps after one warm-up, in sketches/s;
* a batched sample of --num_samples sketches (model/inference/sampler.sample_strokes).
Configurations run while time is left before --deadline_s; a skipped one is
recorded as such.  Writes ``gpu_bench.json`` and ``gpu_bench.md`` (a table) to
--out_dir, atomically.  --dry_run: the tiny preset on the CPU, 1 step, 20
sketches: checks the whole script quickly.  Exit status 1 when a
configuration fails.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
if __name__ == "__main__":
  flags.DEFINE_string("out_dir", "gpu_check_out", "where the JSON and table go")
  flags.DEFINE_boolean("dry_run", False, "tiny sizes on the CPU")
  flags.DEFINE_integer("steps", 5, "timed train steps per configuration")
  flags.DEFINE_integer("seq_len", 130, "T of the train-step batch")
  flags.DEFINE_integer("num_samples", 1000, "sketches of the batched sample")
  flags.DEFINE_float("deadline_s", 300.0, "stop starting configurations after")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from data.random_batch import random_batch  # noqa: E402
from hparams import get_hparams  # noqa: E402
from model.inference import sampler  # noqa: E402
from model.storage.checkpoint import build_model  # noqa: E402
from utils.io import atomic_write_text, ensure_dir  # noqa: E402

CONFIGS = [("float32", False), ("float32", True), ("mixed_bfloat16", False),
           ("mixed_bfloat16", True)]


def paper_hps(dry_run, seq_len, precision, jit):
  base = ("tiny", "num_mixture=2") if dry_run else \
      ("paper", "num_mixture=16,num_sub=1")
  return get_hparams(base[0], f"{base[1]},max_seq_len={seq_len},"
                     f"precision={precision},jit_compile={jit},warmup_steps=0")


def time_train(hps, steps):
  """(first call s, median step s) of the compiled train step."""
  model = build_model(hps)
  batch = random_batch(hps)
  fn = model.compiled_train_step()
  start = time.perf_counter()
  float(fn(batch)["total"])
  first = time.perf_counter() - start
  float(fn(batch)["total"])
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    float(fn(batch)["total"])
    times.append(time.perf_counter() - start)
  return first, float(np.median(times))


def time_sample(hps, num):
  """Seconds of one batched sample of ``num`` sketches (after a warm-up)."""
  model = build_model(hps)
  z = np.random.default_rng(0).normal(size=(num, hps.z_size))
  sampler.sample_strokes(model.stroke_decoder, z[:2], hps.max_seq_len)
  start = time.perf_counter()
  sampler.sample_strokes(model.stroke_decoder, z, hps.max_seq_len)
  return time.perf_counter() - start


def run(dry_run=False, steps=5, seq_len=130, num_samples=1000, deadline_s=300.0,
        log=print):
  t0 = time.perf_counter()
  if dry_run:
    steps, seq_len, num_samples = 1, 12, 20
  gpus = tf.config.list_physical_devices("GPU")
  res = dict(tf_version=tf.__version__, dry_run=dry_run,
             device=(tf.config.experimental.get_device_details(gpus[0]).get(
                 "device_name", "GPU") if gpus else "CPU"),
             seq_len=seq_len, steps=steps, train=[], sample=None)
  for precision, jit in CONFIGS:
    entry = dict(precision=precision, jit_compile=jit)
    if time.perf_counter() - t0 > deadline_s:
      entry["skipped"] = "deadline"
    else:
      hps = paper_hps(dry_run, seq_len, precision, jit)
      try:
        first, step = time_train(hps, steps)
        entry.update(first_call_s=first, step_s=step,
                     sketches_per_s=hps.batch_size / step, H=hps.dec_rnn_size,
                     B=hps.batch_size)
      except Exception as e:  # pylint: disable=broad-except
        entry["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    log(f"  train {precision} jit={jit}: {entry}")
    res["train"].append(entry)
  if time.perf_counter() - t0 <= deadline_s:
    hps = paper_hps(dry_run, seq_len, "float32", False)
    seconds = time_sample(hps, num_samples)
    res["sample"] = dict(num=num_samples, seconds=seconds,
                         sketches_per_s=num_samples / seconds,
                         max_len=hps.max_seq_len)
    log(f"  sample: {res['sample']}")
  res["total_s"] = time.perf_counter() - t0
  return res


def table(res):
  lines = [f"Device: {res['device']}, TF {res['tf_version']}"
           + (" (dry run: tiny preset on the CPU)" if res["dry_run"] else ""),
           "", "| what | precision | jit_compile | first call (s) | step (s) | "
           "sketches/s |", "|---|---|---|---|---|---|"]
  for e in res["train"]:
    if "step_s" in e:
      lines.append(f"| train step H={e['H']} B={e['B']} T={res['seq_len']} | "
                   f"{e['precision']} | {e['jit_compile']} | "
                   f"{e['first_call_s']:.1f} | {e['step_s']:.3f} | "
                   f"{e['sketches_per_s']:.0f} |")
    else:
      lines.append(f"| train step | {e['precision']} | {e['jit_compile']} | "
                   f"{e.get('error') or e.get('skipped')} | | |")
  if res["sample"]:
    s = res["sample"]
    lines.append(f"| batched sample, {s['num']} sketches (max_len "
                 f"{s['max_len']}) | float32 | False | | {s['seconds']:.2f} | "
                 f"{s['sketches_per_s']:.0f} |")
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  res = run(FLAGS.dry_run, FLAGS.steps, FLAGS.seq_len, FLAGS.num_samples,
            FLAGS.deadline_s)
  ensure_dir(FLAGS.out_dir, "--out_dir")
  atomic_write_text(os.path.join(FLAGS.out_dir, "gpu_bench.json"),
                    json.dumps(res, indent=2, default=str) + "\n")
  atomic_write_text(os.path.join(FLAGS.out_dir, "gpu_bench.md"), table(res))
  print(table(res))
  failed = [e for e in res["train"] if "error" in e]
  if failed:
    sys.exit(f"gpu_bench: {len(failed)} configuration(s) failed")


if __name__ == "__main__":
  app.run(main)
