"""visualization.py's figures (utils/figures.py) from a small synthetic
samples.npz, the tree's structure, and samples.npz's checks
(utils/samples_file.py)."""
import os

import numpy as np
import pytest
from PIL import Image, ImageDraw

from utils.errors import UserError
from utils.tree_figure import tree_structure
from utils import figures
from utils.samples_file import load_samples

CATEGORIES = ["circle", "square"]


def _shape(kind, rng, width=48):
  img = Image.new("L", (width, width), 255)
  d = ImageDraw.Draw(img)
  r = rng.uniform(8, 18)
  cx, cy = rng.uniform(r + 2, width - r - 2, size=2)
  (d.ellipse if kind == 0 else d.rectangle)([cx - r, cy - r, cx + r, cy + r],
                                            outline=0, width=2)
  return np.asarray(img)


def hierarchy_snapshot():
  """K=6, L=3: units 0, 1 live with components {0,1} / {2,3}; unit 2 dead
  with components 4, 5 (so 2 of 6 components are pruned)."""
  pi_l = np.array([0.6, 0.4, 1e-10])
  q = np.full((6, 3), 1e-10)
  q[0, 0], q[1, 0], q[2, 1], q[3, 1], q[4, 2], q[5, 2] = 0.7, 0.3, 0.5, 0.5, .5, .5
  q /= q.sum(0, keepdims=True)
  return pi_l, q @ pi_l, q


def write_samples(folder, n=24, seed=0, **overrides):
  rng = np.random.default_rng(seed)
  cats = np.arange(n) % 2
  label_k = (2 * cats + rng.integers(0, 2, n)).astype(np.int32)
  z = (np.eye(6, 8)[label_k] * 4 + rng.normal(0, 0.3, (n, 8))).astype(np.float32)
  pi_l, pi_k, q = hierarchy_snapshot()
  arrays = dict(
      images=np.stack([_shape(c, rng) for c in cats]), z=z, label_k=label_k,
      label_l=cats.astype(np.int32), category=cats.astype(np.int32),
      ref_index=np.arange(n, dtype=np.int32), temperature=np.float32(0.24),
      seed=np.int32(seed), mode=np.str_("conditional"),
      categories=np.array(CATEGORIES), pi_l=pi_l, pi_k=pi_k, q_kl=q)
  arrays.update(overrides)
  arrays = {k: v for k, v in arrays.items() if v is not None}
  os.makedirs(folder, exist_ok=True)
  np.savez_compressed(os.path.join(folder, "samples.npz"), **arrays)
  return arrays


def test_tree_structure_prunes_dead_and_keeps_every_live_component():
  pi_l, pi_k, q = hierarchy_snapshot()
  units, live_l, live_k = tree_structure(pi_l, pi_k, q, edge_threshold=0.05)
  assert live_l.tolist() == [True, True, False]
  assert live_k.tolist() == [True, True, True, True, False, False]
  assert [l for l, _ in units] == [0, 1]                   # by decreasing pi_l
  assert [k for k, _ in units[0][1]] == [0, 1]              # by decreasing q
  assert units[0][1][0][1] == pytest.approx(0.7)
  # a live component below the edge threshold still hangs from its main parent.
  units, _, _ = tree_structure(pi_l, pi_k, q, edge_threshold=0.9)
  assert sorted(k for _, kids in units for k, _ in kids) == [0, 1, 2, 3]


def test_visualize_writes_four_sensible_images(tmp_path):
  write_samples(str(tmp_path))
  samples = load_samples(str(tmp_path))
  assert samples["categories"] == CATEGORIES and len(samples["z"]) == 24
  out = figures.visualize(samples, str(tmp_path / "figs"), seed=0)
  assert sorted(out) == ["level_k", "level_l", "result", "tree"]
  sizes = {}
  for name, path in out.items():
    assert path == str(tmp_path / "figs" / f"{name}.jpg")
    img = Image.open(path)
    assert img.format == "JPEG"
    sizes[name] = img.size
    pixels = np.asarray(img.convert("RGB")).astype(int)
    # mostly white background but real content, and some colour.
    assert 0.4 < (pixels.min(-1) > 240).mean() < 0.999, name
    assert (pixels.max(-1) - pixels.min(-1) > 80).mean() > 1e-4, name
  assert sizes["result"] == (2000, 1500)
  for name in ("level_k", "level_l"):
    assert 900 < sizes[name][0] < 2000 and 700 < sizes[name][1] < 1600
  w, h = sizes["tree"]
  assert 1000 < w < 4000 and 300 < h < 3000
  assert not [p for p in os.listdir(tmp_path / "figs") if p.startswith(".tmp")]


def test_result_places_sketches_in_category_colour(tmp_path):
  write_samples(str(tmp_path))
  samples = load_samples(str(tmp_path))
  xy = np.array([[0, 0], [1, 1]] * 12, float) + np.arange(24)[:, None] * 1e-3
  path = figures.draw_result(xy, samples, str(tmp_path / "r.jpg"))
  rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
  blue, orange = figures.category_colours(samples)[:2]
  # circles (category 0) sit at the top-left, squares at the bottom-right;
  # the legend (top-left corner) is excluded.
  top_left, bottom_right = rgb[150:800, :900], rgb[-700:, -900:]  # below legend
  def ink_near(region, colour):
    return (np.abs(region - np.array(colour)).sum(-1) < 90).sum()
  assert ink_near(top_left, blue) > 200 and ink_near(top_left, orange) < 20
  assert ink_near(bottom_right, orange) > 200 and ink_near(bottom_right, blue) < 20


def test_load_samples_rejects_bad_files(tmp_path):
  with pytest.raises(UserError, match="not found"):
    load_samples(str(tmp_path))
  (tmp_path / "samples.npz").write_bytes(b"")
  with pytest.raises(UserError, match="is empty"):
    load_samples(str(tmp_path))
  (tmp_path / "samples.npz").write_bytes(b"PK\x03\x04 truncated")
  with pytest.raises(UserError, match="not a readable npz"):
    load_samples(str(tmp_path))
  write_samples(str(tmp_path), z=None)
  with pytest.raises(UserError, match="lacks keys"):
    load_samples(str(tmp_path))
  write_samples(str(tmp_path), label_k=np.full(24, 6, np.int32))
  with pytest.raises(UserError, match="'label_k'"):
    load_samples(str(tmp_path))
  z = np.zeros((24, 8), np.float32)
  z[3, 1] = np.nan
  write_samples(str(tmp_path), z=z)
  with pytest.raises(UserError, match="'z'.*finite"):
    load_samples(str(tmp_path))


def test_snap_to_grid_gives_distinct_cells_near_positions():
  rng = np.random.default_rng(0)
  pos = np.concatenate([rng.normal(0.1, 0.02, (30, 2)), rng.normal(0.9, 0.02, (30, 2))])
  cells = figures.snap_to_grid(np.clip(pos, 0, 1), 20, 15)
  assert len({tuple(c) for c in cells}) == 60                 # no two share a cell
  assert cells[:30, 0].max() < cells[30:, 0].min()           # clusters stay apart
  assert cells[:30, 1].max() < cells[30:, 1].min()
  assert figures.snap_to_grid(pos, 5, 5) is None        # grid too small
