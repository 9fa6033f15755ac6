"""Stroke-3 loading, validation, stroke-5 conversion and augmentation (method.md §1)."""
import os

import numpy as np
import pytest

from data import strokes as S
from tests.conftest import SHARED_DATA
from utils.errors import UserError

REAL = {"aaron_sheep": (7400, 300, 300), "omniglot": (30000, 1000, 1000),
        "kanji.rdp200": (10358, 600, 500)}


def sketch(*rows):
  return np.array(rows, np.float32)


def random_sketch(rng, n_strokes=4):
  parts = []
  for _ in range(n_strokes):
    m = int(rng.integers(1, 9))
    pts = rng.integers(-20, 21, size=(m, 3)).astype(np.float32)
    pts[:, 2] = 0
    pts[-1, 2] = 1
    parts.append(pts)
  return np.concatenate(parts)


def save_npz(path, **splits):
  np.savez(path, **{k: np.array(v + [None], dtype=object)[:-1] for k, v in splits.items()})
  return str(path)


def good_splits():
  s = sketch([1, 2, 0], [3, 4, 1])
  return dict(train=[s, s], valid=[s], test=[s])


# ---------------------------------------------------------------- loading
@pytest.mark.skipif(not os.path.isdir(SHARED_DATA), reason="no shared data")
@pytest.mark.parametrize("name", sorted(REAL))
def test_loads_real_files(name):
  data = S.load_strokes_npz(os.path.join(SHARED_DATA, f"{name}.npz"))
  assert tuple(len(data[k]) for k in S.SPLITS) == REAL[name]
  raw = np.load(os.path.join(SHARED_DATA, f"{name}.npz"), allow_pickle=True,
                encoding="latin1")
  for split in S.SPLITS:
    for i in (0, len(data[split]) - 1):
      a = data[split][i]
      assert a.dtype == np.float32 and a.ndim == 2 and a.shape[1] == 3
      np.testing.assert_allclose(a, raw[split][i].astype(np.float64), rtol=1e-6)


def test_loads_regular_and_object_arrays(tmp_path):
  s = np.array([[[1, 2, 0], [3, 4, 1]]] * 3, np.int16)  # a regular 3-D array
  p = tmp_path / "r.npz"
  np.savez(p, train=s, valid=s, test=s)
  data = S.load_strokes_npz(str(p))
  assert len(data["train"]) == 3 and data["train"][0].dtype == np.float32
  np.testing.assert_array_equal(data["valid"][2], s[2])


def one_line_error(path, match):
  with pytest.raises(UserError, match=match) as e:
    S.load_strokes_npz(str(path))
  assert "\n" not in str(e.value)
  return str(e.value)


def test_missing_file(tmp_path):
  one_line_error(tmp_path / "nope.npz", "does not exist")


def test_truncated_and_non_npz(tmp_path):
  good = save_npz(tmp_path / "g.npz", **good_splits())
  raw = open(good, "rb").read()
  (tmp_path / "t.npz").write_bytes(raw[:len(raw) // 2])
  one_line_error(tmp_path / "t.npz", "t.npz")
  (tmp_path / "x.npz").write_text("this is not an npz file")
  one_line_error(tmp_path / "x.npz", "not a valid .npz")


def test_missing_keys(tmp_path):
  s = good_splits()
  p = save_npz(tmp_path / "k.npz", train=s["train"], valid=s["valid"])
  one_line_error(p, "no key.*test")


@pytest.mark.parametrize("bad,match", [
    (np.zeros((4, 2), np.float32), r"shape \(4, 2\)"),
    (np.zeros((0, 3), np.float32), "empty"),
    (np.array([[1, np.nan, 0]], np.float32), "NaN or infinite"),
    (np.array([[1, np.inf, 1]], np.float64), "NaN or infinite"),
    (np.array([[1, 1, 2]], np.int16), "pen values"),
    ("text", "not a numeric array|shape"),
])
def test_bad_sketch_names_file_split_index(tmp_path, bad, match):
  s = good_splits()
  s["valid"] = s["valid"] + [bad]
  msg = one_line_error(save_npz(tmp_path / "b.npz", **s), match)
  assert "b.npz" in msg and "'valid'" in msg and "sketch 1" in msg


# ---------------------------------------------------------------- cleaning
def test_clean_strokes_clamps_offsets_only():
  s = sketch([5000, -3000, 0], [10, -10, 1])
  (c,) = S.clean_strokes([s])
  np.testing.assert_array_equal(c, [[1000, -1000, 0], [10, -10, 1]])
  assert s[0, 0] == 5000  # input untouched


def test_scale_factor_is_std_of_all_dx_dy():
  rng = np.random.default_rng(0)
  seqs = [random_sketch(rng) for _ in range(30)]
  xy = np.concatenate([np.concatenate([s[:, 0], s[:, 1]]) for s in seqs])
  assert S.compute_scale_factor(seqs) == pytest.approx(np.std(xy), rel=1e-9)
  scaled = S.apply_scale(seqs, S.compute_scale_factor(seqs))
  assert S.compute_scale_factor(scaled) == pytest.approx(1.0, rel=1e-5)
  np.testing.assert_array_equal(scaled[0][:, 2], seqs[0][:, 2])


# ---------------------------------------------------------------- stroke-5
def test_to_stroke5_golden():
  a = sketch([1, 2, 0], [3, 4, 1])
  b = sketch([5, 6, 1])
  out = S.to_stroke5([a, b], 3)
  assert out.shape == (2, 4, 5) and out.dtype == np.float32
  np.testing.assert_array_equal(out[0], [[0, 0, 1, 0, 0], [1, 2, 1, 0, 0],
                                         [3, 4, 0, 1, 0], [0, 0, 0, 0, 1]])
  np.testing.assert_array_equal(out[1], [[0, 0, 1, 0, 0], [5, 6, 0, 1, 0],
                                         [0, 0, 0, 0, 1], [0, 0, 0, 0, 1]])
  with pytest.raises(ValueError):
    S.to_stroke5([a], 1)


# ---------------------------------------------------------------- augmentation
def reference_eligible(seq):
  """Spec text, written as a loop: pen-down, >= 3rd of its pen-down run, not last."""
  out, run = [], 0
  for i, (_, _, pen) in enumerate(seq):
    run = run + 1 if pen == 0 else 0
    out.append(bool(pen == 0 and run >= 3 and i < len(seq) - 1))
  return np.array(out)


def reference_drop(seq, drop):
  """Removes the rows in ``drop``, adding each one's offset to the next row."""
  out, carry = [], np.zeros(2)
  for row, d in zip(seq, drop):
    if d:
      carry += row[:2]
    else:
      out.append([row[0] + carry[0], row[1] + carry[1], row[2]])
      carry[:] = 0
  return np.array(out, np.float32)


def stroke_ends(seq):
  """Absolute positions of every stroke's first and last point."""
  pos = np.cumsum(seq[:, :2], axis=0)
  lifts = np.flatnonzero(seq[:, 2] == 1)
  starts = np.concatenate([[0], lifts[:-1] + 1])
  return np.round(pos[np.concatenate([starts, lifts])], 4)


def test_droppable_points_golden():
  s = sketch([1, 0, 0], [1, 0, 0], [1, 0, 0], [1, 0, 0], [1, 0, 1],
             [5, 5, 0], [1, 1, 0], [1, 1, 0], [2, 2, 1], [1, 1, 1])
  np.testing.assert_array_equal(
      S.droppable_points(s), [0, 0, 1, 1, 0, 0, 0, 1, 0, 0])
  rng = np.random.default_rng(0)
  for _ in range(50):
    s = random_sketch(rng)
    np.testing.assert_array_equal(S.droppable_points(s), reference_eligible(s))


def test_drop_points_p0_identity_and_p1_drops_exactly_eligible():
  rng = np.random.default_rng(1)
  for _ in range(50):
    s = random_sketch(rng)
    np.testing.assert_array_equal(S.drop_points(s, 0.0, rng), s)
    out = S.drop_points(s, 1.0, rng)
    np.testing.assert_array_equal(out, reference_drop(s, reference_eligible(s)))
    assert len(out) == len(s) - reference_eligible(s).sum()


def test_drop_points_keeps_ends_and_displacement():
  rng = np.random.default_rng(2)
  for _ in range(100):
    s = random_sketch(rng, n_strokes=5)
    out = S.drop_points(s, 0.5, rng)
    np.testing.assert_array_equal(stroke_ends(out), stroke_ends(s))
    assert (out[:, 2] == 1).sum() == (s[:, 2] == 1).sum()
    np.testing.assert_allclose(out[:, :2].sum(0), s[:, :2].sum(0), atol=1e-4)
    # every kept point is one of the original absolute points
    orig = {tuple(p) for p in np.round(np.cumsum(s[:, :2], 0), 4)}
    assert {tuple(p) for p in np.round(np.cumsum(out[:, :2], 0), 4)} <= orig


def test_drop_points_rate():
  rng = np.random.default_rng(3)
  s = sketch(*([[1, 1, 0]] * 999 + [[1, 1, 1]]))
  dropped = [len(s) - len(S.drop_points(s, 0.3, rng)) for _ in range(20)]
  assert 0.25 * 997 < np.mean(dropped) < 0.35 * 997


def test_random_scale_per_axis():
  rng = np.random.default_rng(4)
  s = random_sketch(rng, 6)
  s[s[:, 0] == 0, 0] = 1
  s[s[:, 1] == 0, 1] = 1
  fx, fy = [], []
  for _ in range(200):
    out = S.random_scale(s, 0.1, rng)
    rx, ry = out[:, 0] / s[:, 0], out[:, 1] / s[:, 1]
    np.testing.assert_allclose(rx, rx[0], rtol=1e-5)  # one factor per axis
    np.testing.assert_allclose(ry, ry[0], rtol=1e-5)
    np.testing.assert_array_equal(out[:, 2], s[:, 2])
    fx.append(rx[0])
    fy.append(ry[0])
  fx, fy = np.array(fx), np.array(fy)
  assert 0.9 <= fx.min() and fx.max() <= 1.1 and 0.9 <= fy.min() and fy.max() <= 1.1
  assert fx.max() - fx.min() > 0.15 and abs(np.corrcoef(fx, fy)[0, 1]) < 0.3


def test_augment_strokes_batch_matches_per_sketch_rules():
  rng = np.random.default_rng(5)
  seqs = [random_sketch(rng) for _ in range(40)]
  seqs.append(sketch([1, 1, 0], [1, 1, 0], [1, 1, 0]))  # ends pen-down
  out = S.augment_strokes(seqs, 0.0, 1.0, rng)
  for s, o in zip(seqs, out):
    np.testing.assert_array_equal(o, reference_drop(s, reference_eligible(s)))
  out = S.augment_strokes(seqs, 0.0, 0.0, rng)
  for s, o in zip(seqs, out):
    np.testing.assert_array_equal(o, s)
  out = S.augment_strokes(seqs, 0.2, 0.5, rng)
  for s, o in zip(seqs, out):
    assert (o[:, 2] == 1).sum() == (s[:, 2] == 1).sum() and len(o) <= len(s)
    assert np.all(np.abs(o[:, :2].sum(0)) <= 1.2 * np.abs(s[:, :2].sum(0)) + 1e-3)
  assert S.augment_strokes([], 0.1, 0.1, rng) == []
