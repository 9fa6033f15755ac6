"""Input-pipeline throughput: training batches/second with augmentation.

Builds the training split at the ``small`` preset (batch 64) from either the
embedded synthetic data (default; generated into a temporary folder) or the
real sketches of ../shared/data (``--source real``; images rendered into a
temporary folder), then measures
  - ``numpy_batches_per_s``: one thread calling BatchMaker.batch directly;
  - ``pipeline_batches_per_s``: iterating make_dataset(training=True) (parallel
    map + prefetch), i.e. what the training loop can consume at most;
  - the same with rotation/translation switched on (``..._rot_trans``);
  - for each, the process CPU time per batch (``*_cpu_ms_per_batch``, all
    threads), which does not depend on how busy the machine is.
A training step must take far longer than 1 / pipeline_batches_per_s (the
trainer's benchmark compares the two; >= 10x headroom is the target).

  python -m benchmarks.bench_pipeline [--source synthetic|real] [--batches 300]
"""
import os
import shutil
import sys
import tempfile
import time

from absl import app
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

import numpy as np  # pylint: disable=wrong-import-position

from data import seq2png, synthetic  # pylint: disable=wrong-import-position
from data.dataset import load_dataset  # pylint: disable=wrong-import-position
from data.pipeline import BatchMaker, make_dataset  # pylint: disable=wrong-import-position
from hparams import get_hparams  # pylint: disable=wrong-import-position
from utils.errors import (  # pylint: disable=wrong-import-position
    UserError, cli_main, parse_flags)

FLAGS = flags.FLAGS
if __name__ == "__main__":
  flags.DEFINE_enum("source", "synthetic", ["synthetic", "real"], "which sketches")
  flags.DEFINE_integer("batches", 300, "batches to time per measurement")

REAL = ["aaron_sheep", "omniglot", "kanji.rdp200"]
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")


def prepare(source, folder):
  """Writes the data set into ``folder``; returns its category list."""
  if source == "synthetic":
    synthetic.generate(folder, seed=0, sizes=(2000, 100, 100), contact_sheet=False)
    return list(synthetic.CATEGORIES)
  if not os.path.isdir(SHARED):
    raise UserError(f"--source real needs the shared data folder {SHARED!r}")
  for cat in REAL:
    shutil.copy(os.path.join(SHARED, f"{cat}.npz"), folder)
    seq2png.convert_category(folder, cat, 48, progress=False)
  return REAL


def time_iter(iterable, n):
  """-> (items per wall second, process CPU ms per item) over ``n`` items."""
  it = iter(iterable)
  next(it)  # warm-up: tracing, first fill of the prefetch buffer
  start, cpu = time.perf_counter(), time.process_time()
  count = 0
  for _ in range(n):
    try:
      next(it)
    except StopIteration:
      it = iter(iterable)
      next(it)
    count += 1
  del it
  return (count / (time.perf_counter() - start),
          1000.0 * (time.process_time() - cpu) / count)


def run(source="synthetic", batches=300, data_dir=None, categories=None):
  """Measures the pipeline; returns a dict of the numbers (see module doc).

  ``data_dir`` + ``categories``: use an existing data set instead of ``source``.
  """
  tmp = None
  try:
    if data_dir is None:
      tmp = data_dir = tempfile.mkdtemp(prefix="bench_pipeline-")
      categories = prepare(source, data_dir)
    elif not categories:
      raise UserError("run(data_dir=...) needs the categories to load")
    hps = get_hparams("small", f"categories=[{','.join(categories)}]")
    data = load_dataset(data_dir, hps)
    train = data.splits["train"]
    maker = BatchMaker(train, hps, data.max_seq_len, True, 0, True)
    n_per_epoch = len(train) // hps.batch_size
    direct, direct_cpu = time_iter((maker.batch(0, b % n_per_epoch) for b in range(10 ** 9)),
                       min(batches, 200))
    result = {
        "source": source if tmp else data_dir,
        "batch_size": hps.batch_size,
        "max_seq_len": data.max_seq_len,
        "train_sketches": len(train),
        "mean_len": float(np.mean([len(s) for s in train.strokes])),
        "numpy_batches_per_s": direct,
        "numpy_cpu_ms_per_batch": direct_cpu,
    }
    for key, over in (("pipeline_batches_per_s", {}),
                      ("pipeline_batches_per_s_rot_trans",
                       dict(png_rotate_angle=10.0, png_translate_dist=2.0))):
      ds = make_dataset(train, hps.replace(**over), data.max_seq_len,
                        training=True, seed=0)
      result[key], result[key.replace("batches_per_s", "cpu_ms_per_batch")] = (
          time_iter(ds, batches))
    return result
  finally:
    if tmp:
      shutil.rmtree(tmp, ignore_errors=True)


@cli_main
def main(argv):
  del argv
  res = run(FLAGS.source, FLAGS.batches)
  for k, v in res.items():
    print(f"{k}: {v:.1f}" if isinstance(v, float) else f"{k}: {v}")
  print(f"=> the pipeline delivers one batch every "
        f"{1000.0 / res['pipeline_batches_per_s']:.1f} ms using "
        f"{res['pipeline_cpu_ms_per_batch']:.1f} ms of CPU; a train step must take "
        f">= {10000.0 / res['pipeline_batches_per_s']:.0f} ms for 10x headroom")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
