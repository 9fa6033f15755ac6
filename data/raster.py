"""Vectorised stroke-3 -> grayscale rasteriser (method.md §1, "Images").

Geometry of the reference (SVG + cairo): accumulate the offsets into absolute
points, take their bounding box together with the origin, scale so the longer
side spans ``width - 3`` pixels (a 1.5 px margin), centre the shorter side,
and stroke every pen-down segment (point i -> i+1 exists when point i's
pen_lifted == 0) as a 1 px wide antialiased line, black on white (255).

Instead of building SVG strings, all sketches of a chunk are rasterised at once
in NumPy.  A stroke is the union of 1 px wide rectangles (one per segment, butt
ends as SVG's default) and discs of diameter 1 px where two segments of one
stroke meet (a round join, close to cairo's miter join at 1 px).  Each pixel
carries 64 sample points in a (0,6,2)-net (stratified in x, in y and in 8x8
cells, so edges of every direction are measured to ~1/64 of a pixel); which
samples a rectangle or disc covers is looked up in precomputed bit-mask tables
(indexed by direction and offset), the union of shapes is the bitwise OR of the
masks and the ink is the number of covered samples.  Each segment is walked
column by column along its major axis with a 4-pixel stencil across it, so the
work is proportional to the ink.
"""
import multiprocessing

import numpy as np

MARGIN = 1.5        # pixels left free on each side (reference: width - 2 * 1.5)
MIN_NORM = 1e-5     # bounding-box size floor (no division by zero)
_EPS_LEN = 1e-6     # segments shorter than this (in pixels) draw nothing
_PAD = 2            # canvas padding so the stencil never indexes outside
_CHUNK = 32         # sketches rasterised together (keeps arrays in cache)
_SERIAL_BELOW = 512  # render_many uses one process below this many sketches
_N_SLOPE = 32       # mask tables: slopes -1, -31/32, ..., 1 (per axis order)
_RES = 64           # mask tables: offset steps per pixel
_SPAN = 1.25        # mask tables: offsets -1.25 .. 1.25 px (masks constant beyond)
_N_OFF = int(2 * _SPAN * _RES) + 1
_DISC_RES = 32      # disc table: centre offsets -1 .. 1 px in 1/32 steps


def _sample_offsets():
  """64 sample points (offsets from the pixel centre): the Hammersley net."""
  k = np.arange(64)
  rev = np.zeros(64, dtype=np.int64)
  for bit in range(6):
    rev |= ((k >> bit) & 1) << (5 - bit)
  return (k + 0.5) / 64 - 0.5, (rev + 0.5) / 64 - 0.5


def _pack(bits):
  """Boolean (..., 64) -> uint64 (...) with bit k = sample k."""
  return np.bitwise_or.reduce(
      bits.astype(np.uint64) << np.arange(64, dtype=np.uint64), axis=-1)


def _make_tables():
  """Bit-mask tables of the samples covered by the primitive shapes.

  Rows are (axis order, slope): in the x-major frame of a segment (axes
  swapped when |dy| > |dx|) with unit direction u = (1, slope)/|.| and normal
  n = (-u_y, u_x), sample k sits at o_k (swapped in the swapped frame).
  BAND[row, j]: |s + n.o_k| <= 1/2 (the 1 px band, s = centre's distance
  across the segment); AFTER[row, j]: x + u.o_k >= 0 (beyond the start);
  BEFORE[row, j]: x - u.o_k >= 0 (before the end); s, x = j / _RES - _SPAN.
  DISC[i, j]: |o_k - d| <= 1/2 with d = (i, j) / _DISC_RES - 1 (image frame).
  """
  ox, oy = _sample_offsets()
  slope = np.arange(-_N_SLOPE, _N_SLOPE + 1) / _N_SLOPE
  ux, uy = 1 / np.hypot(1, slope), slope / np.hypot(1, slope)
  rows = []
  for fx, fy in ((ox, oy), (oy, ox)):                 # plain, swapped
    rows.append((ux[:, None] * fy - uy[:, None] * fx,  # n . o
                 ux[:, None] * fx + uy[:, None] * fy))  # u . o
  n_o = np.concatenate([r[0] for r in rows])[:, None, :]
  u_o = np.concatenate([r[1] for r in rows])[:, None, :]
  x = (np.arange(_N_OFF) / _RES - _SPAN)[None, :, None]
  band = _pack(np.abs(x + n_o) <= 0.5).ravel()
  after = _pack(x + u_o >= 0).ravel()
  before = _pack(x - u_o >= 0).ravel()
  d = np.arange(2 * _DISC_RES + 1) / _DISC_RES - 1.0
  disc = _pack((ox - d[:, None, None]) ** 2 + (oy - d[None, :, None]) ** 2
               <= 0.25).ravel()
  return band, after, before, disc


_BAND, _AFTER, _BEFORE, _DISC = _make_tables()
_ROWS = np.arange(4, dtype=np.float32)[:, None]
_GREY = np.rint(255 * (1 - np.arange(65) / 64)).astype(np.uint8)


def _to_pixels(seqs, width):
  """Pixel coordinates of all points of non-empty sketches, concatenated.

  Returns 1-D arrays (x, y float32 pixels, pen, owner = sketch index, last =
  last point of its sketch); sums are done in float64.  The bounding box (origin included), scale and
  centring of method.md §1 are computed for every sketch at once.
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
  draws nothing); a kept segment's end is a joint when the next kept segment
  follows without a pen lift.  Returns (owner, ax, ay, bx, by, length,
  join_end), 1-D arrays.
  """
  brk = (pen != 0) | last
  stroke_id = np.cumsum(brk)
  idx = np.flatnonzero(~brk)
  ax, ay, bx, by = x.take(idx), y.take(idx), x.take(idx + 1), y.take(idx + 1)
  length = np.hypot(bx - ax, by - ay)
  keep = np.flatnonzero(length > _EPS_LEN)
  idx = idx.take(keep)
  sid = stroke_id.take(idx)
  join_end = np.concatenate([sid[1:] == sid[:-1], [False]])
  return (owner.take(idx), ax.take(keep), ay.take(keep), bx.take(keep),
          by.take(keep), length.take(keep), join_end)


def _blend(mask, when_true, when_false):
  """``np.where`` by arithmetic (several times faster for random masks)."""
  return when_false + (when_true - when_false) * mask


def _offset_index(x):
  """Column of an offset x (px) in the mask tables, as intp."""
  return np.clip(x * _RES + (_SPAN * _RES + 0.5), 0, _N_OFF - 1).astype(np.intp)


def _segment_masks(owner, ax, ay, bx, by, length, side):
  """Sample masks of the 1 px rectangles of all segments on their pixels.

  Segments are made x-major (axes swapped when |dy| > |dx|) and left-to-right;
  every pixel column the rectangle reaches gets a 4-pixel stencil across it
  (the rectangle spans at most 4 pixels in a column).  Returns (flat pixel
  index (4,E) intp into the padded (N, side, side) canvas, masks (4,E)
  uint64); the (4, E) layout lets NumPy broadcast per-column values cheaply.
  """
  one = np.float32(1)
  swap = (np.abs(by - ay) > np.abs(bx - ax)) * one
  ax, ay = _blend(swap, ay, ax), _blend(swap, ax, ay)
  bx, by = _blend(swap, by, bx), _blend(swap, bx, by)
  flip = (bx < ax) * one
  ax, bx = _blend(flip, bx, ax), _blend(flip, ax, bx)
  ay, by = _blend(flip, by, ay), _blend(flip, ay, by)
  ux, uy = (bx - ax) / length, (by - ay) / length
  slope = uy / ux
  corner = 0.5 * np.abs(uy)               # x reach of the butt-end corners
  c0 = np.floor(ax - corner)
  ncol = (np.floor(bx + corner) - c0 + 1).astype(np.intp)
  step_c = _blend(swap, np.float32(side), one)   # flat index steps of one
  step_r = _blend(swap, one, np.float32(side))   # column / row in the frame
  table_row = (np.rint((slope + 1) * _N_SLOPE) + (2 * _N_SLOPE + 1) * swap)
  # Flat indices are carried in float32: exact below 2**24 (_render_serial).
  per_seg = np.stack([
      ax, ay, bx, ux, uy, slope, c0, 0.5 / ux, length, table_row * _N_OFF,
      step_r, owner * np.float32(side * side) + _PAD * (side + 1)
      + c0 * step_c, step_c])
  (ax, ay, bx, ux, uy, slope, col, half, length, table_row, step_r, flat,
   step_c) = np.repeat(per_seg, ncol, axis=1)
  within = np.arange(len(ax), dtype=np.float32) - np.repeat(
      (np.cumsum(ncol) - ncol).astype(np.float32), ncol)
  col += within
  flat += within * step_c
  # The centre line over the column's x range (clamped to the segment).
  y_left = ay + (np.minimum(np.maximum(col, ax), bx) - ax) * slope
  y_right = ay + (np.minimum(np.maximum(col + 1, ax), bx) - ax) * slope
  r0 = np.floor(np.minimum(y_left, y_right) - half)
  flat += r0 * step_r
  rx = col + (0.5 - ax)
  ry = r0 + (0.5 - ay)
  t = (rx * ux + ry * uy) + _ROWS * uy    # pixel centre along the segment
  s = (ry * ux - rx * uy) + _ROWS * ux    # and across it
  table_row = table_row.astype(np.intp)
  masks = _BAND.take(_offset_index(s) + table_row)
  masks &= _AFTER.take(_offset_index(t) + table_row)
  masks &= _BEFORE.take(_offset_index(length - t) + table_row)
  flat = flat.astype(np.intp) + (_ROWS * step_r).astype(np.intp)
  return flat, masks


def _disc_masks(owner, x, y, side):
  """Sample masks of 1 px discs centred at (x, y) on the 2x2 pixels they reach."""
  px, py = np.floor(x - 0.5), np.floor(y - 0.5)
  di = np.array([0, 0, 1, 1])[:, None]
  dj = np.array([0, 1, 0, 1])[:, None]
  ix = np.rint((x - px - 0.5 + 1.0) * _DISC_RES).astype(np.intp) - di * _DISC_RES
  iy = np.rint((y - py - 0.5 + 1.0) * _DISC_RES).astype(np.intp) - dj * _DISC_RES
  masks = _DISC.take(ix * (2 * _DISC_RES + 1) + iy)
  flat = (owner.astype(np.intp) * side * side + _PAD * (side + 1)
          + (py.astype(np.intp) + dj) * side + px.astype(np.intp) + di)
  return flat, masks


def _scatter_or(canvas, index, masks):
  """canvas[index] |= masks with repeated indices (np.bitwise_or.at is slow).

  Fancy assignment keeps one writer per repeated index; the masks not yet
  contained in the canvas are written again until none is left.
  """
  while len(index):
    canvas[index] = canvas.take(index) | masks
    lost = np.flatnonzero((canvas.take(index) & masks) != masks)
    index, masks = index.take(lost), masks.take(lost)


def _render_chunk(seqs, width):
  """Renders a list of non-empty (n,3) sketches -> uint8 (N, width, width)."""
  n = len(seqs)
  side = width + 2 * _PAD
  canvas = np.zeros(n * side * side, dtype=np.uint64)
  owner, ax, ay, bx, by, length, join_end = _segments(
      *_to_pixels(seqs, width))
  if len(owner):
    flat, masks = _segment_masks(owner, ax, ay, bx, by, length, side)
    joints = np.flatnonzero(join_end)
    disc_flat, disc_masks = _disc_masks(owner.take(joints), bx.take(joints),
                                        by.take(joints), side)
    index = np.concatenate([flat.ravel(), disc_flat.ravel()])
    masks = np.concatenate([masks.ravel(), disc_masks.ravel()])
    keep = np.flatnonzero(masks != 0)
    _scatter_or(canvas, index.take(keep), masks.take(keep))
  grey = _GREY.take(np.bitwise_count(canvas))
  return grey.reshape(n, side, side)[:, _PAD:_PAD + width, _PAD:_PAD + width]


def _render_serial(seqs, width):
  out = np.full((len(seqs), width, width), 255, dtype=np.uint8)
  nonempty = [i for i, s in enumerate(seqs) if len(s)]
  # Flat pixel indices are carried in float32: keep them below 2**24.
  chunk = max(1, min(_CHUNK, 2 ** 24 // (width + 2 * _PAD) ** 2))
  for k in range(0, len(nonempty), chunk):
    ids = nonempty[k:k + chunk]
    out[ids] = _render_chunk([seqs[i] for i in ids], width)
  return out


def render(stroke3, width=48):
  """One stroke-3 sketch (n,3) -> uint8 (width, width), 255 = white, with the
  geometry of method.md (3)."""
  return _render_serial([np.asarray(stroke3).reshape(-1, 3)], width)[0]


def _render_job(job):
  seqs, width = job
  return _render_serial(seqs, width)


def render_many(seqs, width=48, workers=2, chunk_callback=None):
  """Many stroke-3 sketches -> uint8 (N, width, width) (method.md (3)).

  Uses ``workers`` processes when there are at least _SERIAL_BELOW sketches,
  one otherwise.  ``chunk_callback(n)`` (e.g. a progress bar's update) is
  called as blocks of n sketches complete."""
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
