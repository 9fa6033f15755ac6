"""Stroke-3 data: loading, validation, cleaning and augmentation (method.md §1).

A sketch is a float32 array ``(n, 3)`` of rows ``(dx, dy, pen_lifted)``:
offsets from the previous point and 1 when the pen lifts after this point.
Everything here is pure NumPy; the tf.data pipeline (``data/pipeline.py``)
calls these functions per sketch.
"""
import os

import numpy as np

from utils.errors import UserError

SPLITS = ("train", "valid", "test")
CLAMP = 1000.0


def load_strokes_npz(path):
  """Reads a sketch-rnn ``<category>.npz`` -> ``{split: [float32 (n,3), ...]}``.

  Accepts the real files as they are (int16 or float64 elements, object or
  regular arrays, any split sizes).  Raises UserError naming the file, split
  and sketch index for anything unusable: missing / unreadable / truncated
  file, missing key, a sketch that is not a numeric non-empty ``(n, 3)``
  array, non-finite offsets, pen values other than 0/1.
  """
  if not os.path.isfile(path):
    raise UserError(f"stroke file {path!r} does not exist")
  npz = open_npz(path, "stroke file")
  with npz:
    missing = [k for k in SPLITS if k not in npz.files]
    if missing:
      raise UserError(f"stroke file {path!r} has no key(s) {', '.join(missing)}:"
                      f" expected keys {', '.join(SPLITS)} (found "
                      f"{', '.join(npz.files) or 'none'})")
    out = {}
    for split in SPLITS:
      try:
        raw = npz[split]
      except Exception as e:  # truncated member, bad pickle, ...
        raise UserError(f"cannot read split {split!r} of stroke file {path!r}"
                        f" (file truncated or corrupt: {short_error(e)})") from None
      out[split] = _validate_split(raw, path, split)
  return out


def open_npz(path, what, hint=""):
  """``np.load`` of a sketch-rnn style .npz (object arrays, latin1 pickles).

  Anything that is not a zip archive is refused before unpickling; a
  truncated or corrupt archive is a one-line UserError.
  """
  try:
    with open(path, "rb") as f:
      magic = f.read(4)
  except OSError as e:
    raise UserError(f"cannot read {what} {path!r}: {e.strerror}") from None
  if magic not in (b"PK\x03\x04", b"PK\x05\x06"):  # zip (or empty zip)
    raise UserError(f"{what} {path!r} is not a valid .npz file{hint}")
  try:
    return np.load(path, allow_pickle=True, encoding="latin1")
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f"cannot read {what} {path!r}: truncated or corrupt .npz "
                    f"({short_error(e)}){hint}") from None


def short_error(err):
  """First line of an exception message, shortened, for one-line errors."""
  text = str(err).strip().splitlines()
  return (text[0] if text else type(err).__name__)[:120]


def _validate_split(raw, path, split):
  """Converts one split to a list of float32 (n,3) arrays, checking each."""
  where = f"stroke file {path!r} split {split!r}"
  if raw.ndim == 0:
    raise UserError(f"{where} is a scalar, expected an array of sketches")
  seqs = []
  for i, s in enumerate(raw):
    try:
      a = np.asarray(s, dtype=np.float32)
    except (TypeError, ValueError):
      raise UserError(f"{where} sketch {i} is not a numeric array") from None
    if a.ndim != 2 or a.shape[1] != 3:
      raise UserError(f"{where} sketch {i} has shape {tuple(a.shape)}, "
                      f"expected (n, 3) rows of (dx, dy, pen)")
    if a.shape[0] == 0:
      raise UserError(f"{where} sketch {i} is empty, expected at least 1 point")
    seqs.append(a)
  if not seqs:
    return seqs
  flat = np.concatenate(seqs)
  if not np.isfinite(flat).all():
    i = next(i for i, a in enumerate(seqs) if not np.isfinite(a).all())
    raise UserError(f"{where} sketch {i} contains NaN or infinite values")
  pen = flat[:, 2]
  if not np.all((pen == 0) | (pen == 1)):
    i = next(i for i, a in enumerate(seqs)
             if not np.all((a[:, 2] == 0) | (a[:, 2] == 1)))
    raise UserError(f"{where} sketch {i} has pen values other than 0/1")
  return seqs


def clean_strokes(seqs, limit=CLAMP):
  """Clamps every dx, dy to [-limit, limit] (method.md §1); returns new arrays."""
  out = []
  for s in seqs:
    c = np.array(s, dtype=np.float32)
    np.clip(c[:, :2], -limit, limit, out=c[:, :2])
    out.append(c)
  return out


def compute_scale_factor(train_seqs):
  """sigma_data of method.md (1): the std of all dx and dy values of the
  training split."""
  if not train_seqs:
    raise UserError("cannot compute the scale factor: the training split is empty")
  xy = np.concatenate([np.asarray(s)[:, :2] for s in train_seqs]).astype(np.float64)
  std = float(np.std(xy))
  if not std > 0:
    raise UserError("cannot compute the scale factor: all training offsets are 0")
  return std


def apply_scale(seqs, scale_factor):
  """method.md (1): divides dx, dy of every sketch by ``scale_factor``;
  returns new arrays."""
  out = []
  for s in seqs:
    c = np.array(s, dtype=np.float32)
    c[:, :2] /= np.float32(scale_factor)
    out.append(c)
  return out


def to_stroke5(seqs, max_len):
  """Stroke-3 list -> float32 ``(N, max_len+1, 5)`` batches (method.md (2)).

  Row 0 is S0 = (0,0,1,0,0); rows 1..n hold (dx, dy, 1-pen, pen, 0);
  the rest is (0,0,0,0,1) padding."""
  n_seq = len(seqs)
  out = np.zeros((n_seq, max_len + 1, 5), np.float32)
  out[:, 0, 2] = 1.0
  if n_seq == 0:
    return out
  lens = np.array([len(s) for s in seqs])
  if lens.max() > max_len:
    raise ValueError(f"sketch of length {lens.max()} > max_len {max_len}")
  flat = np.concatenate(seqs).astype(np.float32)
  rows = np.repeat(np.arange(n_seq), lens)
  cols = 1 + np.arange(len(flat)) - np.repeat(np.cumsum(lens) - lens, lens)
  out[rows, cols, 0:2] = flat[:, 0:2]
  out[rows, cols, 2] = 1.0 - flat[:, 2]
  out[rows, cols, 3] = flat[:, 2]
  pad = np.arange(max_len + 1)[None, :] > lens[:, None]
  out[pad, 4] = 1.0
  return out


def random_scale(seq, r, rng):
  """method.md (4): dx *= U(1-r, 1+r), dy *= U(1-r, 1+r), independently."""
  sx, sy = rng.uniform(1.0 - r, 1.0 + r, size=2)
  out = np.array(seq, dtype=np.float32)
  out[:, 0] *= np.float32(sx)
  out[:, 1] *= np.float32(sy)
  return out


def droppable_points(seq):
  """Bool mask of the points that point dropping may remove (method.md §1,
  the text after (4)).

  A point is eligible when it is pen-down (pen == 0) and at least the third
  in its run of consecutive pen-down points; the last row of the sketch is
  never eligible (it has no next point to merge into)."""
  seq = np.asarray(seq)
  return _droppable_flat(seq[:, 2], np.array([len(seq)]))


def _droppable_flat(pen, lens):
  """``droppable_points`` for sketches concatenated row-wise (lengths ``lens``)."""
  n = len(pen)
  idx = np.arange(n)
  ends = np.cumsum(lens) - 1
  down = pen == 0
  breaks = ~down
  breaks[ends] = True  # a run never continues into the next sketch
  last_break = np.maximum.accumulate(np.where(breaks, idx, -1))
  prev_break = np.concatenate([[-1], last_break[:-1]])
  run_pos = idx - prev_break  # 1-based position inside the current run
  eligible = down & (run_pos >= 3)
  eligible[ends] = False
  return eligible


def _merge_dropped(flat, drop):
  """Removes the rows in ``drop``, adding each one's offset to the next kept row.

  ``flat`` may hold several sketches back to back: their last rows are never
  dropped, so no offset crosses a sketch boundary.
  """
  keep = ~drop
  pos = np.cumsum(flat[:, :2].astype(np.float64), axis=0)[keep]
  out = np.empty((len(pos), 3), np.float32)
  out[:, :2] = np.diff(pos, axis=0, prepend=0.0)
  out[:, 2] = flat[keep, 2]
  return out, keep


def drop_points(seq, p, rng):
  """Point-dropping augmentation (method.md §1, the text after (4)).

  Each eligible point (see ``droppable_points``) is, with probability ``p``,
  merged into the point after it: removed, its offset added to the next
  point (consecutive drops accumulate), so every kept point stays at its
  absolute position and the end points of every stroke are kept."""
  seq = np.asarray(seq, dtype=np.float32)
  u = rng.random(len(seq))  # always drawn: the stream does not depend on p
  drop = droppable_points(seq) & (u < p)
  if not drop.any():
    return seq.copy()
  return _merge_dropped(seq, drop)[0]


def augment_strokes(seqs, r, p, rng):
  """``random_scale`` then ``drop_points`` on a list of sketches, vectorised.

  Same distribution as calling the two per sketch; one draw of the RNG for
  the whole list.  Returns a new list of float32 (n', 3) arrays.
  """
  if not len(seqs):
    return []
  lens = np.array([len(s) for s in seqs])
  flat = np.concatenate(seqs).astype(np.float32)
  scales = rng.uniform(1.0 - r, 1.0 + r, size=(len(seqs), 2)).astype(np.float32)
  flat[:, :2] *= np.repeat(scales, lens, axis=0)
  drop = _droppable_flat(flat[:, 2], lens) & (rng.random(len(flat)) < p)
  if not drop.any():
    return np.split(flat, np.cumsum(lens)[:-1])
  out, keep = _merge_dropped(flat, drop)
  seq_id = np.repeat(np.arange(len(seqs)), lens)[keep]
  new_lens = np.bincount(seq_id, minlength=len(seqs))
  return np.split(out, np.cumsum(new_lens)[:-1])
