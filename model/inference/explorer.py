"""The functions behind explore.py's tabs: a trained model used by hand.

:class:`Explorer` wraps a backend (model/inference/backends.py: a model
folder or an export of export.py) and, when the model's data folder is
there, its test split (encoded once, for the gallery and the nearest
sketches).  Each tab's action is one method that takes the page's raw values
(numbers may be None, NaN or absurd; a drawing is the canvas's JSON), checks
them (UserError with one line saying what is expected) and returns arrays
and labels; model/inference/explorer_ui.py turns those into the page.

* Hierarchy: :meth:`tree_rows`, :meth:`tree_image` (utils/tree_figure.py's
  figure of the live units and components), :meth:`sample_node` (fresh
  sketches from a level-l unit or a level-k component, sampler.py's codes).
* Draw: :meth:`drawing_input` (the canvas's strokes through data/simplify.py
  and data/raster.py, exactly as the training images were made) and
  :meth:`encode_drawing` (p(l|y), the top p(k|y), reconstructions, the
  nearest test sketches by code).
* Analogy and interpolation: :meth:`gallery_page`, :meth:`analogy`,
  :meth:`interpolate` (sampler.analogy / sampler.interpolate of test
  sketches' codes, or of the drawing's code as C).

Every batch of codes is decoded in one call of the batched sampler.
"""
import dataclasses
import json
import math
import os
import tempfile

import numpy as np
from PIL import Image

from data.dataset import load_dataset
from data.raster import render, render_many
from data.simplify import drawing_to_stroke3
from model.inference import sampler
from utils.drawing import palette, thumbnail
from utils.errors import UserError
from utils.metrics import squared_distances
from utils.tree_figure import draw_tree, tree_structure

MAX_SKETCHES = 32      # sketches per action
MAX_STEPS = 16         # interpolation codes
MAX_TEMPERATURE = 5.0
MAX_POINTS = 20000     # points of a drawing
THUMB = 96             # px of a sketch on the page (rendered at png_width)
INPUT_ZOOM = 4         # the 48x48 model input is shown 4x, pixels kept
PER_PAGE = 40          # test sketches per gallery page


# --- checks of the page's values ----------------------------------------------

def check_int(value, name, lo, hi):
  """An integer in [lo, hi] from a page field (None, NaN, 2.5 are refused)."""
  try:
    number = float(value)
  except (TypeError, ValueError):
    number = math.nan
  if not (math.isfinite(number) and number == int(number) and lo <= number <= hi):
    raise UserError(f"{name} must be a whole number from {lo} to {hi}, "
                    f"got {value!r}")
  return int(number)


def check_temperature(value):
  try:
    number = float(value)
  except (TypeError, ValueError):
    number = math.nan
  if not (math.isfinite(number) and 0 < number <= MAX_TEMPERATURE):
    raise UserError(f"temperature must be a number > 0 and <= "
                    f"{MAX_TEMPERATURE:g} (0.24 is sample.py's), got {value!r}")
  return number


def check_seed(value):
  return check_int(value, "seed", 0, 2 ** 32 - 1)


def read_drawing(text):
  """The canvas's JSON, a list of strokes of [x, y] points -> list of (k, 2)
  float arrays; UserError for an empty canvas, a single dot or bad JSON."""
  try:
    strokes = json.loads(text) if isinstance(text, str) and text else []
    arrays = [np.asarray(s, np.float64).reshape(-1, 2) for s in strokes]
  except (ValueError, TypeError):
    raise UserError("the drawing is not a list of strokes of [x, y] points") from None
  arrays = [a for a in arrays if len(a)]
  if not arrays:
    raise UserError("the canvas is empty: draw a sketch first")
  points = np.concatenate(arrays)
  if len(points) > MAX_POINTS:
    raise UserError(f"the drawing has {len(points)} points; at most "
                    f"{MAX_POINTS} are taken: clear the canvas and draw less")
  if not np.isfinite(points).all():
    raise UserError("the drawing has points that are not finite numbers")
  if (points.max(0) - points.min(0)).max() == 0:
    raise UserError("the drawing is a single dot: draw at least one line")
  return arrays


# --- sketches on the page -------------------------------------------------------

@dataclasses.dataclass
class Sketches:
  """Decoded sketches: stroke-3 (real units), 48x48 renderings, the codes'
  posteriors (labels), one caption each and the level-l unit that colours
  each (the unit it was drawn from, else its code's label)."""
  strokes: list
  images: np.ndarray
  codes: object
  captions: list
  units: np.ndarray = None

  def thumbnails(self, num_units):
    """RGB (THUMB, THUMB, 3) images coloured by their level-l unit."""
    colours = palette(num_units)
    units = self.codes.label_l if self.units is None else self.units
    return [np.asarray(thumbnail(img, THUMB, colours[l]))
            for img, l in zip(self.images, units)]


def gray_thumbnails(images):
  return [np.asarray(thumbnail(img, THUMB)) for img in images]


class Explorer:
  """A loaded model and its test split, and one method per page action."""

  def __init__(self, backend, data_dir=None, max_test=0):
    self.backend = backend
    self.hps = backend.hps
    self.h = backend.hierarchy
    self.live_l = sampler.live_units(self.h)
    self.live_k = sampler.live_components(self.h)
    self.data_dir = data_dir or backend.data_dir
    self.test = None
    if self.data_dir:
      self.test = load_dataset(self.data_dir, self.hps).splits["test"].subset(
          max_test)
      self.test_codes = np.concatenate([
          backend.encode(self.test.images[i:i + 256]).m
          for i in range(0, len(self.test), 256)])

  @property
  def categories(self):
    return list(self.hps.categories)

  def decode(self, z, temperature, seed, captions):
    """Sketches of the codes ``z``, all in one sampler call."""
    strokes = self.backend.sample(z, temperature, seed, self.backend.max_len)
    images = render_many(strokes, self.hps.png_width, workers=1)
    return Sketches(strokes, images, self.backend.posteriors(z), captions)

  # --- Hierarchy --------------------------------------------------------------

  def tree_rows(self):
    """[unit l, pi_l, component k, pi_k, q(k|l)] of the live tree, units by
    decreasing pi_l (utils/tree_figure.py's structure)."""
    pi_l, pi_k = self.h.pi_l, self.h.pi_k()
    units, _, _ = tree_structure(pi_l, pi_k, self.h.q_kl)
    return [[l, round(float(pi_l[l]), 4), k, round(float(pi_k[k]), 4),
             round(q, 4)] for l, kids in units for k, q in kids]

  def tree_image(self, per_component=3, seed=0):
    """The tree figure (RGB array) with ``per_component`` fresh sketches
    drawn from each live component, as visualization.py's tree.jpg."""
    ks = np.repeat(self.live_k, per_component)
    z = np.concatenate([sampler.codes_from_level_k(self.h, k, per_component, seed)
                        for k in self.live_k]) if self.live_k else np.zeros(
                            (0, self.hps.z_size), np.float32)
    sketches = self.decode(z, 0.24, seed, [""] * len(z))
    samples = dict(images=sketches.images, label_k=ks,
                   label_l=sketches.codes.label_l, pi_l=self.h.pi_l,
                   pi_k=self.h.pi_k(), q_kl=self.h.q_kl,
                   categories=self.categories,
                   category=np.full(len(z), -1, np.int32))
    colours = [palette(len(self.h.pi_l))[l] for l in sketches.codes.label_l]
    with tempfile.TemporaryDirectory() as folder:
      path = os.path.join(folder, "tree.jpg")
      draw_tree(samples, colours, path, seed=seed,
                per_component=per_component)
      with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))

  def sample_node(self, level, index, n, temperature, seed):
    """Fresh sketches from level-l unit or level-k component ``index``
    (``level`` "l" or "k"): the codes of sample.py --level_l / --level_k."""
    n = check_int(n, "how many", 1, MAX_SKETCHES)
    temperature, seed = check_temperature(temperature), check_seed(seed)
    if level not in ("l", "k"):
      raise UserError(f"level must be 'l' (a unit) or 'k' (a component), "
                      f"got {level!r}")
    what = "level-l unit" if level == "l" else "level-k component"
    count = len(self.h.pi_l) if level == "l" else len(self.h.q_kl)
    index = check_int(index, what, 0, count - 1)
    live = self.live_l if level == "l" else self.live_k
    if index not in live:
      raise UserError(f"{what} #{index} is pruned (its prior is ~0 after "
                      f"RPCL): choose a live one: "
                      f"{', '.join(map(str, live)) or 'none'}")
    if level == "l":
      z, ks = sampler.codes_from_level_l(self.h, index, n, seed)
    else:
      z, ks = sampler.codes_from_level_k(self.h, index, n, seed), [index] * n
    out = self.decode(z, temperature, seed, [])
    if level == "l":
      out.units = np.full(n, index)
    drawn = f"l{index} k{{}}" if level == "l" else "k{}"
    out.captions = [f"{drawn.format(k)} \u2192 l{l}"
                    for k, l in zip(ks, out.codes.label_l)]
    return out

  # --- Draw -------------------------------------------------------------------

  def drawing_input(self, text):
    """(stroke-3, uint8 (w, w) image) of the canvas's drawing: QuickDraw's
    simplification (data/simplify.py, as the synthetic data) and the
    training images' rasteriser (data/raster.py)."""
    stroke3 = drawing_to_stroke3(read_drawing(text), raw=True)
    return stroke3, render(stroke3, self.hps.png_width)

  def encode_drawing(self, text, n, temperature, seed, top=5, neighbours=8):
    """The drawing's model input, p(l|y) of the live units, the top p(k|y),
    ``n`` reconstructions and the nearest test sketches by code."""
    n = check_int(n, "reconstructions", 1, MAX_SKETCHES)
    temperature, seed = check_temperature(temperature), check_seed(seed)
    _, image = self.drawing_input(text)
    code = self.backend.encode(image[None])
    p_l = {f"unit l{l}": float(code.p_l[0, l]) for l in self.live_l}
    order = np.argsort(-code.p_k[0], kind="stable")[:top]
    p_k = {f"component k{k}": float(code.p_k[0, k]) for k in order}
    z = np.repeat(code.m, n, axis=0)
    recon = self.decode(z, temperature, seed, [f"seed {seed} #{i}"
                                                for i in range(n)])
    return dict(image=image, zoomed=zoom(image), p_l=p_l, p_k=p_k,
                label_l=int(code.label_l[0]), label_k=int(code.label_k[0]),
                reconstructions=recon, nearest=self.nearest(code.m[0], neighbours))

  def nearest(self, m, count):
    """[(test index, distance)] of the test codes nearest to ``m``."""
    if self.test is None:
      return []
    d = squared_distances(m[None].astype(np.float64),
                          self.test_codes.astype(np.float64))[0]
    order = np.argsort(d, kind="stable")[:count]
    return [(int(i), float(np.sqrt(max(d[i], 0.0)))) for i in order]

  def test_caption(self, index):
    return f"#{index} {self.categories[self.test.labels[index]]}"

  def canvas_strokes(self, index, size, margin=24):
    """Test sketch ``index`` as the canvas's JSON, fitted to a ``size`` px
    canvas: a drawing to start from, or to check that the canvas's path to
    the model's input gives back the stored test image."""
    seq = self.test.strokes[self.test_index(index, "test sketch")]
    points = np.cumsum(np.asarray(seq, np.float64)[:, :2], axis=0)
    low, span = points.min(0), np.ptp(points, axis=0)
    scale = (size - 2 * margin) / max(float(span.max()), 1e-6)
    xy = (points - low) * scale + margin + 0.5 * (size - 2 * margin
                                                   - span * scale)
    ends = np.flatnonzero(np.asarray(seq)[:, 2] != 0) + 1
    strokes = [s for s in np.split(np.round(xy, 1), ends) if len(s)]
    return json.dumps([s.tolist() for s in strokes])

  # --- Analogy and interpolation ------------------------------------------------

  def require_test(self):
    if self.test is None:
      raise UserError("no test split: the model's data folder is not there; "
                      "start explore.py with --data_dir")

  def gallery_page(self, category, page):
    """(test indices, their images, captions, number of pages) of one page
    of the test split, optionally one category ("all" for every one)."""
    self.require_test()
    if category in (None, "", "all"):
      pool = np.arange(len(self.test))
    elif category in self.categories:
      pool = np.flatnonzero(self.test.labels == self.categories.index(category))
    else:
      raise UserError(f"unknown category {category!r}: the model knows "
                      f"{', '.join(self.categories)}")
    pages = max(1, -(-len(pool) // PER_PAGE))
    page = check_int(page, "page", 1, pages)
    ids = pool[(page - 1) * PER_PAGE:page * PER_PAGE]
    return (ids.tolist(), self.test.images[ids],
            [self.test_caption(i) for i in ids], pages)

  def test_index(self, value, name):
    self.require_test()
    return check_int(value, f"{name} (a test index)", 0, len(self.test) - 1)

  def _code_of(self, value, name, drawing=None):
    if drawing:
      _, image = self.drawing_input(drawing)
      return self.backend.encode(image[None]).m[0], image
    i = self.test_index(value, name)
    return self.test_codes[i], self.test.images[i]

  def analogy(self, a, b, c, n, temperature, seed, drawing=None):
    """``n`` sketches of z_C + (z_B - z_A) (sampler.analogy); C is the test
    sketch ``c`` or, given a drawing, the drawing.  Returns (sketches, the
    A, B, C images)."""
    n = check_int(n, "how many", 1, MAX_SKETCHES)
    temperature, seed = check_temperature(temperature), check_seed(seed)
    (za, ia), (zb, ib) = self._code_of(a, "A"), self._code_of(b, "B")
    zc, ic = self._code_of(c, "C", drawing)
    z = np.repeat(sampler.analogy(za, zb, zc)[None], n, axis=0)
    sketches = self.decode(z, temperature, seed, [f"C + (B - A) #{i}"
                                                  for i in range(n)])
    return sketches, [ia, ib, ic]

  def interpolate(self, a, b, steps, temperature, seed):
    """``steps`` sketches on the line from z_A to z_B (sampler.interpolate)."""
    steps = check_int(steps, "steps", 2, MAX_STEPS)
    temperature, seed = check_temperature(temperature), check_seed(seed)
    (za, ia), (zb, ib) = self._code_of(a, "A"), self._code_of(b, "B")
    z = sampler.interpolate(za, zb, steps)
    w = np.linspace(0.0, 1.0, steps)
    return self.decode(z, temperature, seed, [f"t={t:.2f}" for t in w]), [ia, ib]


def zoom(image, factor=INPUT_ZOOM):
  """The model's input enlarged with its pixels kept (nearest neighbour)."""
  img = Image.fromarray(image, "L")
  return np.asarray(img.resize((img.width * factor, img.height * factor),
                               Image.NEAREST))
