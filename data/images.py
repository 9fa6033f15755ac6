"""Image augmentation and pixel scaling (method.md §1, training augmentation).

Images are ``png_width x png_width`` uint8 grayscale, white (255) background.
Augmentation works on the stored image (it is not re-rendered from the
augmented strokes): a random rescale about the centre with area resampling
and white padding, then a random rotation and translation with white fill.
"""
import numpy as np
from PIL import Image

WHITE = 255


# Batches are rescaled in chunks this size: every temporary stays small
# (< 128 kB), so the allocator reuses memory instead of mapping fresh pages
# for each batch (that page-fault churn tripled the cost in tf.data threads).
CHUNK = 8


def area_matrix(w, ratio):
  """(w, w) area-resampling weights of a rescale by ``ratio`` about the centre.

  Output pixel j covers the source interval ``[a_j, b_j] = c + ([j, j+1] - c)
  / ratio`` (c = w / 2); its weight on source pixel k is the overlap of that
  interval with ``[k, k+1]`` divided by its length (exact area averaging, as
  an INTER_AREA resize), computed as ``G(b_j) - G(a_j)`` with ``G(x) =
  clip(x - k, 0, 1)``.  Rows sum to < 1 where the interval leaves the image:
  the missing mass is white padding.  ``ratio`` may be an array (batch).
  """
  ratio = np.asarray(ratio, np.float64)[..., None]
  c = w / 2.0
  edges = (c + (np.arange(w + 1) - c) / ratio).astype(np.float32)  # (..., w+1)
  g = edges[..., :, None] - np.arange(w, dtype=np.float32)
  np.clip(g, 0.0, 1.0, out=g)
  m = np.diff(g, axis=-2)
  m *= (ratio[..., None]).astype(np.float32)  # divide by the length 1 / ratio
  return m


def random_rescale(img, ratio):
  """Rescales ``img`` (w, w) -- or a batch (N, w, w) with ``ratio`` (N,) -- by
  ``ratio`` (<= 1 shrinks) about the centre with area resampling and white
  padding.  ``ratio == 1`` is the identity."""
  img = np.asarray(img)
  if img.ndim == 3 and len(img) > CHUNK:
    out = np.empty(img.shape, np.uint8)
    for i in range(0, len(img), CHUNK):
      out[i:i + CHUNK] = random_rescale(img[i:i + CHUNK], ratio[i:i + CHUNK])
    return out
  m = area_matrix(img.shape[-1], ratio)
  ink = img.astype(np.float32)
  ink -= WHITE  # white = 0, so the padding adds nothing
  out = m @ ink @ np.swapaxes(m, -1, -2)
  out += WHITE + 0.5
  np.clip(out, 0, WHITE, out=out)
  return out.astype(np.uint8)  # floor(x + 0.5): round to nearest


def rotate_translate(img, angle, tx, ty):
  """Rotates by ``angle`` degrees about the centre, then shifts by (tx, ty) px.

  Bilinear resampling; uncovered pixels are white.
  """
  if angle == 0.0 and tx == 0.0 and ty == 0.0:
    return np.array(img, np.uint8)
  out = Image.fromarray(np.ascontiguousarray(img, np.uint8)).rotate(
      angle, resample=Image.Resampling.BILINEAR, translate=(tx, ty),
      fillcolor=WHITE)
  return np.asarray(out)


def _draw(hps, u):
  """Maps uniforms ``u`` (..., 4) to (ratio, angle, tx, ty) per method.md §1."""
  a, t = hps.png_rotate_angle, hps.png_translate_dist
  ratio = hps.png_scale_ratio + (1.0 - hps.png_scale_ratio) * u[..., 0]
  return ratio, a * (2 * u[..., 1] - 1), t * (2 * u[..., 2] - 1), t * (2 * u[..., 3] - 1)


def augment_image(img_uint8, hps, rng):
  """method.md (5): random rescale U(png_scale_ratio, 1), rotation U(-a, a)
  degrees and translation U(-t, t) px with white fill.  Returns uint8.

  Always draws four uniforms from ``rng`` (scale, angle, tx, ty), so the
  random stream does not depend on which augmentations are switched off."""
  ratio, angle, tx, ty = _draw(hps, rng.random(4))
  out = random_rescale(img_uint8, ratio)
  return rotate_translate(out, angle, tx, ty)


def augment_images(imgs, hps, rng):
  """``augment_image`` (method.md (5)) on each image of a ``(N, w, w)`` uint8
  batch, with the rescale vectorised; same result as calling it image by image."""
  ratio, angle, tx, ty = _draw(hps, rng.random((len(imgs), 4)))
  out = random_rescale(imgs, ratio)
  if hps.png_rotate_angle > 0 or hps.png_translate_dist > 0:
    for i in range(len(out)):
      out[i] = rotate_translate(out[i], angle[i], tx[i], ty[i])
  return out


def to_unit_range(img):
  """method.md (6): pixels v in [0, 255] -> v / 255 * 2 - 1 in [-1, 1], white = +1."""
  return np.asarray(img, np.float32) * np.float32(2.0 / 255.0) - np.float32(1.0)
