"""The samples.npz format: written by sample.py, read by visualization.py and
evaluate.py (method.md §6-§8).  This module is its one owner: the keys, their
dtypes, and every check a reader makes.

Keys (N sketches, codes of size D, K level-k components, L level-l units):

  strokes     (N,) object   stroke-3 float arrays, in data units (x scale_factor)
  images      (N, w, w)     uint8 renderings of the strokes
  z           (N, D)        float32 codes the sketches were decoded from
  label_k / label_l (N,)    int32 posterior argmax of each code
  category    (N,)          int32 index into ``categories`` (-1 = none)
  ref_index   (N,)          int32 test-split index of the reference (-1 = none)
  ref_images  (N, w, w)     uint8 reference images (zeros without a reference)
  temperature, seed, greedy, mode, scale_factor   scalars of the sampling run
  categories  (C,) str      the model's categories
  pi_l (L,), pi_k (K,), q_kl (K, L)   float32 snapshot of the hierarchy
  model_dir, data_dir       str: where the inputs live, so that later commands
                            never write into them

``strokes`` needs pickling, so readers here never load it (allow_pickle=False).
"""
import os
import zipfile

import numpy as np

from utils.errors import UserError
from utils.io import atomic_savez

SAMPLES_NAME = "samples.npz"
ROLE = "sample"   # utils/ownership.py role of the file (and of its folder)
REQUIRED = ("images", "z", "label_k", "label_l", "pi_l", "pi_k", "q_kl")


def _object_array(seqs):
  out = np.empty(len(seqs), dtype=object)
  for i, s in enumerate(seqs):
    out[i] = s
  return out


def write_samples(folder, *, strokes, images, z, label_k, label_l, category,
                  ref_index, ref_images, temperature, seed, greedy, mode,
                  categories, scale_factor, pi_l, pi_k, q_kl, model_dir,
                  data_dir):
  """Writes ``<folder>/samples.npz`` atomically; returns its path."""
  path = os.path.join(folder, SAMPLES_NAME)
  atomic_savez(
      path, role=ROLE,
      strokes=_object_array(strokes), images=np.asarray(images, np.uint8),
      z=np.asarray(z, np.float32), label_k=np.asarray(label_k, np.int32),
      label_l=np.asarray(label_l, np.int32),
      category=np.asarray(category, np.int32),
      ref_index=np.asarray(ref_index, np.int32),
      ref_images=np.asarray(ref_images, np.uint8),
      temperature=np.float32(temperature), seed=np.int64(seed),
      greedy=np.bool_(greedy), mode=np.str_(mode),
      categories=np.array(categories, dtype=str),
      scale_factor=np.float32(scale_factor),
      pi_l=np.asarray(pi_l, np.float32), pi_k=np.asarray(pi_k, np.float32),
      q_kl=np.asarray(q_kl, np.float32),
      model_dir=np.str_(os.path.abspath(model_dir)),
      data_dir=np.str_(os.path.abspath(data_dir) if data_dir else ""))
  return path


def _read_npz(path):
  if not os.path.isfile(path):
    raise UserError(f"{path!r} not found: run sample.py first and pass its "
                    f"--output_dir here")
  if os.path.getsize(path) == 0:
    raise UserError(f"{path!r} is empty: expected the samples.npz of sample.py")
  try:
    with np.load(path, allow_pickle=False) as f:
      missing = [k for k in REQUIRED if k not in f.files]
      if missing:
        raise UserError(f"{path!r} lacks keys {missing}: expected the "
                        f"samples.npz of sample.py")
      out = {k: f[k] for k in f.files if k != "strokes"}
  except UserError:
    raise
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise UserError(f"{path!r} is not a readable npz ({e}): expected the "
                    f"samples.npz of sample.py") from None
  return out


def load_samples(input_dir):
  """Reads and checks ``<input_dir>/samples.npz`` -> dict of arrays.

  Always has images (N,w,w) uint8, z (N,D) float32, label_k, label_l,
  category (N,) int32 (-1 = none), ref_index (N,) int32 (-1 = none),
  categories (list of str), pi_l (L,), pi_k (K,), q_kl (K,L) float64 and
  ``path``; ref_images when present.  Anything inconsistent is a UserError naming the file and key.
  """
  path = os.path.join(input_dir, SAMPLES_NAME)
  raw = _read_npz(path)

  def bad(key, expected):
    value = raw.get(key)
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    raise UserError(f"{path!r}: key {key!r} (shape {shape}, dtype {dtype}) is "
                    f"invalid: expected {expected}")

  z = raw["z"]
  if z.ndim != 2 or z.shape[0] == 0:
    if z.ndim == 2 or z.size == 0:
      raise UserError(f"{path!r} contains no samples")
    bad("z", "a (N, D) array of codes")
  n = z.shape[0]
  if not np.issubdtype(z.dtype, np.floating) or not np.all(np.isfinite(z)):
    bad("z", "finite floats")
  images = raw["images"]
  if (images.ndim != 3 or images.shape[0] != n or images.shape[1] != images.shape[2]
      or images.dtype != np.uint8):
    bad("images", f"uint8 (N={n}, w, w) sketch images")
  q_kl = np.asarray(raw["q_kl"], np.float64)
  if q_kl.ndim != 2 or not np.all(np.isfinite(q_kl)):
    bad("q_kl", "a finite (K, L) matrix")
  num_k, num_l = q_kl.shape
  out = {"path": path, "z": z.astype(np.float32), "images": images, "q_kl": q_kl}
  for key, size in (("pi_k", num_k), ("pi_l", num_l)):
    v = np.asarray(raw[key], np.float64)
    if v.shape != (size,) or not np.all(np.isfinite(v)):
      bad(key, f"({size},) finite weights matching q_kl {q_kl.shape}")
    out[key] = v
  names = raw.get("categories", np.zeros((0,), str))
  out["categories"] = [str(c) for c in np.atleast_1d(names)]
  for key, low, high in (("label_k", 0, num_k), ("label_l", 0, num_l),
                         ("category", -1, len(out["categories"]) or 1 << 30),
                         ("ref_index", -1, 1 << 62)):
    v = raw.get(key, np.full((n,), -1, np.int32))
    if (v.shape != (n,) or not np.issubdtype(v.dtype, np.integer)
        or (n and (v.min() < low or v.max() >= high))):
      bad(key, f"integers in [{low}, {high}) of shape ({n},)")
    out[key] = v.astype(np.int32)
  if "ref_images" in raw:
    if raw["ref_images"].shape != images.shape or raw["ref_images"].dtype != np.uint8:
      bad("ref_images", f"uint8 {images.shape} like images")
    out["ref_images"] = raw["ref_images"]
  for key in ("temperature", "seed", "mode", "model_dir", "data_dir"):
    if key in raw:
      out[key] = raw[key].item() if raw[key].ndim == 0 else raw[key]
  return out
