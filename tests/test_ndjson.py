"""data.ndjson + data.simplify: QuickDraw .ndjson (raw / simplified) -> sketch-rnn
stroke files.

Hand-written drawings with known output: RDP against a brute-force recursive
reference written here, a square drawn raw and simplified giving the same
stroke-3, the split rule, --recognized_only, malformed lines, gzip input,
the output read back by data.dataset.load_dataset, and the CLI's one-line
errors.
"""
import gzip
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from data import ndjson, simplify
from data.dataset import load_dataset
from data.strokes import load_strokes_npz
from hparams import get_hparams
from tests.conftest import ROOT
from utils.errors import UserError


def rdp_reference(points, eps):
  """Textbook recursive Ramer-Douglas-Peucker, one point at a time."""
  points = [tuple(map(float, p)) for p in points]
  if len(points) < 3:
    return points
  (ax, ay), (bx, by) = points[0], points[-1]
  dmax, index = -1.0, 0
  for i in range(1, len(points) - 1):
    px, py = points[i]
    if (ax, ay) == (bx, by):
      d = math.hypot(px - ax, py - ay)
    else:
      d = abs((bx - ax) * (py - ay) - (by - ay) * (px - ax)) / math.hypot(
          bx - ax, by - ay)
    if d > dmax:
      dmax, index = d, i
  if dmax <= eps:
    return [points[0], points[-1]]
  return rdp_reference(points[:index + 1], eps)[:-1] + rdp_reference(
      points[index:], eps)


@pytest.mark.parametrize("seed", range(6))
def test_rdp_matches_brute_force_reference(seed):
  rng = np.random.default_rng(seed)
  for n in (1, 2, 3, 5, 40, 200):
    walk = np.cumsum(rng.normal(0, 3, (n, 2)), axis=0)
    if seed % 2:   # closed strokes (first == last) and repeated points
      walk[-1] = walk[0]
      walk[n // 2:n // 2 + 2] = walk[n // 2]
    for eps in (0.5, 2.0, 8.0):
      got = [tuple(p) for p in simplify.rdp(walk, eps)]
      assert got == rdp_reference(walk, eps), (seed, n, eps)


def test_resample_spacing_and_end_points():
  line = np.array([[0.0, 0.0], [0.0, 0.0], [3.0, 4.0], [3.0, 6.5]])
  out = simplify.resample(line)
  steps = np.hypot(*np.diff(out, axis=0).T)
  np.testing.assert_allclose(steps[:-1], 1.0, atol=1e-12)   # 7.5 long
  assert steps[-1] == pytest.approx(0.5)
  np.testing.assert_array_equal(out[[0, -1]], [[0, 0], [3, 6.5]])
  np.testing.assert_allclose(out[5], [3.0, 4.0])              # the corner
  assert simplify.resample(np.array([[2.0, 2.0], [2.0, 2.0]])).tolist() == [[2, 2]]


# A square (clockwise from the top-left) and a horizontal line inside it,
# in screen coordinates 100..300 x 50..250, scaled by 255 / 200.
SQUARE_3 = [[0, 0, 0], [255, 0, 0], [0, 255, 0], [-255, 0, 0], [0, -255, 1],
            [51, 204, 0], [153, 0, 1]]
SIMPLIFIED_SQUARE = [[[0, 255, 255, 0, 0], [0, 0, 255, 255, 0]],
                     [[51, 204], [204, 204]]]


def raw_square(rng):
  """The same drawing as the game records it: uneven point spacing along
  each side, timestamps, and the line drawn with many points."""
  corners = np.array([[100, 50], [300, 50], [300, 250], [100, 250], [100, 50]])
  xs, ys = [], []
  for a, b in zip(corners[:-1], corners[1:]):
    t = np.sort(rng.uniform(0, 1, 9))
    pts = a + np.outer(np.concatenate([[0], t]), b - a)
    xs += pts[:, 0].tolist()
    ys += pts[:, 1].tolist()
  xs.append(100.0)
  ys.append(50.0)
  line_x = np.linspace(140, 260, 17).tolist()
  return [[xs, ys, list(range(len(xs)))],
          [line_x, [210.0] * 17, list(range(100, 117))]]


def test_square_raw_and_simplified_give_the_same_stroke3():
  rng = np.random.default_rng(0)
  raw = json.dumps({"drawing": raw_square(rng), "recognized": True})
  simple = json.dumps({"drawing": SIMPLIFIED_SQUARE, "recognized": True})
  status, got_raw = ndjson.parse_line(raw)
  assert status == "ok" and got_raw.dtype == np.int16
  status, got_simple = ndjson.parse_line(simple.encode())
  assert status == "ok"
  np.testing.assert_array_equal(got_simple, SQUARE_3)
  # Up to rounding: absolute positions within 1 px, the same pen bits.
  assert got_raw.shape == got_simple.shape
  np.testing.assert_array_equal(got_raw[:, 2], got_simple[:, 2])
  np.testing.assert_allclose(np.cumsum(got_raw[:, :2], 0),
                             np.cumsum(got_simple[:, :2], 0), atol=1)


def test_simplified_input_is_written_unchanged():
  """A converted raw drawing, written back as a simplified line, converts to
  the same stroke-3 (no second simplification of rounded points)."""
  rng = np.random.default_rng(5)
  for line in drawing_lines(20, rng):
    _, first = ndjson.parse_line(line)
    points = np.cumsum(first[:, :2].astype(np.int64), axis=0)
    strokes = np.split(points, np.flatnonzero(first[:, 2])[:-1] + 1)
    again = json.dumps({"drawing": [[s[:, 0].tolist(), s[:, 1].tolist()]
                                    for s in strokes]})
    np.testing.assert_array_equal(ndjson.parse_line(again)[1], first)


def test_align_scale_and_single_points():
  # Raw: a tall drawing's longer side (y, 10 units) becomes 255, x scales alike.
  _, s = ndjson.parse_line(json.dumps({"drawing": [[[7, 9], [5, 15], [0, 9]]]}))
  assert s.tolist() == [[0, 0, 0], [51, 255, 1]]
  _, dot = ndjson.parse_line(json.dumps(
      {"drawing": [[[4], [4], [0]], [[4], [4], [5]]]}))
  assert dot.tolist() == [[0, 0, 1], [0, 0, 1]]
  # Simplified: as it is (QuickDraw aligned and scaled it), repeats dropped.
  _, s = ndjson.parse_line('{"drawing": [[[10, 20, 20], [30, 40, 40]]]}')
  assert s.tolist() == [[10, 30, 0], [10, 10, 1]]
  assert ndjson.parse_line('{"drawing": []}') == ("empty", None)


BAD_LINES = {
    "{not json": "not JSON",
    "[1, 2]": 'no "drawing"',
    '{"drawing": [[[1, 2]]]}': "not 2 or 3 coordinate lists",
    '{"drawing": [[[1, 2], [3]]]}': "unequal length",
    '{"drawing": [[["a", 2], [3, 4]]]}': "non-numeric",
    '{"drawing": [[[true, 2], [3, 4]]]}': "non-numeric",
    '{"drawing": [[[NaN, 2], [3, 4]]]}': "non-finite",
    '{"drawing": [[[1, 2], [3, 4]], [[1, 2], [3, 4], [0, 1]]]}': "mixes raw",
    '{"drawing": [[[1, 20000], [3, 4]]]}': "beyond",
    "[" * 100000: "nested too deeply",
}


@pytest.mark.parametrize("line", sorted(BAD_LINES))
def test_malformed_lines_are_reported(line):
  status, reason = ndjson.parse_line(line)
  assert status == "malformed" and BAD_LINES[line] in reason


def test_split_sizes_rule():
  assert ndjson.split_sizes(80000) == (70000, 2500, 2500)
  assert ndjson.split_sizes(75000) == (70000, 2500, 2500)
  assert ndjson.split_sizes(1000) == (934, 33, 33)   # 1000 * 2500 // 75000
  assert ndjson.split_sizes(10) == (8, 1, 1)          # at least 1 each
  assert ndjson.split_sizes(3) == (1, 1, 1)
  assert ndjson.split_sizes(50, (40, 10, 0)) == (40, 10, 0)
  assert ndjson.split_sizes(10, (40, 10, 0)) == (8, 2, 0)
  with pytest.raises(UserError, match="at least 3"):
    ndjson.split_sizes(2)


def write_ndjson(path, lines):
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "wt") as f:
    f.write("\n".join(lines) + "\n")
  return path


def drawing_lines(n, rng, recognized=lambda i: True):
  lines = []
  for i in range(n):
    strokes = []
    for _ in range(rng.integers(1, 4)):
      k = rng.integers(2, 25)
      xy = np.cumsum(rng.normal(0, 15, (k, 2)), axis=0) + 400
      strokes.append([xy[:, 0].tolist(), xy[:, 1].tolist(),
                      list(range(k))])
    lines.append(json.dumps({"word": "cat", "recognized": recognized(i),
                             "drawing": strokes}))
  return lines


def test_recognized_only_max_len_and_malformed_counts(tmp_path):
  rng = np.random.default_rng(1)
  lines = drawing_lines(12, rng, recognized=lambda i: i % 3 != 0)
  lines.insert(4, "{broken")
  lines.insert(7, "")
  path = write_ndjson(str(tmp_path / "cat.ndjson.gz"), lines)
  every, counts = ndjson.read_drawings(path, workers=1, progress=False)
  assert len(every) == 12 and counts["malformed"] == 1
  assert counts["first_malformed"].startswith("line 5: not JSON")
  kept, counts = ndjson.read_drawings(path, recognized_only=True, workers=1,
                                      progress=False)
  assert (len(kept), counts["unrecognized"]) == (8, 4)
  limit = sorted(len(s) for s in every)[5]
  short, counts = ndjson.read_drawings(path, max_len=limit, workers=1,
                                       progress=False)
  assert all(len(s) <= limit for s in short)
  assert len(short) + counts["too_long"] == 12 and counts["too_long"] > 0


def test_all_bad_or_filtered_is_an_error(tmp_path):
  bad = write_ndjson(str(tmp_path / "bad.ndjson"), ["{x", "[]", "3"])
  with pytest.raises(UserError, match="none of its 3 lines"):
    ndjson.read_drawings(bad, workers=1, progress=False)
  lines = drawing_lines(3, np.random.default_rng(2), recognized=lambda i: False)
  unrec = write_ndjson(str(tmp_path / "unrec.ndjson"), lines)
  with pytest.raises(UserError, match="3 not recognized"):
    ndjson.read_drawings(unrec, recognized_only=True, workers=1, progress=False)


def test_cli_output_loads_like_a_sketchrnn_file(tmp_path):
  rng = np.random.default_rng(3)
  lines = drawing_lines(40, rng) + [json.dumps({"drawing": SIMPLIFIED_SQUARE})]
  src = write_ndjson(str(tmp_path / "bee.ndjson"), lines)
  out = str(tmp_path / "out")
  proc = subprocess.run(
      [sys.executable, "-m", "data.ndjson", f"--input={src}", f"--out_dir={out}",
       "--num_train=20", "--num_valid=4", "--num_test=4", "--workers=2"],
      cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert "bee: 41 lines, 41 drawings kept; train/valid/test 20/4/4" in proc.stdout
  with np.load(os.path.join(out, "bee.npz"), allow_pickle=True) as npz:
    assert sorted(npz.files) == ["test", "train", "valid"]
    assert npz["train"].dtype == object and npz["train"][0].dtype == np.int16
  strokes = load_strokes_npz(os.path.join(out, "bee.npz"))
  assert [len(strokes[k]) for k in ("train", "valid", "test")] == [20, 4, 4]
  hps = get_hparams("tiny", "categories=[bee],batch_size=4")
  data = load_dataset(out, hps)
  assert len(data.splits["train"]) == 20
  assert data.splits["valid"].images.shape == (4, hps.png_width, hps.png_width)
  # The same seed gives the same files.
  again = ndjson.convert([src], str(tmp_path / "again"), sizes=(20, 4, 4),
                         render=False, workers=1, progress=False)
  assert again[0][0].endswith("bee.npz")
  redo = load_strokes_npz(again[0][0])
  for k in strokes:
    assert all(np.array_equal(a, b) for a, b in zip(strokes[k], redo[k]))


@pytest.mark.parametrize("args,message", [
    (["--input=missing.ndjson", "--out_dir=out"], "does not exist"),
    (["--input=bad.ndjson", "--out_dir=out"], "none of its 2 lines"),
    (["--input=bad.ndjson", "--out_dir=out", "--categories=a,b"],
     "one name per file"),
    (["--input=cut.ndjson.gz", "--out_dir=out"], "truncated or corrupt gzip"),
    (["--input=.", "--out_dir=out"], "is a folder"),
])
def test_cli_bad_input_is_one_line_exit_2(tmp_path, args, message):
  write_ndjson(str(tmp_path / "bad.ndjson"), ["{", "nope"])
  lines = drawing_lines(50, np.random.default_rng(4))
  with open(write_ndjson(str(tmp_path / "cut.ndjson.gz"), lines), "r+b") as f:
    f.truncate(os.path.getsize(f.name) // 2)
  proc = subprocess.run([sys.executable, "-m", "data.ndjson"] + args,
                        cwd=tmp_path, capture_output=True, text=True,
                        env=dict(os.environ, PYTHONPATH=ROOT), timeout=60)
  assert proc.returncode == 2
  lines = proc.stderr.strip().splitlines()   # a progress line may come first
  errors = [line for line in lines if line.startswith("error: ")]
  assert errors == lines[-1:] and message in errors[0], proc.stderr
  assert "Traceback" not in proc.stderr
  out = tmp_path / "out"
  assert not out.exists() or not [n for n in os.listdir(out) if ".npz" in n]
