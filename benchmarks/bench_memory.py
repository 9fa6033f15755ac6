"""Peak memory of loading a full-size data set (it must stay under 4 GB).

  python -m benchmarks.bench_memory [--categories 8] [--per_category 70000]
      [--keep_data DIR]

Writes generated data of the paper's size -- ``categories`` x ``per_category``
training sketches (plus 2,500 validation and 2,500 test sketches each, as
QuickDraw) in the sketch-rnn format (object arrays of int16 (n, 3)) with their
48x48 uint8 images -- to a temporary folder, then runs
``data.dataset.load_dataset`` on it in a fresh subprocess and reports that
process's peak resident set size (VmHWM, reset at its start), next to the
RSS of the same process before loading (Python + NumPy + the imports) and the size of the
loaded arrays themselves.

Sketch lengths follow a log-normal with median 50 points, clipped to [5, 250]
(QuickDraw's simplified sketches: mean ~55, at most 250 after sketch-rnn's
filtering); offsets are random.  Image content does not matter for memory, so
images are random bytes.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
if __name__ == "__main__":
  flags.DEFINE_integer("categories", 8, "number of categories")
  flags.DEFINE_integer("per_category", 70000, "training sketches per category")
  flags.DEFINE_string("keep_data", None, "write the data here and keep it")

import numpy as np  # noqa: E402

from utils.errors import UserError, cli_main, parse_flags  # noqa: E402

LIMIT_MB = 4096
EVAL_SPLIT = 2500
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def random_sketches(num, rng, median_len=50, max_len=250):
  """``num`` stroke-3 int16 sketches of realistic lengths (object array)."""
  lens = np.clip(np.round(rng.lognormal(np.log(median_len), 0.5, num)), 5,
                 max_len).astype(np.int64)
  flat = np.empty((int(lens.sum()), 3), np.int16)
  flat[:, :2] = rng.integers(-40, 41, size=(len(flat), 2))
  flat[:, 2] = rng.random(len(flat)) < 0.1
  ends = np.cumsum(lens)
  flat[ends - 1, 2] = 1
  out = np.empty(num, dtype=object)
  for i, piece in enumerate(np.split(flat, ends[:-1])):
    out[i] = piece
  return out


def write_data(folder, categories, per_category, width=48, seed=0):
  """Writes ``<cat>.npz`` + ``<cat>_png.npz`` for ``categories`` categories;
  returns (category names, total sketches)."""
  rng = np.random.default_rng(seed)
  names = [f"cat{i}" for i in range(categories)]
  sizes = {"train": per_category, "valid": EVAL_SPLIT, "test": EVAL_SPLIT}
  for name in names:
    strokes = {k: random_sketches(n, rng) for k, n in sizes.items()}
    np.savez(os.path.join(folder, f"{name}.npz"), **strokes)
    images = {k: rng.integers(0, 256, (n, width, width), dtype=np.uint8)
              for k, n in sizes.items()}
    np.savez(os.path.join(folder, f"{name}_png.npz"), **images)
  return names, categories * sum(sizes.values())


CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r})
import numpy as np
from data.dataset import load_dataset
from hparams import get_hparams

def peak_mb():
  # VmHWM after resetting it (a forked child starts with its parent's
  # high-water mark, which ru_maxrss keeps); ru_maxrss if /proc lacks it.
  try:
    with open("/proc/self/status") as f:
      return next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) / 1024.0
  except (OSError, StopIteration):
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

try:
  with open("/proc/self/clear_refs", "w") as f:
    f.write("5")   # reset the peak RSS counter
except OSError:
  pass
before = peak_mb()
hps = get_hparams("paper", "categories=[{cats}],num_per_category={n}")
start = time.perf_counter()
data = load_dataset({folder!r}, hps)
seconds = time.perf_counter() - start
peak = peak_mb()
nbytes = 0
for sp in data.splits.values():
  nbytes += sp.images.nbytes + sp.labels.nbytes
  strokes = getattr(sp.strokes, "nbytes_total", None)
  nbytes += strokes if strokes is not None else sum(s.nbytes for s in sp.strokes)
print(json.dumps(dict(rss_before_mb=before, peak_rss_mb=peak, load_s=seconds,
                      sketches=sum(len(sp) for sp in data.splits.values()),
                      loaded_arrays_mb=nbytes / 2 ** 20,
                      max_seq_len=data.max_seq_len)))
"""


def measure(folder, names, per_category):
  """Runs load_dataset in a subprocess; returns its JSON result."""
  code = CHILD.format(root=ROOT, folder=folder, cats=",".join(names),
                      n=per_category)
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                        text=True, check=False)
  if proc.returncode != 0:
    raise RuntimeError(f"load_dataset subprocess failed:\n{proc.stderr[-2000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def run(categories=8, per_category=70000, keep_data=None):
  """Generates the data, measures the load; returns a dict (MB, seconds)."""
  folder = keep_data or tempfile.mkdtemp(prefix="bench_memory-")
  os.makedirs(folder, exist_ok=True)
  try:
    start = time.perf_counter()
    names, total = write_data(folder, categories, per_category)
    gen_s = time.perf_counter() - start
    on_disk = sum(os.path.getsize(os.path.join(folder, f))
                  for f in os.listdir(folder))
    res = dict(categories=categories, per_category=per_category,
               generated_sketches=total, generate_s=gen_s,
               files_mb=on_disk / 2 ** 20, limit_mb=LIMIT_MB)
    res.update(measure(folder, names, per_category))
    res["under_limit"] = res["peak_rss_mb"] < LIMIT_MB
    return res
  finally:
    if not keep_data:
      shutil.rmtree(folder, ignore_errors=True)


def report(res):
  return "\n".join([
      f"memory benchmark: {res['categories']} categories x "
      f"{res['per_category']} training sketches (+ valid/test), 48x48 images",
      f"  files {res['files_mb']:.0f} MB; loaded arrays {res['loaded_arrays_mb']:.0f}"
      f" MB ({res['sketches']} sketches, max_seq_len {res['max_seq_len']})",
      f"  load_dataset: {res['load_s']:.1f} s, peak RSS {res['peak_rss_mb']:.0f} MB"
      f" (process before loading: {res['rss_before_mb']:.0f} MB); limit "
      f"{res['limit_mb']} MB: {'OK' if res['under_limit'] else 'EXCEEDED'}",
  ])


@cli_main
def main(argv):
  del argv
  if FLAGS.categories < 1 or FLAGS.per_category < 1:
    raise UserError("--categories and --per_category must be >= 1")
  print(report(run(FLAGS.categories, FLAGS.per_category, FLAGS.keep_data)))


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
