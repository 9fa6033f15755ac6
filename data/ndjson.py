"""QuickDraw's own release files (.ndjson) -> sketch-rnn stroke files.

  python -m data.ndjson --input cat.ndjson[,dog.ndjson.gz,...] --out_dir DIR
      [--categories cat,dog] [--recognized_only] [--max_len 0] [--seed 0]
      [--num_train 70000 --num_valid 2500 --num_test 2500]
      [--png_width 48] [--norender] [--workers 2]

Reads QuickDraw's raw files (``full/raw/<cat>.ndjson``: every stroke is
``[[x...], [y...], [t...]]``) or simplified files (``full/simplified/``:
``[[x...], [y...]]``), one JSON drawing per line, plain or gzipped, and writes
``<out_dir>/<cat>.npz`` like the sketchrnn files: keys train / valid / test,
object arrays of int16 (n, 3) stroke-3 sketches, loadable by
data.dataset.load_dataset; then ``<cat>_png.npz`` (data.seq2png's images)
unless ``--norender``.  ``<cat>`` is the input's file name without
``.ndjson[.gz]`` unless ``--categories`` names the outputs.

A raw drawing is simplified the way QuickDraw made its simplified files, and
every drawing is then written as sketch-rnn's stroke-3 (data/simplify.py):
1. raw: align, the minimum x and y over all strokes move to 0;
2. raw: scale both axes by one factor so that the longer side spans 255;
3. raw: resample each stroke at 1-pixel spacing along its length (its first
   and last points kept; the timestamps are not used);
4. raw: simplify each stroke with Ramer-Douglas-Peucker, epsilon 2.0;
5. round to integers and drop a point equal to the one before it;
6. stroke-3: the first row is the first point (the offset from (0, 0)), each
   next row the offset from the point before, pen = 1 on each stroke's last.
Simplified input went through steps 1-5 at QuickDraw (aligning or scaling it
again would move drawings whose simplification dropped an extreme point, and
RDP again on its rounded points could drop points QuickDraw kept).  The
format is detected per line: 3 lists per stroke are raw, 2 simplified.

``--recognized_only`` keeps drawings whose ``"recognized"`` is true;
``--max_len N`` drops sketches of more than N points after conversion (0: no
limit); drawings without points are dropped.  A line that is not JSON, or
whose ``"drawing"`` is not a list of strokes of 2 or 3 equally long lists of
finite numbers, is malformed: counted and reported (with the first one's line
number and reason), not fatal, unless no line is usable.

Split (:func:`split_sizes`): the kept drawings are shuffled with ``--seed``
and cut into train / valid / test of the requested sizes (sketchrnn's 70000 /
2500 / 2500 by default; drawings beyond their sum are not used).  When fewer
are kept, valid and test get the same fraction of the kept drawings as of the
requested total, rounded down but at least 1 each, and train the rest.
Outputs are written atomically; a mistake is a one-line error (exit 2).
"""
import gzip
import json
import multiprocessing
import os
import zlib

from utils import quiet  # noqa: F401  (first: quiets TensorFlow's start-up)
import numpy as np
from absl import app
from absl import flags

from data import seq2png
from data.simplify import drawing_to_stroke3
from data.strokes import SPLITS
from utils import ownership
from utils.errors import (UserError, check_argv, cli_main, parse_flags,
                          require_flags, require_min)
from utils.io import atomic_savez, ensure_dir
from utils.progress import Progress

FLAGS = flags.FLAGS
if __name__ == "__main__":
  flags.DEFINE_list("input", None, "QuickDraw .ndjson or .ndjson.gz files, "
                    "raw or simplified (comma-separated)")
  flags.DEFINE_string("out_dir", None, "folder for <category>.npz and _png.npz")
  flags.DEFINE_list("categories", None, "output names, one per --input "
                    "(default: the input file names without .ndjson[.gz])")
  flags.DEFINE_boolean("recognized_only", False,
                       "keep only drawings the game recognized")
  flags.DEFINE_integer("max_len", 0, "drop sketches of more points (0: no limit)")
  flags.DEFINE_integer("num_train", 70000, "training sketches per category")
  flags.DEFINE_integer("num_valid", 2500, "validation sketches per category")
  flags.DEFINE_integer("num_test", 2500, "test sketches per category")
  flags.DEFINE_integer("seed", 0, "seed of the shuffle before the split")
  flags.DEFINE_boolean("render", True, "also write <category>_png.npz")
  flags.DEFINE_integer("png_width", 48, "image side in pixels")
  flags.DEFINE_integer("workers", 2, "processes used for converting and rendering")

LINES_PER_JOB = 2000
MAX_COORD = 16383   # simplified input: offsets must fit int16


# --- one line of a file -----------------------------------------------------

def parse_line(line, recognized_only=False):
  """One ndjson line -> (status, value): ("ok", int16 stroke-3),
  ("malformed", reason), ("unrecognized", None), ("empty", None) or
  ("blank", None)."""
  if isinstance(line, bytes):
    line = line.decode("utf-8", "replace")
  if not line.strip():
    return "blank", None
  try:
    obj = json.loads(line)
  except ValueError as e:   # json.JSONDecodeError, or bad UTF-8 surrogates
    return "malformed", f"not JSON ({getattr(e, 'msg', str(e))[:60]})"
  except RecursionError:
    return "malformed", "not JSON (nested too deeply)"
  if not isinstance(obj, dict) or not isinstance(obj.get("drawing"), list):
    return "malformed", 'no "drawing" list'
  if recognized_only and obj.get("recognized") is not True:
    return "unrecognized", None
  strokes, arity = [], set()
  for i, stroke in enumerate(obj["drawing"]):
    if not (isinstance(stroke, list) and len(stroke) in (2, 3)
            and all(isinstance(c, list) for c in stroke)):
      return "malformed", f"stroke {i} is not 2 or 3 coordinate lists"
    if len({len(c) for c in stroke}) != 1:
      return "malformed", f"stroke {i} has coordinate lists of unequal length"
    if not all(type(v) in (int, float) for c in stroke[:2] for v in c):
      return "malformed", f"stroke {i} has non-numeric coordinates"
    xy = np.array(stroke[:2], np.float64).T
    if not np.isfinite(xy).all():
      return "malformed", f"stroke {i} has non-finite coordinates"
    if len(stroke) == 2 and np.abs(xy).max(initial=0) > MAX_COORD:
      return "malformed", (f"stroke {i} has coordinates beyond +-{MAX_COORD} "
                           f"(simplified drawings span 0..255)")
    arity.add(len(stroke))
    strokes.append(xy)
  if len(arity) > 1:
    return "malformed", "mixes raw (x, y, t) and simplified (x, y) strokes"
  sketch = drawing_to_stroke3(strokes, raw=arity == {3})
  return ("empty", None) if sketch is None else ("ok", sketch)


def _parse_job(job):
  lines, recognized_only = job
  return [parse_line(line, recognized_only) for line in lines]


# --- a whole file -----------------------------------------------------------

def _open(path):
  """(binary line iterator, raw file) of a plain or gzipped file."""
  try:
    raw = open(path, "rb")
  except OSError as e:
    raise UserError(f"cannot read --input {path!r}: {e.strerror}") from None
  magic = raw.read(2)
  raw.seek(0)
  return (gzip.GzipFile(fileobj=raw) if magic == b"\x1f\x8b" else raw), raw


def _batches(lines, recognized_only, path, jobs_per_batch):
  """Lists of ``jobs_per_batch`` jobs of LINES_PER_JOB lines: a bounded part
  of the file is in memory at a time."""
  batch, job = [], []
  try:
    for line in lines:
      job.append(line)
      if len(job) == LINES_PER_JOB:
        batch.append((job, recognized_only))
        job = []
        if len(batch) == jobs_per_batch:
          yield batch
          batch = []
  except (OSError, EOFError, zlib.error) as e:
    raise UserError(f"cannot read --input {path!r}: truncated or corrupt "
                    f"gzip file ({e})") from None
  if job:
    batch.append((job, recognized_only))
  if batch:
    yield batch


def read_drawings(path, recognized_only=False, max_len=0, workers=2,
                  progress=True):
  """Converts every drawing of ``path`` -> (list of int16 stroke-3, counts).

  ``counts``: lines, ok, malformed, unrecognized, empty, too_long and
  first_malformed ("line N: reason" or None).  UserError when no line is
  usable or no drawing survives the filters."""
  lines, raw = _open(path)
  counts = dict(lines=0, ok=0, malformed=0, unrecognized=0, empty=0,
                too_long=0, first_malformed=None)
  sketches = []
  pool = multiprocessing.get_context("fork").Pool(workers) if workers > 1 \
      else None
  name = os.path.basename(path)
  lineno = 0
  try:
    with Progress(os.path.getsize(path), name, unit="B",
                  enabled=progress) as bar:
      for batch in _batches(lines, recognized_only, path, 4 * workers):
        for part in (pool.imap(_parse_job, batch) if pool
                     else map(_parse_job, batch)):
          for status, value in part:
            lineno += 1
            if status == "blank":
              continue
            if status == "ok" and max_len and len(value) > max_len:
              status = "too_long"
            counts["lines"] += 1
            counts[status] += 1
            if status == "ok":
              sketches.append(value)
            elif status == "malformed" and counts["first_malformed"] is None:
              counts["first_malformed"] = f"line {lineno}: {value}"
        bar.update(raw.tell() - bar.count)
  finally:
    if pool is not None:
      pool.terminate()
    raw.close()
  _check_counts(path, counts, recognized_only, max_len)
  return sketches, counts


def _check_counts(path, c, recognized_only, max_len):
  if c["lines"] == 0:
    raise UserError(f"--input {path!r} holds no drawings (expected one JSON "
                    f"object per line, as QuickDraw's .ndjson files)")
  if c["malformed"] == c["lines"]:
    raise UserError(f"--input {path!r}: none of its {c['lines']} lines is a "
                    f"QuickDraw drawing ({c['first_malformed']})")
  if c["ok"] == 0:
    why = []
    if recognized_only and c["unrecognized"]:
      why.append(f"{c['unrecognized']} not recognized (--recognized_only)")
    if c["too_long"]:
      why.append(f"{c['too_long']} longer than --max_len={max_len}")
    if c["empty"]:
      why.append(f"{c['empty']} without points")
    raise UserError(f"--input {path!r}: no drawing left to write "
                    f"({', '.join(why) or 'all skipped'})")


def split_sizes(n, wanted=(70000, 2500, 2500)):
  """(train, valid, test) sizes for ``n`` kept drawings (module docstring)."""
  wanted = tuple(int(w) for w in wanted)
  total = sum(wanted)
  if n >= total:
    return wanted
  needed = sum(1 for w in wanted if w > 0)
  if n < needed:
    raise UserError(f"only {n} drawing(s) left: need at least {needed} for "
                    f"non-empty train / valid / test splits")
  valid, test = (max(1 if w else 0, n * w // total) for w in wanted[1:])
  return n - valid - test, valid, test


def split(sketches, sizes, seed=0):
  """{split: object array of stroke-3} after a seeded shuffle."""
  order = np.random.default_rng(seed).permutation(len(sketches))
  out, start = {}, 0
  for name, size in zip(SPLITS, sizes):
    arr = np.empty(size, dtype=object)
    for i, j in enumerate(order[start:start + size]):
      arr[i] = sketches[j]
    out[name], start = arr, start + size
  return out


def category_name(path):
  base = os.path.basename(path)
  for ext in (".gz", ".ndjson", ".json"):
    base = base[:-len(ext)] if base.endswith(ext) else base
  return base


def _report(category, c, sizes):
  parts = [f"{category}: {c['lines']} lines, {c['ok']} drawings kept"]
  for key, text in (("unrecognized", "not recognized"), ("too_long",
                    "longer than --max_len"), ("empty", "without points")):
    if c[key]:
      parts.append(f"{c[key]} {text}")
  if c["malformed"]:
    parts.append(f"{c['malformed']} malformed lines skipped (first: "
                 f"{c['first_malformed']})")
  return ", ".join(parts) + f"; train/valid/test {'/'.join(map(str, sizes))}"


def convert(inputs, out_dir, categories=None, recognized_only=False, max_len=0,
            sizes=(70000, 2500, 2500), seed=0, render=True, png_width=48,
            workers=2, progress=True):
  """Converts every input file; returns [(stroke path, report line)].
  Every input and output is checked before the first file is read."""
  if not inputs:
    raise UserError("--input is required, e.g. --input cat.ndjson")
  categories = list(categories or [category_name(p) for p in inputs])
  if len(categories) != len(inputs):
    raise UserError(f"--categories names {len(categories)} outputs for "
                    f"{len(inputs)} --input files: give one name per file")
  if len(set(categories)) != len(categories):
    raise UserError(f"two inputs would both write {categories!r}: name them "
                    f"with --categories")
  for path in inputs:
    if os.path.isdir(path):
      raise UserError(f"--input {path!r} is a folder, expected an .ndjson file")
    if not os.path.isfile(path):
      raise UserError(f"--input {path!r} does not exist")
  if min(sizes) < 0 or sum(sizes) == 0:
    raise UserError(f"--num_train/--num_valid/--num_test must be >= 0 and not "
                    f"all 0, got {'/'.join(map(str, sizes))}")
  if max_len < 0:
    raise UserError(f"--max_len must be >= 0 (0: no limit), got {max_len}")
  if render:
    seq2png.check_width(png_width)
  out_dir = ensure_dir(out_dir)
  for cat in categories:
    for path in ([os.path.join(out_dir, f"{cat}.npz")]
                 + ([seq2png.png_path(out_dir, cat)] if render else [])):
      ownership.check_replaceable(path, "data", "--out_dir")
  done = []
  for path, cat in zip(inputs, categories):
    sketches, counts = read_drawings(path, recognized_only, max_len, workers,
                                     progress)
    n = split_sizes(len(sketches), sizes)
    splits = split(sketches, n, seed)
    dst = os.path.join(out_dir, f"{cat}.npz")
    atomic_savez(dst, role="data", **splits)
    if render:
      images = seq2png.render_splits(
          {k: [s.astype(np.float32) for s in v] for k, v in splits.items()},
          png_width, workers, f"{cat} images", progress)
      atomic_savez(seq2png.png_path(out_dir, cat), role="data", **images)
    done.append((dst, _report(cat, counts, n)))
  return done


@cli_main
def main(argv):
  check_argv(argv)
  require_flags(FLAGS, "out_dir")
  require_min(FLAGS, 1, "workers")
  for path, report in convert(
      FLAGS.input, FLAGS.out_dir, FLAGS.categories, FLAGS.recognized_only,
      FLAGS.max_len, (FLAGS.num_train, FLAGS.num_valid, FLAGS.num_test),
      FLAGS.seed, FLAGS.render, FLAGS.png_width, FLAGS.workers):
    print(report)
    print(f"wrote {path}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
