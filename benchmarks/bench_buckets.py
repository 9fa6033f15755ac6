"""Training sketches/s with length-bucketed batches vs padded ones.

  python -m benchmarks.bench_buckets [--batches 16] [--data_dir DIR]

On the three real sets of ../shared/data (aaron_sheep, omniglot, kanji.rdp200;
images rendered into a temporary folder, or --data_dir with them), small
preset, the same initial model, the compiled train step (warm-up over: every
step a stroke step) fed by make_dataset(training=True) with
  padded   length_buckets=0: every batch padded to max_seq_len (one trace);
  longest  length_buckets (the preset's, or --nbins): batches of one bin of
           within-category length rank (data/pipeline.py), each padded to
           its longest sketch, free time dimension (one trace) -- the default;
  bucket   the same batches padded to their length bucket's boundary, static
           shapes (one trace per bucket, as under XLA).
The first --batches batches of epoch 0 of each, interleaved (one batch of each
per round, so machine load hits all alike); calls that traced are not timed.
Reports sketches/s of each and the ratios to ``padded``.
"""
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
if __name__ == "__main__":
  flags.DEFINE_integer("batches", 16, "timed batches per variant")
  flags.DEFINE_string("data_dir", None, "folder with the three sets and _png")
  flags.DEFINE_integer("nbins", 0, "length_buckets (0: the small preset's)")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks.bench_pipeline import REAL, prepare  # noqa: E402
from data.dataset import load_dataset  # noqa: E402
from data.pipeline import bucket_boundaries, make_dataset  # noqa: E402
from hparams import get_hparams  # noqa: E402
from model.storage.checkpoint import build_model  # noqa: E402
from model.training.threads import configure_threads  # noqa: E402

VARIANTS = ("padded", "longest", "bucket")


def _step_fn(model, variant):
  if variant == "bucket":   # static shapes: a trace per distinct length
    return tf.function(model.train_step, autograph=False)
  return model.compiled_train_step()


def run(batches=16, data_dir=None, nbins=None, log=print):
  configure_threads()
  tmp = None
  if data_dir is None:
    tmp = tempfile.TemporaryDirectory(prefix="bench_buckets_")
    data_dir = tmp.name
    prepare("real", data_dir)
  over = f"categories=[{','.join(REAL)}],warmup_steps=0"
  base = get_hparams("small", over)
  data = load_dataset(data_dir, base)
  base = base.replace(max_seq_len=data.max_seq_len,
                      scale_factor=data.scale_factor)
  nbins = nbins or base.length_buckets
  train = data.splits["train"]
  lengths = np.array([len(s) for s in train.strokes])
  res = dict(max_seq_len=data.max_seq_len, train_sketches=len(train),
             mean_length=float(lengths.mean()),
             length_buckets=nbins,
             boundaries=bucket_boundaries(lengths, nbins, data.max_seq_len).tolist())
  state, runs = None, {}
  for variant in VARIANTS:
    hps = base.replace(length_buckets=0 if variant == "padded" else nbins,
                       jit_compile=False)
    model = build_model(hps, seed=0)
    if state is None:
      state = [v.numpy() for v in model.variables]
    for v, value in zip(model.variables, state):
      v.assign(value)
    pipe_hps = hps.replace(jit_compile=variant == "bucket")   # pad to bucket
    ds = make_dataset(train, pipe_hps, hps.max_seq_len, training=True, seed=0)
    runs[variant] = dict(fn=_step_fn(model, variant), it=iter(ds), time=0.0,
                         sketches=0, steps=0, padded_steps=0)
  for _ in range(batches):
    for variant, r in runs.items():
      batch = next(r["it"])
      traces = r["fn"].experimental_get_tracing_count()
      start = time.perf_counter()
      float(r["fn"](batch)["total"])
      seconds = time.perf_counter() - start
      if r["fn"].experimental_get_tracing_count() == traces:
        r["time"] += seconds
        r["sketches"] += int(batch[0].shape[0])
        r["steps"] += 1
        r["padded_steps"] += int(batch[0].shape[1]) - 1
  for variant, r in runs.items():
    res[f"{variant}_sketches_per_s"] = r["sketches"] / max(r["time"], 1e-9)
    res[f"{variant}_mean_padded_len"] = r["padded_steps"] / max(r["steps"], 1)
    res[f"{variant}_traces"] = r["fn"].experimental_get_tracing_count()
    res[f"{variant}_timed_steps"] = r["steps"]
  for variant in VARIANTS[1:]:
    res[f"{variant}_vs_padded"] = (res[f"{variant}_sketches_per_s"]
                                   / res["padded_sketches_per_s"])
  res.update(no_padding_bound(res, base.batch_size))
  if tmp is not None:
    tmp.cleanup()
  log(report(res))
  return res


def no_padding_bound(res, batch_size):
  """The most any batching could gain: the step time as a + b * (padded
  length), fitted to the padded and longest variants, evaluated at the mean
  sketch length (no padding at all) -> {fixed_ms, per_point_ms, bound}."""
  t_pad = batch_size / res["padded_sketches_per_s"]
  t_long = batch_size / res["longest_sketches_per_s"]
  l_pad, l_long = res["padded_mean_padded_len"], res["longest_mean_padded_len"]
  per_point = (t_pad - t_long) / max(l_pad - l_long, 1e-9)
  fixed = t_pad - per_point * l_pad
  return dict(fixed_ms=1e3 * fixed, per_point_ms=1e3 * per_point,
              no_padding_bound_vs_padded=t_pad / (fixed + per_point
                                                  * res["mean_length"]))


def report(res):
  lines = [f"length buckets, small preset, 3 real sets ({res['train_sketches']} "
           f"train sketches, mean length {res['mean_length']:.0f}, max_seq_len "
           f"{res['max_seq_len']}, length_buckets {res['length_buckets']}, "
           f"boundaries {res['boundaries']}):"]
  for variant in VARIANTS:
    ratio = res.get(f"{variant}_vs_padded")
    lines.append(f"  {variant:<8} {res[f'{variant}_sketches_per_s']:8.1f} "
                 f"sketches/s, mean padded length "
                 f"{res[f'{variant}_mean_padded_len']:5.1f}, "
                 f"{res[f'{variant}_traces']} trace(s)"
                 + (f", {ratio:.2f}x padded" if ratio else ""))
  lines.append(f"  step = {res['fixed_ms']:.0f} ms + {res['per_point_ms']:.2f} ms "
               f"per padded point: with no padding at all (mean length "
               f"{res['mean_length']:.0f}) at most "
               f"{res['no_padding_bound_vs_padded']:.2f}x padded")
  return "\n".join(lines)


def main(argv):
  del argv
  run(FLAGS.batches, FLAGS.data_dir, FLAGS.nbins or None)


if __name__ == "__main__":
  app.run(main)
