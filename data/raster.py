"""Vectorised stroke-3 -> grayscale rasteriser (REFERENCE §1, "Image data").

Geometry of the reference (SVG + cairo): accumulate the offsets into absolute
points, take their bounding box together with the origin, scale so the longer
side spans ``width - 3`` pixels (a 1.5 px margin), centre the shorter side,
and stroke every pen-down segment (point i -> i+1 exists when point i's
pen_lifted == 0) as a 1 px wide antialiased line, black on white (255).

Instead of building SVG strings we compute, in NumPy and for many sketches at
once, the exact area of every nearby pixel covered by each segment's 1 px band:
the projection of a unit pixel onto any direction (c, s) is the sum of two
uniform variables of widths |c| and |s|, whose CDF is a trapezoid in closed
form.  A segment covers ``band(distance) * cap(position along it)``; free ends
are butt caps (as SVG's default), ends joined to the next segment of the same
stroke are rounded (the distance is taken to the nearest point of the segment,
close to cairo's miter join for 1 px lines); the union of segments is the
per-pixel maximum.  Each segment is walked column by column along its major
axis with a 4-pixel stencil across it, so the work is proportional to the ink.
"""
import multiprocessing

import numpy as np

MARGIN = 1.5        # pixels left free on each side (reference: width - 2 * 1.5)
MIN_NORM = 1e-5     # bounding-box size floor (no division by zero)
_EPS_LEN = 1e-6     # segments shorter than this (in pixels) draw nothing
_OVERHANG = 1.0     # columns evaluated beyond a segment's end points
_PAD = 2            # canvas padding so the stencil never indexes outside
_CHUNK = 32         # sketches rasterised together (keeps arrays in cache)
_SERIAL_BELOW = 512  # render_many uses one process below this many sketches
_BIG = 1024.0      # "infinite" in pixels (small: float32 blends stay exact)
_N_ANG = 32         # coverage tables: directions |tan| = 0, 1/32, ..., 1
_N_LUT = 512        # coverage tables: offsets per direction
_BAND_SCALE = (_N_LUT - 1) / 1.25   # band distances 0 .. 1.25 px (>= 0.5 + 0.71)
_CDF_SCALE = (_N_LUT - 1) / 2.0     # cap offsets -1 .. 1 px


def _cdf(x, w1, w2):
  """Projection of a unit pixel on a unit direction: P(X <= x).

  X = U(-w1/2, w1/2) + U(-w2/2, w2/2), w1 >= w2 the |components| of the
  direction, has a trapezoid density; its CDF is the second difference of a
  squared ramp: [R(x+h1) - R(x+h2) - R(x-h2) + R(x-h1)] / (2 w1 w2) with
  R(y) = max(y, 0)^2, h1 = (w1+w2)/2, h2 = (w1-w2)/2 (float64, w2 > 0).
  """
  h1, h2 = 0.5 * (w1 + w2), 0.5 * (w1 - w2)
  ramp = lambda y: np.square(np.maximum(y, 0.0))
  return (ramp(x + h1) - ramp(x + h2) - ramp(x - h2) + ramp(x - h1)) / (
      2.0 * w1 * w2)


def _make_luts():
  """Tables over (direction, offset) of the exact pixel coverage terms.

  Row a is the direction with |tan| = a / _N_ANG.  BAND[a, i]: area of a pixel
  whose centre is at distance i / _BAND_SCALE from the axis of an infinite 1 px
  band, F(d + 1/2) - F(d - 1/2).  CDF[a, i] = F(x) at x = i / _CDF_SCALE - 1.
  """
  tan = np.arange(_N_ANG + 1) / _N_ANG
  w1 = 1.0 / np.sqrt(1.0 + tan ** 2)
  w2 = np.maximum(tan * w1, 1e-3)[:, None]
  w1 = w1[:, None]
  d = np.arange(_N_LUT) / _BAND_SCALE
  band = _cdf(d + 0.5, w1, w2) - _cdf(d - 0.5, w1, w2)
  cdf = _cdf(np.arange(_N_LUT) / _CDF_SCALE - 1.0, w1, w2)
  return (np.clip(band, 0, 1).astype(np.float32).ravel(),
          np.clip(cdf, 0, 1).astype(np.float32).ravel())


def _lut_cdf(x, ang):
  """F(x) for the directions ``ang`` (row offsets into _CDF_LUT), x clipped."""
  i = np.clip(x * _CDF_SCALE + (_CDF_SCALE + 0.5), 0, _N_LUT - 1)
  return _CDF_LUT.take(i.astype(np.int32) + ang)


_BAND_LUT, _CDF_LUT = _make_luts()
_ROWS = np.arange(4, dtype=np.float32)[:, None]


def _to_pixels(seqs, width):
  """Pixel coordinates of all points of non-empty sketches, concatenated.

  Returns 1-D arrays (x, y float32 pixels, pen, owner = sketch index, last =
  last point of its sketch); sums are done in float64.  The bounding box (origin included), scale and
  centring of REFERENCE §1 are computed for every sketch at once.
  """
  lens = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
  data = np.concatenate(seqs).astype(np.float64)
  starts = np.cumsum(lens) - lens
  coords, los, his = [], [], []
  for col in (0, 1):
    cum = np.cumsum(data[:, col])
    pts = cum - np.repeat(cum[starts] - data[starts, col], lens)
    coords.append(pts)
    los.append(np.minimum(np.minimum.reduceat(pts, starts), 0.0))
    his.append(np.maximum(np.maximum.reduceat(pts, starts), 0.0))
  norm = np.maximum(np.maximum(his[0] - los[0], his[1] - los[1]), MIN_NORM)
  scale = (width - 2 * MARGIN) / norm
  xy = []
  for pts, lo, hi in zip(coords, los, his):
    offset = (0.5 * (norm - (hi - lo)) - lo) * scale + MARGIN
    xy.append((pts * np.repeat(scale, lens) + np.repeat(offset, lens))
              .astype(np.float32))
  owner = np.repeat(np.arange(len(seqs), dtype=np.int32), lens)
  last = np.zeros(len(data), dtype=bool)
  last[starts + lens - 1] = True
  return xy[0], xy[1], data[:, 2], owner, last


def _segments(x, y, pen, owner, last):
  """Pen-down segments with non-zero length and their join flags.

  A segment i -> i+1 exists when pen[i] == 0 and i is not its sketch's last
  point.  Zero-length segments are dropped (a butt-capped zero-length line
  draws nothing); two kept segments are joined when no pen lift lies between.
  Returns (owner, ax, ay, bx, by, length, join_start, join_end), 1-D arrays.
  """
  brk = (pen != 0) | last
  stroke_id = np.cumsum(brk)
  idx = np.flatnonzero(~brk)
  ax, ay, bx, by = x.take(idx), y.take(idx), x.take(idx + 1), y.take(idx + 1)
  length = np.hypot(bx - ax, by - ay)
  keep = np.flatnonzero(length > _EPS_LEN)
  idx = idx.take(keep)
  sid = stroke_id.take(idx)
  same = sid[1:] == sid[:-1]
  join_start = np.concatenate([[False], same])
  join_end = np.concatenate([same, [False]])
  return (owner.take(idx), ax.take(keep), ay.take(keep), bx.take(keep),
          by.take(keep), length.take(keep), join_start, join_end)


def _blend(mask, when_true, when_false):
  """``np.where`` by arithmetic (several times faster for random masks)."""
  return when_false + (when_true - when_false) * mask


def _stencil(owner, ax, ay, bx, by, length, join_start, join_end, side):
  """Pixels near each segment and the area of each covered by the segment.

  Segments are made x-major (axes swapped when |dy| > |dx|) and left-to-right;
  every pixel column whose centre lies within _OVERHANG of the segment's x
  range gets a 4-pixel stencil across the line.  Only segments with a free
  (butt-capped) end need the cap factor; they are put first so the factor is
  computed on a prefix.  Returns (flat pixel index (4,E) int32 into the padded
  (N, side, side) canvas, coverage (4,E) float32); the (4, E) layout lets NumPy
  broadcast per-column values cheaply over the leading axis.
  """
  free = ~(join_start & join_end)
  order = np.argsort(~free, kind="stable")
  one = np.float32(1)
  owner, ax, ay, bx, by, length, js, je = (
      v.take(order) for v in (owner, ax, ay, bx, by, length,
                              join_start * one, join_end * one))
  swap = (np.abs(by - ay) > np.abs(bx - ax)) * one
  ax, ay = _blend(swap, ay, ax), _blend(swap, ax, ay)
  bx, by = _blend(swap, by, bx), _blend(swap, bx, by)
  flip = (bx < ax) * one
  ax, bx = _blend(flip, bx, ax), _blend(flip, ax, bx)
  ay, by = _blend(flip, by, ay), _blend(flip, ay, by)
  js, je = _blend(flip, je, js), _blend(flip, js, je)   # 1.0 = joined end
  ux, uy = (bx - ax) / length, (by - ay) / length
  c0 = np.ceil(ax - _OVERHANG - 0.5)
  ncol = (np.floor(bx + _OVERHANG - 0.5) - c0 + 1).astype(np.int64)
  # Flat index steps of one column / one row in the (possibly swapped) frame.
  step_c = _blend(swap, np.float32(side), one)
  step_r = _blend(swap, one, np.float32(side))
  big = np.float32(_BIG)
  # Flat indices are carried in float32: exact below 2**24 (see _CHUNK).
  per_seg = np.stack([
      ax, ay, bx, ux, uy, uy / ux, c0,
      _blend(js, 0, -big), _blend(je, length, big),             # rounded ends
      np.rint(np.abs(uy) / ux * _N_ANG) * _N_LUT,               # table row
      step_r, owner * np.float32(side * side) + _PAD * (side + 1)
      + c0 * step_c, step_c])
  (ax, ay, bx, ux, uy, slope, col, t_lo, t_hi, ang, step_r, flat,
   step_c) = np.repeat(per_seg, ncol, axis=1)
  # Column number within the segment: 0, 1, ... ncol-1.
  within = np.arange(len(ax), dtype=np.float32) - np.repeat(
      (np.cumsum(ncol) - ncol).astype(np.float32), ncol)
  col += within
  flat += within * step_c
  xc = col + 0.5
  yc = ay + (np.minimum(np.maximum(xc, ax), bx) - ax) * slope
  r0 = np.floor(yc - 1.5)
  flat += r0 * step_r
  rx = xc - ax
  ry = r0 + (0.5 - ay)
  t = (rx * ux + ry * uy) + _ROWS * uy    # position along the segment
  s = (ry * ux - rx * uy) + _ROWS * ux    # signed distance across it
  dt = t - np.minimum(np.maximum(t, t_lo), t_hi)
  dist = np.sqrt(s * s + dt * dt)
  ang = ang.astype(np.int32)
  cov = _BAND_LUT.take(
      np.clip(dist * _BAND_SCALE + 0.5, 0, _N_LUT - 1).astype(np.int32) + ang)
  n_seg = np.count_nonzero(free)
  if n_seg:                               # butt caps
    n_free = int(ncol[:n_seg].sum())
    cap_lo, cap_hi = np.repeat(np.stack([
        _blend(js[:n_seg], -big, 0), _blend(je[:n_seg], big, length[:n_seg])]),
                               ncol[:n_seg], axis=1)
    t, ang = t[:, :n_free], ang[:n_free]
    cov[:, :n_free] *= (_lut_cdf(cap_hi - t, ang) + _lut_cdf(t - cap_lo, ang)
                        - 1.0)
  flat = flat.astype(np.int32) + (_ROWS * step_r).astype(np.int32)
  return flat, cov


def _render_chunk(seqs, width):
  """Renders a list of non-empty (n,3) sketches -> uint8 (N, width, width)."""
  n = len(seqs)
  side = width + 2 * _PAD
  ink = np.zeros(n * side * side, dtype=np.float32)
  segments = _segments(*_to_pixels(seqs, width))
  if len(segments[0]):
    flat, cov = _stencil(*segments, side)
    np.maximum.at(ink, flat.ravel(), cov.ravel())
  ink = ink.reshape(n, side, side)[:, _PAD:_PAD + width, _PAD:_PAD + width]
  return np.rint(255.0 * (1.0 - np.minimum(ink, 1.0))).astype(np.uint8)


def _render_serial(seqs, width):
  out = np.full((len(seqs), width, width), 255, dtype=np.uint8)
  nonempty = [i for i, s in enumerate(seqs) if len(s)]
  for k in range(0, len(nonempty), _CHUNK):
    ids = nonempty[k:k + _CHUNK]
    out[ids] = _render_chunk([seqs[i] for i in ids], width)
  return out


def render(stroke3, width=48):
  """One stroke-3 sketch (n,3) -> uint8 (width, width), 255 = white."""
  return _render_serial([np.asarray(stroke3).reshape(-1, 3)], width)[0]


def _render_job(job):
  seqs, width = job
  return _render_serial(seqs, width)


def render_many(seqs, width=48, workers=2, chunk_callback=None):
  """Many stroke-3 sketches -> uint8 (N, width, width) (REFERENCE §1).

  Uses ``workers`` processes when there are at least _SERIAL_BELOW sketches,
  one otherwise.  ``chunk_callback(n)`` (e.g. a progress bar's update) is
  called as blocks of n sketches complete.
  """
  seqs = [np.asarray(s).reshape(-1, 3) for s in seqs]
  n = len(seqs)
  if n == 0:
    return np.zeros((0, width, width), dtype=np.uint8)
  block = max(_CHUNK, min(4096, -(-n // max(1, 4 * workers))))
  jobs = [(seqs[i:i + block], width) for i in range(0, n, block)]
  parts = []
  if workers <= 1 or n < _SERIAL_BELOW:
    results = map(_render_job, jobs)
    pool = None
  else:
    pool = multiprocessing.get_context("fork").Pool(workers)
    results = pool.imap(_render_job, jobs)
  try:
    for part in results:
      parts.append(part)
      if chunk_callback is not None:
        chunk_callback(len(part))
  finally:
    if pool is not None:
      pool.close()
      pool.join()
  return np.concatenate(parts)
