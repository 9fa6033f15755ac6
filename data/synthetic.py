"""Embedded default dataset: procedurally drawn sketches (no network needed).

  python -m data.synthetic [--out_dir datasets/synthetic] [--seed 0]
      [--num_train 5000 --num_valid 500 --num_test 500] [--categories ...]

Writes, per category, ``<cat>.npz`` in the exact sketch-rnn format (keys
train / valid / test, object arrays of int16 (n,3) stroke-3 sketches),
``<cat>_png.npz`` (data.raster images, method.md §1) and ``<cat>_styles.npz``
(int32 ground-truth style per sketch, same keys and order), plus
``contact_sheet.png`` (a few sketches of every category and style).

Each category has 2-3 clearly different styles (e.g. fish facing left/right)
so a two-level hierarchy has categories (level l) and styles (level k) to
discover.  Every sketch gets random proportions, jitter and rotation.  Its
strokes come in a person's order (``stroke_order="human"``, the default): the
outline first and the details after it (a face's circle, then its eyes and
mouth), closed loops starting at their top, mostly drawn one way, with a
fifth of the sketches drawing their details in a random order; QuickDraw's
drawings are this regular, and a decoder learns that regularity.
``stroke_order="random"`` permutes every sketch's strokes and starts its loops
anywhere (a harder task, kept for comparison).  Then every sketch goes through
QuickDraw's own simplification
(data/simplify.py: aligned to the top-left, longer side scaled to 255,
resampled at 1 unit, Ramer-Douglas-Peucker at epsilon 2), so the files hold
what QuickDraw would have written: ~15-80 points per sketch (mean ~38), as
sparse as the real sketchrnn files; the raw drawing's point density only
changes how round its curves are.  Deterministic given the seed; a
category's sketches do not depend on which other categories are generated.
"""
import os
import zlib

from utils import quiet  # noqa: F401  (first: quiets TensorFlow's start-up)
import numpy as np
from absl import app
from absl import flags
from PIL import Image, ImageDraw

from data import raster
from data.simplify import drawing_to_stroke3
from utils.errors import (UserError, check_argv, cli_main, parse_flags,
                          require_min)
from utils import ownership
from utils.io import atomic_open, atomic_savez, ensure_dir

SPLITS = ("train", "valid", "test")
MAX_POINTS = 120        # most points of a raw drawing (before simplification)
STROKE_ORDERS = ("human", "random")
DETAIL_SHUFFLE = 0.2    # human order: share of sketches with shuffled details
HUMAN_REVERSE = 0.1     # human order: chance that a stroke runs backwards

FLAGS = flags.FLAGS
if __name__ == "__main__":
  flags.DEFINE_string("out_dir", "datasets/synthetic", "output folder")
  flags.DEFINE_integer("seed", 0, "random seed")
  flags.DEFINE_integer("num_train", 5000, "training sketches per category")
  flags.DEFINE_integer("num_valid", 500, "validation sketches per category")
  flags.DEFINE_integer("num_test", 500, "test sketches per category")
  flags.DEFINE_list("categories", None, "subset of the categories (default all)")
  flags.DEFINE_integer("png_width", 48, "image side in pixels")
  flags.DEFINE_enum("stroke_order", "human", STROKE_ORDERS,
                    "human: outline first, loops from the top; random: any")


# --- primitives: polylines in a y-down canonical frame of about [-1, 1]^2 ---

def line(points, step):
  """Straight edges through ``points`` with ~``step`` spacing, corners kept."""
  points = np.asarray(points, dtype=np.float64)
  out = [points[:1]]
  for p, q in zip(points[:-1], points[1:]):
    n = max(1, int(np.ceil(np.hypot(*(q - p)) / step)))
    out.append(p + (q - p) * (np.arange(1, n + 1) / n)[:, None])
  return np.concatenate(out)


def arc(cx, cy, rx, ry, a0, a1, step):
  """Elliptic arc from angle a0 to a1 (radians, y down)."""
  n = max(3, int(np.ceil(abs(a1 - a0) * max(rx, ry) / step)))
  a = np.linspace(a0, a1, n + 1)
  return np.stack([cx + rx * np.cos(a), cy + ry * np.sin(a)], axis=1)


def loop(cx, cy, rx, ry, step, rng):
  """Closed ellipse starting at a random angle."""
  a0 = rng.uniform(0, 2 * np.pi)
  return arc(cx, cy, rx, ry, a0, a0 + 2 * np.pi, step)


def _u(rng, lo, hi):
  return rng.uniform(lo, hi)


# --- categories: each style returns a list of strokes ---

def house(style, rng, step):
  w, h, roof = _u(rng, 0.75, 1.0), _u(rng, 0.55, 0.8), _u(rng, 0.45, 0.7)
  body = line([(-w, -h + 0.3), (-w, h), (w, h), (w, -h + 0.3)], step)
  top = -h + 0.3
  if style == 1:                          # flat roof, door and window
    body = line([(-w, top), (-w, h), (w, h), (w, top), (-w, top)], step)
    dw = _u(rng, 0.15, 0.22)
    door = line([(-dw, h), (-dw, h - 0.55), (dw, h - 0.55), (dw, h)], step)
    win = line([(w * 0.45, top + 0.2), (w * 0.8, top + 0.2), (w * 0.8, top + 0.5),
                (w * 0.45, top + 0.5), (w * 0.45, top + 0.2)], step)
    return [body, door, win]
  ridge = line([(-w - 0.1, top), (0.0, top - roof), (w + 0.1, top),
                (-w - 0.1, top)], step)
  if style == 0:                          # pointed roof and a door
    dw = _u(rng, 0.15, 0.22)
    return [body, ridge,
            line([(-dw, h), (-dw, h - 0.55), (dw, h - 0.55), (dw, h)], step)]
  x = _u(rng, 0.35, 0.55) * w             # style 2: pointed roof + chimney
  slope_y = top - roof * (1 - x / (w + 0.1))
  chimney = line([(x, slope_y), (x, top - roof - 0.1), (x + 0.2, top - roof - 0.1),
                  (x + 0.2, slope_y + 0.2 * roof / (w + 0.1))], step)
  return [body, ridge, chimney]


def star(style, rng, step):
  r = _u(rng, 0.85, 1.0)
  a0 = -np.pi / 2 + _u(rng, -0.15, 0.15)
  if style == 0:                          # pentagram in one stroke
    a = a0 + np.arange(6) * 4 * np.pi / 5
    return [line(np.stack([r * np.cos(a), r * np.sin(a)], 1), step)]
  if style == 1:                          # outline star, 10 vertices
    inner = _u(rng, 0.35, 0.5)
    a = a0 + np.arange(11) * np.pi / 5
    rad = np.where(np.arange(11) % 2 == 0, r, r * inner)
    return [line(np.stack([rad * np.cos(a), rad * np.sin(a)], 1), step)]
  strokes = []                            # style 2: asterisk of 3 crossing lines
  for k in range(3):
    a = a0 + k * np.pi / 3
    strokes.append(line([(r * np.cos(a), r * np.sin(a)),
                         (-r * np.cos(a), -r * np.sin(a))], step))
  return strokes


def face(style, rng, step):
  rx, ry = _u(rng, 0.85, 1.0), _u(rng, 0.9, 1.0)
  ex, ey, er = _u(rng, 0.3, 0.4), _u(rng, -0.35, -0.2), _u(rng, 0.08, 0.13)
  strokes = [loop(0, 0, rx, ry, step, rng), loop(-ex, ey, er, er, step, rng),
             loop(ex, ey, er, er, step, rng)]
  mw = _u(rng, 0.35, 0.5)
  if style == 0:                          # smile
    strokes.append(arc(0, 0.2, mw, 0.3, 0.15 * np.pi, 0.85 * np.pi, step))
  elif style == 1:                        # frown
    strokes.append(arc(0, 0.65, mw, 0.25, 1.15 * np.pi, 1.85 * np.pi, step))
  else:                                   # surprised: round mouth
    strokes.append(loop(0, 0.45, 0.17, 0.2, step, rng))
  return strokes


def fish(style, rng, step):
  lx, ly = _u(rng, 0.6, 0.75), _u(rng, 0.3, 0.45)
  tail = _u(rng, 0.3, 0.45)
  body = loop(0.15, 0, lx, ly, step, rng)
  end = 0.15 - lx
  tail_stroke = line([(end, 0), (end - tail, -tail), (end - tail, tail), (end, 0)],
                     step)
  eye = loop(0.15 + lx * 0.55, -ly * 0.25, 0.06, 0.06, step, rng)
  strokes = [body, tail_stroke, eye]
  if style == 1:                          # facing left: mirror
    strokes = [s * np.array([-1.0, 1.0]) for s in strokes]
  return strokes


def flower(style, rng, step):
  cy, pr, bend = -0.4, _u(rng, 0.2, 0.28), _u(rng, -0.15, 0.15)
  if style == 0:                          # daisy: centre + 5 petal loops + stem
    stem = line([(0, cy + 0.14), (bend, 0.4), (0, 1.0)], step)
    strokes = [stem, loop(0, cy, 0.14, 0.14, step, rng)]
    a0 = _u(rng, 0, 2 * np.pi / 5)
    for k in range(5):
      a = a0 + k * 2 * np.pi / 5
      d = 0.14 + pr
      c, s = np.cos(a), np.sin(a)
      pet = arc(0, 0, pr, pr * 0.55, 0, 2 * np.pi, step)
      rot = pet @ np.array([[c, s], [-s, c]])
      strokes.append(rot + np.array([d * c, cy + d * s]))
    return strokes
  # tulip: a cup with a zigzag top on a stem, with one leaf
  w, depth = _u(rng, 0.3, 0.4), _u(rng, 0.35, 0.45)
  top = cy - 0.2
  cup = line([(-w, top), (-w * 0.3, top + 0.2), (0, top - 0.05),
              (w * 0.3, top + 0.2), (w, top)], step)
  bowl = arc(0, top, w, depth, 0, np.pi, step)
  stem = line([(0, top + depth), (bend, 0.45), (0, 1.0)], step)
  side = 1 if rng.uniform() < 0.5 else -1
  mid = (bend * 0.9, 0.5)
  leaf = line([mid, (side * 0.45, 0.15), (mid[0], mid[1] - 0.2)], step)
  return [stem, np.concatenate([cup, bowl[::-1]]), leaf]


CATEGORIES = {
    # name: (drawing function, style names)
    "house": (house, ("door", "flat_roof_window", "chimney")),
    "star": (star, ("pentagram", "outline", "asterisk")),
    "face": (face, ("smile", "frown", "surprised")),
    "fish": (fish, ("right", "left")),
    "flower": (flower, ("daisy", "tulip")),
}


def _start_at_top(stroke):
  """A closed stroke re-started at its topmost point (y down), as people
  start circles; an open stroke unchanged."""
  if len(stroke) < 4 or np.hypot(*(stroke[0] - stroke[-1])) > 1e-6:
    return stroke
  ring = np.roll(stroke[:-1], -int(np.argmin(stroke[:-1, 1])), axis=0)
  return np.concatenate([ring, ring[:1]])


def _stroke_plan(n, stroke_order, rng):
  """(stroke index, keep its direction) in drawing order."""
  if stroke_order == "random":
    return [(k, None) for k in rng.permutation(n)]
  order = np.arange(n)
  if rng.uniform() < DETAIL_SHUFFLE:
    order[1:] = rng.permutation(order[1:])
  return [(k, rng.uniform() >= HUMAN_REVERSE) for k in order]


def draw_sketch(category, style, rng, stroke_order="human"):
  """One random sketch of ``category`` / ``style`` as int16 stroke-3, after
  QuickDraw's simplification (its longer side is 255 units)."""
  fn = CATEGORIES[category][0]
  size = rng.uniform(50, 125)             # raw half-side (rescaled to 255 later)
  step = 2.0 / rng.uniform(10, 40)        # canonical spacing: point density
  for _ in range(6):
    strokes = fn(style, rng, step)
    if sum(len(s) for s in strokes) <= MAX_POINTS:
      break
    step *= 1.4
  angle = np.deg2rad(rng.uniform(-10, 10))
  c, s = np.cos(angle), np.sin(angle)
  mat = np.array([[c, s], [-s, c]]) * (size * rng.uniform(0.85, 1.15, size=2))
  out = []
  for k, forward in _stroke_plan(len(strokes), stroke_order, rng):
    st = strokes[k] if forward is None else _start_at_top(strokes[k])
    st = st + rng.normal(0, 0.02, size=2)                         # placement
    st = st + rng.normal(0, 0.008, size=st.shape)                 # hand jitter
    if forward is None:
      forward = rng.uniform() < 0.7
    out.append((st if forward else st[::-1]) @ mat)               # direction
  return drawing_to_stroke3(out, raw=True)


def _rng(seed, category, split):
  return np.random.default_rng(
      [seed, zlib.crc32(category.encode()), SPLITS.index(split)])


def make_split(category, split, num, seed, stroke_order="human"):
  """(list of int16 stroke-3 sketches, int32 style labels) for one split."""
  rng = _rng(seed, category, split)
  styles = rng.integers(len(CATEGORIES[category][1]), size=num).astype(np.int32)
  return [draw_sketch(category, int(st), rng, stroke_order)
          for st in styles], styles


def generate_sketches(num, seed=0, categories=None, split="train",
                      stroke_order="human"):
  """``num`` sketches cycling through the categories -> (seqs, cats, styles)."""
  cats = list(categories or CATEGORIES)
  per = [num // len(cats) + (i < num % len(cats)) for i in range(len(cats))]
  seqs, labels, styles = [], [], []
  for i, (cat, n) in enumerate(zip(cats, per)):
    s, st = make_split(cat, split, n, seed, stroke_order)
    seqs += s
    labels += [i] * n
    styles.append(st)
  return seqs, np.array(labels, dtype=np.int32), np.concatenate(styles)


def _object_array(seqs):
  arr = np.empty(len(seqs), dtype=object)
  arr[:] = seqs
  return arr


def check_categories(categories):
  unknown = [c for c in categories if c not in CATEGORIES]
  if unknown or not categories:
    raise UserError(f"unknown synthetic categor{'y' if len(unknown) == 1 else 'ies'}"
                    f" {', '.join(unknown) or '(none given)'}: choose from "
                    f"{', '.join(CATEGORIES)}")


def generate(out_dir, seed=0, sizes=(5000, 500, 500), categories=None,
             png_width=48, workers=2, contact_sheet=True, stroke_order="human"):
  """Writes the dataset for ``categories`` to ``out_dir``; returns the paths."""
  categories = list(categories or CATEGORIES)
  check_categories(categories)
  if stroke_order not in STROKE_ORDERS:
    raise UserError(f"stroke_order must be one of {', '.join(STROKE_ORDERS)}, "
                    f"got {stroke_order!r}")
  if len(sizes) != 3 or min(sizes) < 1:
    raise UserError(f"split sizes must be 3 integers >= 1, got {sizes}")
  names = [f"{cat}{n}.npz" for cat in categories for n in ("", "_png", "_styles")]
  for name in names + (["contact_sheet.png"] if contact_sheet else []):
    ownership.check_replaceable(os.path.join(out_dir, name), "data", "--out_dir")
  ensure_dir(out_dir)
  paths = []
  for cat in categories:
    data = {sp: make_split(cat, sp, n, seed, stroke_order)
            for sp, n in zip(SPLITS, sizes)}
    strokes = {sp: _object_array(data[sp][0]) for sp in SPLITS}
    images = {sp: raster.render_many(data[sp][0], png_width, workers)
              for sp in SPLITS}
    for name, arrays in (("", strokes), ("_png", images),
                         ("_styles", {sp: data[sp][1] for sp in SPLITS})):
      paths.append(f"{out_dir}/{cat}{name}.npz")
      atomic_savez(paths[-1], role="data", **arrays)
  if contact_sheet:
    paths.append(write_contact_sheet(f"{out_dir}/contact_sheet.png", seed,
                                     categories, stroke_order=stroke_order))
  return paths


def write_contact_sheet(path, seed=0, categories=None, per_row=10, cell=72,
                        stroke_order="human"):
  """A labelled grid: one row per (category, style), ``per_row`` sketches."""
  rows = [(c, s) for c in (categories or CATEGORIES)
          for s in range(len(CATEGORIES[c][1]))]
  label_w = 150
  sheet = Image.new("L", (label_w + per_row * cell, len(rows) * cell), 255)
  draw = ImageDraw.Draw(sheet)
  for r, (cat, style) in enumerate(rows):
    rng = np.random.default_rng([seed, zlib.crc32(cat.encode()), 99, style])
    seqs = [draw_sketch(cat, style, rng, stroke_order) for _ in range(per_row)]
    imgs = raster.render_many(seqs, cell - 4, workers=1)
    for i, img in enumerate(imgs):
      sheet.paste(Image.fromarray(img), (label_w + i * cell + 2, r * cell + 2))
    draw.text((6, r * cell + cell // 2 - 6),
              f"{cat} / {style}: {CATEGORIES[cat][1][style]}", fill=0)
    draw.line([(0, r * cell), (sheet.width, r * cell)], fill=200)
  with atomic_open(path, "wb", role="data") as f:
    sheet.save(f, format="PNG")
  return path


@cli_main
def main(argv):
  check_argv(argv)
  sizes = (FLAGS.num_train, FLAGS.num_valid, FLAGS.num_test)
  if min(sizes) < 1:
    raise UserError(f"--num_train/--num_valid/--num_test must be >= 1, got "
                    f"{sizes}")
  require_min(FLAGS, 8, "png_width")
  paths = generate(FLAGS.out_dir, FLAGS.seed, sizes, FLAGS.categories,
                   FLAGS.png_width, stroke_order=FLAGS.stroke_order)
  print(f"wrote {len(paths)} files to {FLAGS.out_dir}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
