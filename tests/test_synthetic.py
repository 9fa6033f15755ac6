"""data.synthetic: format, determinism, recognisable categories and styles."""
import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

from data import raster, synthetic
from data.strokes import load_strokes_npz
from tests.conftest import ROOT
from utils.errors import UserError

SIZES = (150, 20, 60)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  out = tmp_path_factory.mktemp("syn")
  synthetic.generate(str(out), seed=7, sizes=SIZES, png_width=48)
  return out


def test_files_and_format(dataset):
  names = set(os.listdir(dataset))
  assert "contact_sheet.png" in names
  assert len(synthetic.CATEGORIES) >= 5
  for cat, (_, styles) in synthetic.CATEGORIES.items():
    assert 2 <= len(styles) <= 3
    d = np.load(dataset / f"{cat}.npz", allow_pickle=True, encoding="latin1")
    png = np.load(dataset / f"{cat}_png.npz")
    sty = np.load(dataset / f"{cat}_styles.npz")
    for split, n in zip(synthetic.SPLITS, SIZES):
      seqs = d[split]
      assert seqs.dtype == object and len(seqs) == n
      assert png[split].shape == (n, 48, 48) and png[split].dtype == np.uint8
      assert sty[split].shape == (n,) and sty[split].dtype == np.int32
      assert set(np.unique(sty[split])) <= set(range(len(styles)))
      for s, img in zip(seqs[:5], png[split][:5]):
        assert s.dtype == np.int16 and s.ndim == 2 and s.shape[1] == 3
        np.testing.assert_array_equal(img, raster.render(s, 48))
      lens = np.array([len(s) for s in seqs])
      assert lens.min() >= 5 and lens.max() <= 90   # QuickDraw-sparse
      # QuickDraw's simplification: absolute points (offsets from (0, 0))
      # aligned to the top-left, the longer side 255 (RDP may drop an
      # extreme point of a curve: within epsilon 2, plus rounding).
      points = [np.cumsum(s[:, :2].astype(np.int64), 0) for s in seqs]
      assert all(0 <= p.min() and p.min(axis=0).max() <= 3 for p in points)
      assert all(252 <= p.max() <= 255 for p in points)
      assert all(s[-1, 2] == 1 and set(np.unique(s[:, 2])) <= {0, 1} for s in seqs)
    # The project's loader accepts the files as they are.
    loaded = load_strokes_npz(str(dataset / f"{cat}.npz"))
    assert [len(loaded[k]) for k in synthetic.SPLITS] == list(SIZES)


def test_sketches_are_quickdraw_sparse():
  """After QuickDraw's resampling and RDP the sketches are sparse (the raw
  drawings average ~90 points, a 1-unit resampling ~900) and no offset
  inside a stroke is zero (repeated points are dropped)."""
  seqs, _, _ = synthetic.generate_sketches(200, seed=3)
  assert 25 <= np.mean([len(s) for s in seqs]) <= 50
  for s in seqs:
    inside = np.concatenate([[False], s[:-1, 2] == 0])   # pen was down
    assert not np.any(inside & np.all(s[:, :2] == 0, axis=1))


def _strokes(seq):
  """Absolute points of each stroke of an int16 stroke-3 sketch."""
  xy = np.cumsum(seq[:, :2].astype(np.float64), axis=0)
  ends = np.flatnonzero(seq[:, 2] == 1) + 1
  return [p for p in np.split(xy, ends) if len(p)]


def _box_area(points):
  return float(np.prod(points.max(0) - points.min(0)))


@pytest.mark.parametrize("category", ["face", "fish"])
def test_human_order_draws_the_outline_first_from_its_top(category):
  """Human order: the outline (the largest stroke) comes first in every
  sketch and starts at its topmost point; random order puts it first in
  about one sketch of as many strokes."""
  def outline_first(order):
    seqs, _ = synthetic.make_split(category, "train", 120, 9, order)
    firsts = [_strokes(s)[0] for s in seqs]
    first = [_box_area(f) >= max(map(_box_area, _strokes(s)))
             for f, s in zip(firsts, seqs)]
    return np.mean(first), firsts

  human, firsts = outline_first("human")
  assert human == 1.0
  for f in firsts:
    height = f[:, 1].max() - f[:, 1].min()
    assert f[0, 1] - f[:, 1].min() <= 0.1 * height
  random_share, _ = outline_first("random")
  assert random_share < 0.6, random_share


def test_random_order_is_the_earlier_generator():
  """stroke_order="random" draws, bit for bit, what the generator wrote
  before the human order existed (its strokes permuted, loops starting
  anywhere): the sha256 below was computed by that earlier code."""
  seqs, _, _ = synthetic.generate_sketches(50, seed=5, stroke_order="random")
  flat = np.concatenate(seqs)
  assert flat.shape == (1716, 3)
  assert hashlib.sha256(flat.tobytes()).hexdigest() == (
      "43a3ac947892c6457e0fe2e02e94ab7713d850d7f496d9e855af89ce8badeefe")


def test_deterministic_and_category_independent(tmp_path):
  synthetic.generate(str(tmp_path / "a"), 3, (10, 2, 2), ["fish", "star"],
                     contact_sheet=False)
  synthetic.generate(str(tmp_path / "b"), 3, (10, 2, 2), ["star"],
                     contact_sheet=False)
  synthetic.generate(str(tmp_path / "c"), 4, (10, 2, 2), ["star"],
                     contact_sheet=False)
  load = lambda p: np.load(p, allow_pickle=True)["train"]
  a, b, c = (load(tmp_path / x / "star.npz") for x in "abc")
  assert all(np.array_equal(x, y) for x, y in zip(a, b))
  assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def _features(imgs, side=16, centre=False):
  """side x side average-pooled ink (48x48 images), normalised; ``centre``
  subtracts the set's mean first, so the ink every sketch shares (a face's
  outline and eyes) does not drown what tells styles apart (its mouth)."""
  ink = 1.0 - imgs.astype(np.float32) / 255
  k = ink.shape[1] // side
  f = ink.reshape(len(ink), side, k, side, k).mean(axis=(2, 4))
  f = f.reshape(len(ink), -1)
  if centre:
    f = f - f.mean(axis=0)
  return f / (np.linalg.norm(f, axis=1, keepdims=True) + 1e-6)


def _nearest_centroid_accuracy(train_x, train_y, test_x, test_y):
  labels = np.unique(train_y)
  cent = np.stack([train_x[train_y == k].mean(0) for k in labels])
  pred = labels[np.argmax(test_x @ cent.T, axis=1)]
  return (pred == test_y).mean()


def test_categories_and_styles_are_distinguishable(dataset):
  cats = list(synthetic.CATEGORIES)
  x = {s: [] for s in ("train", "test")}
  y = {s: [] for s in ("train", "test")}
  for i, cat in enumerate(cats):
    png = np.load(dataset / f"{cat}_png.npz")
    for s in x:
      x[s].append(_features(png[s]))
      y[s].append(np.full(len(png[s]), i))
  x = {s: np.concatenate(v) for s, v in x.items()}
  y = {s: np.concatenate(v) for s, v in y.items()}
  acc = _nearest_centroid_accuracy(x["train"], y["train"], x["test"], y["test"])
  assert acc >= 0.9, acc                      # chance: 1/5
  # Styles within a category: well above chance as well.
  for cat, (_, styles) in synthetic.CATEGORIES.items():
    png, sty = np.load(dataset / f"{cat}_png.npz"), np.load(dataset / f"{cat}_styles.npz")
    acc = _nearest_centroid_accuracy(
        _features(png["train"], 8, True), sty["train"],
        _features(png["test"], 8, True), sty["test"])
    assert acc >= min(1.0, 1.6 / len(styles)), (cat, acc)


def test_errors(tmp_path):
  with pytest.raises(UserError, match="unknown synthetic category"):
    synthetic.generate(str(tmp_path), categories=["dragon"])
  res = subprocess.run([sys.executable, "-m", "data.synthetic", "--out_dir",
                        str(tmp_path / "x"), "--categories", "dragon"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
  assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
  assert not (tmp_path / "x").exists()
