"""Loads a multi-category sketch dataset: strokes, images and labels (method.md §1).

For each category ``<cat>.npz`` (stroke-3) and ``<cat>_png.npz`` (images,
same keys/order/lengths) are read from ``data_dir``; the first
``num_per_category`` sketches of every split are kept, labels are category
indices in ``hps.categories`` order, offsets are clamped to [-1000, 1000] and
divided by the training-split scale factor.
"""
import dataclasses
import os
from typing import Dict, List

import numpy as np
from absl import logging

from data import strokes as S
from utils.errors import UserError

GET_DATA_HINT = ("generate data with `python -m data.synthetic --out_dir DIR` or "
                 "download it with `python -m data.quickdraw --categories a,b "
                 "--out_dir DIR`")


@dataclasses.dataclass
class Split:
  strokes: List[np.ndarray]  # float32 (n, 3), already divided by the scale factor
  images: np.ndarray         # uint8 (N, w, w)
  labels: np.ndarray         # int32 (N,)

  def __len__(self):
    return len(self.strokes)

  def subset(self, max_sketches, seed=0):
    """At most ``max_sketches`` sketches (0: all), a seeded random choice
    kept in split order (the same ones every call)."""
    n = len(self)
    if max_sketches <= 0 or n <= max_sketches:
      return self
    idx = np.sort(np.random.default_rng(seed).choice(n, max_sketches,
                                                     replace=False))
    return Split(strokes=[self.strokes[i] for i in idx],
                 images=self.images[idx], labels=np.asarray(self.labels)[idx])


@dataclasses.dataclass
class SketchData:
  splits: Dict[str, Split]
  scale_factor: float
  max_seq_len: int
  categories: List[str]


def stroke_path(data_dir, category):
  return os.path.join(data_dir, f"{category}.npz")


def png_path(data_dir, category):
  return os.path.join(data_dir, f"{category}_png.npz")


def check_data_dir(data_dir):
  """UserError (with a hint on getting data) for a missing or empty folder."""
  if not os.path.isdir(data_dir):
    raise UserError(f"data directory {data_dir!r} does not exist: {GET_DATA_HINT}")
  if not any(n.endswith(".npz") for n in os.listdir(data_dir)):
    raise UserError(f"data directory {data_dir!r} contains no .npz files: "
                    f"{GET_DATA_HINT}")


def _available(data_dir):
  names = sorted(n[:-4] for n in os.listdir(data_dir) if n.endswith(".npz")
                 and not n.endswith(("_png.npz", "_styles.npz")))  # side files
  return ", ".join(names) or "none"


def load_png_npz(path, lengths, png_width, category):
  """Reads ``<cat>_png.npz`` -> {split: uint8 (N, w, w)}, checking it against
  the stroke file's split ``lengths`` and ``png_width``."""
  hint = f"run `python -m data.seq2png --data_dir DIR --categories {category}`"
  if not os.path.isfile(path):
    raise UserError(f"image file {path!r} is missing: {hint} "
                    f"(with --png_width {png_width})")
  npz = S.open_npz(path, "image file", f": re-create it: {hint}")
  out = {}
  with npz:
    for split, n in lengths.items():
      if split not in npz.files:
        raise UserError(f"image file {path!r} has no key {split!r}: re-create "
                        f"it: {hint}")
      try:
        raw = npz[split]
        imgs = np.stack(raw) if raw.dtype == object and len(raw) else raw
      except Exception as e:
        raise UserError(f"cannot read split {split!r} of image file {path!r} "
                        f"({S.short_error(e)}): re-create it: {hint}") from None
      if len(imgs) != n:
        raise UserError(f"image file {path!r} split {split!r} has {len(imgs)} "
                        f"images but the stroke file has {n} sketches: "
                        f"re-create it: {hint}")
      if imgs.ndim != 3 or imgs.shape[1:] != (png_width, png_width):
        raise UserError(f"image file {path!r} split {split!r} has images of "
                        f"shape {tuple(imgs.shape[1:])}, expected "
                        f"({png_width}, {png_width}) for png_width={png_width}: "
                        f"re-create it: {hint} (with --png_width {png_width})")
      out[split] = np.asarray(imgs, np.uint8)
  return out


def load_dataset(data_dir, hps):
  """Reads every category of ``hps.categories`` -> :class:`SketchData`.

  ``hps.max_seq_len == -1``: the longest sketch over all splits; otherwise
  sketches longer than it are dropped (with a warning giving the count).
  ``hps.scale_factor == 0``: the std of the training split's dx, dy.
  """
  check_data_dir(data_dir)
  n_keep = hps.num_per_category
  parts = {split: ([], []) for split in S.SPLITS}
  lengths = []
  for label, cat in enumerate(hps.categories):
    path = stroke_path(data_dir, cat)
    if not os.path.isfile(path):
      raise UserError(f"category {cat!r}: stroke file {path!r} not found "
                      f"(available: {_available(data_dir)})")
    seqs = S.load_strokes_npz(path)
    lengths.append({k: len(v) for k, v in seqs.items()})
    for split in S.SPLITS:
      st, lb = parts[split]
      st.extend(S.clean_strokes(seqs[split][:n_keep]))
      lb.append(np.full(min(n_keep, len(seqs[split])), label, np.int32))
  images = _load_images(data_dir, hps, lengths)
  splits = {split: Split(st, images[split], np.concatenate(lb))
            for split, (st, lb) in parts.items()}
  max_seq_len = _resolve_max_len(splits, hps.max_seq_len)
  _check_batch(splits["train"], hps.batch_size, data_dir)
  scale = hps.scale_factor if hps.scale_factor > 0 else S.compute_scale_factor(
      splits["train"].strokes)
  for sp in splits.values():
    sp.strokes = S.apply_scale(sp.strokes, scale)
  return SketchData(splits, float(scale), int(max_seq_len), list(hps.categories))


def _load_images(data_dir, hps, lengths):
  """Every category's images, written straight into one preallocated uint8
  array per split (no concatenation: peak memory is the images once plus one
  category's file; benchmarks/bench_memory.py)."""
  w, n_keep = hps.png_width, hps.num_per_category
  kept = [{k: min(n_keep, n) for k, n in lens.items()} for lens in lengths]
  out = {split: np.empty((sum(k[split] for k in kept), w, w), np.uint8)
         for split in S.SPLITS}
  offset = dict.fromkeys(S.SPLITS, 0)
  for cat, lens, keep in zip(hps.categories, lengths, kept):
    imgs = load_png_npz(png_path(data_dir, cat), lens, w, cat)
    for split in S.SPLITS:
      out[split][offset[split]:offset[split] + keep[split]] = \
          imgs[split][:keep[split]]
      offset[split] += keep[split]
    del imgs
  return out


def _resolve_max_len(splits, wanted):
  """Computes max_seq_len (wanted == -1) or drops longer sketches."""
  lens = {k: np.array([len(s) for s in sp.strokes], np.int64)
          for k, sp in splits.items()}
  if wanted == -1:
    return max(int(v.max()) for v in lens.values() if len(v))
  dropped = {}
  for k, sp in splits.items():
    keep = lens[k] <= wanted
    if not keep.all():
      dropped[k] = int((~keep).sum())
      sp.strokes = [s for s, ok in zip(sp.strokes, keep) if ok]
      sp.images, sp.labels = sp.images[keep], sp.labels[keep]
  if dropped:
    logging.warning("max_seq_len=%d: dropped %s sketches longer than it", wanted,
                    ", ".join(f"{n} {k}" for k, n in dropped.items()))
  return wanted


def _check_batch(train, batch_size, data_dir):
  if len(train) < batch_size:
    raise UserError(f"batch_size={batch_size} is larger than the training split "
                    f"({len(train)} sketches in {data_dir!r}): lower batch_size "
                    f"or use more data (num_per_category)")
