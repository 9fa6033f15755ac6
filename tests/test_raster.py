"""data.raster against an independent exact render (method.md §1 geometry)."""
import os

import numpy as np
import pytest

from data import raster
from data.synthetic import generate_sketches
from tests.conftest import SHARED_DATA

SS = 16  # supersampling of the reference: SS x SS point samples per pixel


def reference_render(stroke3, width=48):
  """Slow, independent render: exact union of the stroke shapes, point-sampled.

  Geometry written from method.md §1: absolute points, bounding box with the
  origin, longer side -> width - 3 px, shorter side centred.  Shapes: a 1 px
  wide rectangle (butt ends) per pen-down segment, a 1 px disc where two
  segments of one stroke meet.  Coverage = fraction of SS*SS samples inside.
  """
  s = np.asarray(stroke3, dtype=np.float64).reshape(-1, 3)
  pts = np.cumsum(s[:, :2], axis=0)
  lo, hi = np.minimum(pts.min(0), 0), np.maximum(pts.max(0), 0)
  size = hi - lo
  norm = max(size.max(), 1e-5)
  p = (pts - lo + (norm - size) / 2) * ((width - 3) / norm) + 1.5
  hit = np.zeros((width * SS, width * SS), bool)
  grid = (np.arange(width * SS) + 0.5) / SS

  def window(x0, x1, y0, y1):
    i0, i1 = max(int((y0 - 1) * SS), 0), min(int((y1 + 1) * SS), width * SS)
    j0, j1 = max(int((x0 - 1) * SS), 0), min(int((x1 + 1) * SS), width * SS)
    return (slice(i0, i1), slice(j0, j1)), grid[i0:i1, None], grid[None, j0:j1]

  segs = [i for i in range(len(s) - 1)
          if s[i, 2] == 0 and np.hypot(*(p[i + 1] - p[i])) > 1e-6]
  for i in segs:
    a, b = p[i], p[i + 1]
    length = np.hypot(*(b - a))
    u = (b - a) / length
    win, y, x = window(min(a[0], b[0]), max(a[0], b[0]),
                       min(a[1], b[1]), max(a[1], b[1]))
    along = (x - a[0]) * u[0] + (y - a[1]) * u[1]
    across = (y - a[1]) * u[0] - (x - a[0]) * u[1]
    hit[win] |= (np.abs(across) <= 0.5) & (along >= 0) & (along <= length)
  for i, j in zip(segs[:-1], segs[1:]):
    if not s[i:j, 2].any():                        # same stroke: a joint
      q = p[j]
      win, y, x = window(q[0], q[0], q[1], q[1])
      hit[win] |= (x - q[0]) ** 2 + (y - q[1]) ** 2 <= 0.25
  cover = hit.reshape(width, SS, width, SS).mean(axis=(1, 3))
  return np.rint(255 * (1 - cover)).astype(np.uint8)


def random_walks(n, seed=0):
  """Scribbles with crossings, pen lifts, repeated points and long jumps."""
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    m = rng.integers(5, 80)
    d = np.rint(rng.normal(0, 15, size=(m, 2)))
    d[rng.uniform(size=m) < 0.05] = 0
    pen = (rng.uniform(size=m) < 0.1).astype(float)
    pen[-1] = 1
    out.append(np.concatenate([d, pen[:, None]], 1))
  return out


def real_sketches(per_file=15):
  seqs = []
  for name in ("aaron_sheep", "omniglot", "kanji.rdp200"):
    path = os.path.join(SHARED_DATA, f"{name}.npz")
    if os.path.exists(path):
      seqs += list(np.load(path, allow_pickle=True, encoding="latin1")
                   ["train"][:per_file])
  return seqs


def assert_close(seqs, width=48):
  ours = raster.render_many(seqs, width, workers=1)
  ref = np.stack([reference_render(s, width) for s in seqs])
  diff = np.abs(ours.astype(int) - ref)
  assert diff.mean() <= 2.0, diff.mean()
  assert diff.max() <= 64, diff.max()
  return diff


def test_matches_reference_on_synthetic_and_scribbles():
  seqs = generate_sketches(15, seed=3)[0] + random_walks(15)
  diff = assert_close(seqs)
  assert diff.mean() < 1.0


def test_matches_reference_on_real_sketches():
  seqs = real_sketches()
  if not seqs:
    pytest.skip("shared sketch data not present")
  assert_close(seqs)


def test_other_width():
  assert_close(generate_sketches(6, seed=1)[0], width=28)


def test_geometry_of_a_single_line():
  # Horizontal line (0,0)->(100,0); then a pen-up move to (100,50): box 100x50.
  img = raster.render(np.array([[0, 0, 0], [100, 0, 0], [0, 50, 1]]), 48)
  ref = reference_render(np.array([[0, 0, 0], [100, 0, 0], [0, 50, 1]]), 48)
  # The vertical move is drawn (pen down at the second point) ...
  assert np.abs(img.astype(int) - ref).max() <= 16
  ink = 255 - img.astype(int)
  # ... the horizontal line sits at y = 25 * 45/100 + 1.5 = 12.75, x 1.5..46.5.
  rows = np.flatnonzero(ink[:, 20] > 0)
  assert list(rows) == [12, 13]
  assert ink[12, 20] > ink[13, 20]           # band 12.25..13.25: 3/4 in row 12
  assert ink[12, 0] == 0 and ink[12, 47] == 0
  assert abs(ink[12, 2] - 191) <= 4 and abs(ink[13, 2] - 64) <= 4
  assert abs(ink[12, 1] - 96) <= 4           # the butt end at x = 1.5


def test_pen_up_segments_are_not_drawn():
  # Two short horizontal strokes joined by a long pen-up jump.
  s = np.array([[0, 0, 0], [20, 0, 1], [60, 60, 0], [20, 0, 1]], float)
  img = raster.render(s)
  ink = 255 - img.astype(int)
  assert ink.sum() > 0
  # Pixels on the jump's diagonal, away from both strokes, stay white.
  for t in np.linspace(0.3, 0.7, 5):
    x = 1.5 + (20 + 40 * t) * 45 / 100
    y = 1.5 + (0 + 60 * t) * 45 / 100 + (100 - 60) / 2 * 45 / 100
    assert ink[int(y), int(x)] == 0
  assert np.abs(img.astype(int) - reference_render(s)).max() <= 16


def test_degenerate_inputs_do_not_divide_by_zero():
  cases = [np.zeros((1, 3)), np.array([[5, 5, 1]]), np.zeros((6, 3)),
           np.array([[0, 0, 0], [0, 0, 0], [0, 0, 1]]), np.zeros((0, 3))]
  with np.errstate(all="raise"):
    for c in cases:
      img = raster.render(c)
      assert img.shape == (48, 48) and img.dtype == np.uint8
      assert (img == 255).all()               # nothing visible to draw
    # Zero-length segments inside a stroke change nothing.
    s = np.array([[0, 0, 0], [30, 10, 0], [0, 0, 0], [0, 0, 0], [-10, 25, 1]])
    t = np.array([[0, 0, 0], [30, 10, 0], [-10, 25, 1]])
    np.testing.assert_array_equal(raster.render(s), raster.render(t))
    # A sketch with zero-size extent along one axis: a centred line.
    img = raster.render(np.array([[0, 0, 0], [0, 40, 1]]))
    ink = (255 - img.astype(int)).sum(axis=0)
    assert set(np.flatnonzero(ink)) <= {23, 24}


def test_symmetries():
  seqs = generate_sketches(5, seed=2)[0] + random_walks(5, seed=4)
  for s in seqs:
    s = s.astype(float)
    img = raster.render(s)
    np.testing.assert_array_equal(raster.render(s[:, [1, 0, 2]]), img.T)
    # Drawing every stroke backwards gives the same picture.
    pts = np.cumsum(s[:, :2], 0)
    strokes = np.split(pts, np.flatnonzero(s[:, 2])[:-1] + 1)
    back = []
    for st in strokes[::-1]:
      back.append(np.c_[st[::-1], np.zeros(len(st))])
      back[-1][-1, 2] = 1
    back = np.concatenate(back)
    rev = np.c_[np.diff(back[:, :2], axis=0, prepend=np.zeros((1, 2))), back[:, 2]]
    diff = np.abs(raster.render(rev).astype(int) - img)
    assert diff.max() <= 8                     # only the table quantisation


def test_render_many_matches_render_serial_and_parallel():
  seqs = generate_sketches(600, seed=5)[0] + [np.zeros((0, 3))]
  one = np.stack([raster.render(s) for s in seqs[:40]])
  many = raster.render_many(seqs, workers=2)
  assert many.shape == (601, 48, 48) and many.dtype == np.uint8
  np.testing.assert_array_equal(many[:40], one)
  np.testing.assert_array_equal(many, raster.render_many(seqs, workers=1))
  assert (many[-1] == 255).all()
  assert raster.render_many([], 32).shape == (0, 32, 32)
