"""QuickDraw's simplification of a drawing, and the stroke-3 it becomes.

QuickDraw simplified its raw drawings by aligning them to the top-left,
scaling the longer side to 255, resampling every stroke at 1-pixel spacing
and simplifying it with Ramer-Douglas-Peucker (epsilon 2.0); the sketchrnn
files hold the result as stroke-3 int16 offsets with the pen-lift bit on
each stroke's last point.  Used by data/ndjson.py (its docstring lists the
steps); pure NumPy.
"""
import numpy as np

SIDE = 255.0        # the longer side after scaling
SPACING = 1.0       # resampling step of raw strokes, pixels
EPSILON = 2.0       # RDP tolerance, pixels


def _rdp_mask(points, ends, epsilon):
  """Which points Ramer-Douglas-Peucker keeps, for the polylines that end at
  the indices ``ends`` of ``points`` (k, 2), laid back to back.

  Every interval between two kept points is handled at once per round, which
  keeps the same points as the usual recursion (each interval's split depends
  only on its own end points) in a few vectorised rounds."""
  n = len(points)
  x, y = points[:, 0], points[:, 1]
  keep = np.zeros(n, bool)
  ends = np.asarray(ends, np.int64)
  keep[ends] = True
  keep[np.concatenate([[0], ends[:-1] + 1])] = True
  todo = ~keep   # points inside an interval that may still split
  while todo.any():
    kept = np.flatnonzero(keep)
    seg = np.cumsum(keep) - 1   # interval of each point: kept[seg] <= i
    p = np.flatnonzero(todo)
    a, b = kept[seg[p]], kept[seg[p] + 1]
    dx, dy = x[b] - x[a], y[b] - y[a]
    rx, ry = x[p] - x[a], y[p] - y[a]
    norm = np.hypot(dx, dy)
    d = np.where(norm == 0, np.hypot(rx, ry),
                 np.abs(dx * ry - dy * rx) / np.where(norm == 0, 1.0, norm))
    group = seg[p]
    starts = np.flatnonzero(np.concatenate([[True], group[1:] != group[:-1]]))
    size = np.diff(np.append(starts, len(p)))
    best = np.maximum.reduceat(d, starts)
    first = _first_max(d, best, starts, size)
    split = best > epsilon
    keep[p[first[split]]] = True
    todo[p] = np.repeat(split, size)
    todo[keep] = False
  return keep


def _first_max(d, best, starts, size):
  """Index (into ``d``) of the first maximum of each group of ``d``."""
  at = np.where(d == np.repeat(best, size), np.arange(len(d)), len(d))
  return np.minimum.reduceat(at, starts)


def rdp(points, epsilon=EPSILON):
  """Ramer-Douglas-Peucker: the points of the polyline ``points`` (k, 2) kept
  at tolerance ``epsilon``.  Between two kept points, the farthest point in
  between (the first if tied) is kept when its distance to the line through
  them exceeds ``epsilon`` (to the point itself when they coincide), and
  both halves are simplified again."""
  points = np.asarray(points, np.float64)
  if len(points) < 3:
    return points.copy()
  return points[_rdp_mask(points, [len(points) - 1], epsilon)]


def resample(points, spacing=SPACING):
  """Points every ``spacing`` along the polyline, from its first point, plus
  its last point (kept when the length is not a multiple of ``spacing``)."""
  points = np.asarray(points, np.float64)
  seg = np.hypot(*np.diff(points, axis=0).T)
  points = points[np.concatenate([[True], seg > 0])]   # no zero-length steps
  if len(points) < 2:
    return points[:1].copy()
  cum = np.concatenate([[0.0], np.cumsum(seg[seg > 0])])
  length = cum[-1]
  at = np.arange(int(np.floor(length / spacing + 1e-9)) + 1) * spacing
  if length - at[-1] > 1e-9:
    at = np.append(at, length)
  return np.stack([np.interp(at, cum, points[:, 0]),
                   np.interp(at, cum, points[:, 1])], axis=1)


def _simplify_raw(strokes):
  """Raw strokes aligned to (0, 0), scaled so the longer side is SIDE,
  resampled at SPACING and RDP-simplified at EPSILON (QuickDraw's steps)."""
  flat = np.concatenate(strokes)
  low = flat.min(axis=0)
  span = float((flat.max(axis=0) - low).max())
  scale = SIDE / span if span > 0 else 1.0
  lines = [resample((s - low) * scale) for s in strokes]
  ends = np.cumsum([len(s) for s in lines]) - 1
  keep = _rdp_mask(np.concatenate(lines), ends, EPSILON)
  return np.split(np.concatenate(lines)[keep],
                  np.cumsum(keep)[ends[:-1]])


def drawing_to_stroke3(strokes, raw):
  """A drawing, as a list of (k, 2) point arrays, -> int16 (n, 3) stroke-3;
  None when it has no points.

  ``raw``: simplified first (:func:`_simplify_raw`); QuickDraw's simplified
  drawings are not (it did that already).  Then the points are rounded, a
  point equal to the one before it in its stroke is dropped, and the rows
  are offsets from the previous point (the first from (0, 0)) with pen = 1
  on each stroke's last point."""
  strokes = [np.asarray(s, np.float64) for s in strokes if len(s)]
  if not strokes:
    return None
  if raw:
    strokes = _simplify_raw(strokes)
  points = np.round(np.concatenate(strokes))
  stroke = np.repeat(np.arange(len(strokes)), [len(s) for s in strokes])
  repeat = np.zeros(len(points), bool)
  repeat[1:] = ((points[1:] == points[:-1]).all(axis=1)
                & (stroke[1:] == stroke[:-1]))
  points, stroke = points[~repeat], stroke[~repeat]
  out = np.zeros((len(points), 3), np.int16)
  out[:, :2] = np.diff(points, axis=0, prepend=np.zeros((1, 2)))
  out[:, 2] = np.append(stroke[1:] != stroke[:-1], True)
  return out
