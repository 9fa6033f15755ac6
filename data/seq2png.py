"""Stroke files -> image files: ``<category>.npz`` -> ``<category>_png.npz``.

  python -m data.seq2png --data_dir DIR --categories cat,pig [--png_width 48]
      [--out_dir DIR] [--workers 2]

Each output has the keys train / valid / test with the same order and lengths
as the stroke file, each a uint8 (N, png_width, png_width) array rendered by
data.raster (method.md §1 geometry: white background, black 1 px strokes).
The file is written atomically (temp file + rename); ``--out_dir`` defaults to
``--data_dir`` (use it when the stroke files sit in a read-only folder).
"""
import os

from utils import quiet  # noqa: F401  (first: quiets TensorFlow's start-up)
from absl import app
from absl import flags

from data import raster
from data.strokes import SPLITS, load_strokes_npz
from utils.errors import (UserError, check_argv, cli_main, parse_flags,
                          require_flags, require_min)
from utils import ownership
from utils.io import atomic_savez, ensure_dir
from utils.progress import Progress

FLAGS = flags.FLAGS
if __name__ == "__main__":
  flags.DEFINE_string("data_dir", None, "folder with <category>.npz stroke files")
  flags.DEFINE_list("categories", None, "comma-separated category names")
  flags.DEFINE_integer("png_width", 48, "image side in pixels")
  flags.DEFINE_string("out_dir", None, "output folder (default: --data_dir)")
  flags.DEFINE_integer("workers", 2, "processes used for rendering")

MIN_WIDTH = 8


def stroke_path(data_dir, category):
  return os.path.join(data_dir, f"{category}.npz")


def png_path(out_dir, category):
  return os.path.join(out_dir, f"{category}_png.npz")


def render_splits(strokes, png_width=48, workers=2, label="", progress=True):
  """{split: [stroke-3 arrays]} -> {split: uint8 (N, w, w)}, one progress bar."""
  total = sum(len(strokes[s]) for s in SPLITS)
  images = {}
  with Progress(total, label, unit="sketch", enabled=progress) as bar:
    for split in SPLITS:
      images[split] = raster.render_many(strokes[split], png_width, workers,
                                         chunk_callback=bar.update)
  return images


def check_width(png_width):
  if not isinstance(png_width, int) or png_width < MIN_WIDTH:
    raise UserError(f"--png_width must be an integer >= {MIN_WIDTH}, "
                    f"got {png_width!r}")


def convert_category(data_dir, category, png_width=48, out_dir=None, workers=2,
                     progress=True):
  """Renders ``<data_dir>/<category>.npz`` to ``<out_dir>/<category>_png.npz``.

  Returns the output path.  UserError for a missing folder or stroke file, an
  invalid stroke file (see data.strokes.load_strokes_npz) or an unwritable
  output folder; nothing is written in those cases.
  """
  check_width(png_width)
  if not os.path.isdir(data_dir):
    raise UserError(f"--data_dir {data_dir!r} is not a directory")
  src = stroke_path(data_dir, category)
  if not os.path.isfile(src):
    raise UserError(f"category {category!r}: stroke file {src!r} does not exist")
  dst = png_path(data_dir if out_dir is None else out_dir, category)
  ownership.check_replaceable(dst, "data", "--out_dir")
  out_dir = ensure_dir(data_dir if out_dir is None else out_dir)
  strokes = load_strokes_npz(src)
  images = render_splits(strokes, png_width, workers, f"{category}", progress)
  atomic_savez(dst, role="data", **images)
  return dst


def convert(data_dir, categories, png_width=48, out_dir=None, workers=2,
            progress=True):
  """convert_category for each category, after checking every input exists."""
  if not categories:
    raise UserError("--categories is empty: give at least one category name")
  if not os.path.isdir(data_dir):
    raise UserError(f"--data_dir {data_dir!r} is not a directory")
  missing = [c for c in categories if not os.path.isfile(stroke_path(data_dir, c))]
  if missing:
    raise UserError(f"no stroke file for categor{'y' if len(missing) == 1 else 'ies'}"
                    f" {', '.join(missing)} in {data_dir!r} (expected "
                    f"{os.path.basename(stroke_path(data_dir, missing[0]))})")
  check_width(png_width)
  for c in categories:   # every output checked before the first is written
    ownership.check_replaceable(
        png_path(data_dir if out_dir is None else out_dir, c), "data", "--out_dir")
  ensure_dir(data_dir if out_dir is None else out_dir)
  return [convert_category(data_dir, c, png_width, out_dir, workers, progress)
          for c in categories]


@cli_main
def main(argv):
  check_argv(argv)
  require_flags(FLAGS, "data_dir")
  require_min(FLAGS, 1, "workers")
  for path in convert(FLAGS.data_dir, FLAGS.categories or [], FLAGS.png_width,
                      FLAGS.out_dir, FLAGS.workers):
    print(f"wrote {path}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
