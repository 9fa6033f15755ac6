"""The figures of visualization.py (method.md §7), from a samples dict of
utils/samples_file.py: result.jpg (t-SNE of the codes, each sketch pasted at
its position), level_k.jpg / level_l.jpg (the t-SNE scatter coloured by
label), tree.jpg (utils/tree_figure.py) and the Embedding Projector export
(utils/projector.py).  No TensorFlow.
"""
import os

import matplotlib
import numpy as np
from PIL import Image
from sklearn.manifold import TSNE
from threadpoolctl import threadpool_limits

from utils import drawing, ownership, projector, tree_figure
from utils.errors import UserError
from utils.io import ensure_dir
from utils.metrics import live_mask

matplotlib.use("Agg")   # figures are files: no display needed
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

MIN_TSNE_SAMPLES = 5


def check_tsne_size(n, path="samples"):
  if n < MIN_TSNE_SAMPLES:
    raise UserError(f"{path!r} has {n} sample(s): t-SNE needs at least "
                    f"{MIN_TSNE_SAMPLES}; sample more with sample.py --num_per_category")


SMALL_TSNE = 1000   # codes below which t-SNE runs on one thread


def tsne_2d(z, seed=0):
  """2-D t-SNE of the codes (sklearn), perplexity adapted to small N."""
  n = len(z)
  check_tsne_size(n)
  perplexity = float(min(30.0, max(2.0, (n - 1) / 3.0)))
  # Few points: one OpenMP thread.  Threads gain nothing there, and on a
  # loaded machine their spin-waits took 4.5-20 s for 9 points (0.06 s on one).
  with threadpool_limits(1 if n < SMALL_TSNE else None, user_api="openmp"):
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca",
              learning_rate="auto", random_state=seed).fit_transform(
                  np.asarray(z, np.float64))
  if not np.all(np.isfinite(xy)):
    raise UserError("t-SNE of the codes gave non-finite positions: are all codes "
                    "identical?")
  return xy


def category_colours(samples):
  """RGB per sample: its category's colour, black when it has none."""
  cats = samples["category"]
  pal = drawing.palette(max(len(samples["categories"]), int(cats.max()) + 1, 1))
  return [pal[c] if c >= 0 else (0, 0, 0) for c in cats]


def _normalise(xy):
  low, high = xy.min(0), xy.max(0)
  return (xy - low) / np.where(high > low, high - low, 1.0)


def snap_to_grid(pos, cols, rows, inset=0.12, max_fill=0.6):
  """Integer (col, row) cells for positions in [0, 1]^2: each point takes the
  free cell nearest to its (inset) position, points nearest the overall centre
  first so that clusters grow outwards; sketches then do not hide each other
  while t-SNE neighbourhoods stay together.  None when the grid is too small."""
  n = len(pos)
  if n > max_fill * cols * rows:
    return None
  target = (inset + (1 - 2 * inset) * pos) * [cols - 1, rows - 1]
  grid = np.stack(np.meshgrid(np.arange(cols), np.arange(rows), indexing="ij"),
                  -1).reshape(-1, 2)
  free = np.ones(len(grid), bool)
  centre = target.mean(0)
  out = np.zeros((n, 2), int)
  for i in np.argsort(np.sum((target - centre) ** 2, 1), kind="stable"):
    d = np.sum((grid - target[i]) ** 2, 1)
    d[~free] = np.inf
    j = int(np.argmin(d))
    free[j] = False
    out[i] = grid[j]
  return out


def draw_result(xy, samples, path):
  """result.jpg: each sketch at its t-SNE position on a large white canvas."""
  n = len(xy)
  images = samples["images"]
  width = int(np.clip(np.sqrt(n) * images.shape[1] * 2.2, 2000, 4000))
  height = width * 3 // 4
  thumb = int(np.clip(width / np.sqrt(n) / 2, images.shape[1], 2 * images.shape[1]))
  colours = category_colours(samples)
  pil, draw = drawing.new_canvas(width, height)
  top = 8
  used = sorted(set(samples["category"][samples["category"] >= 0].tolist()))
  if samples["categories"] and used:
    pal = drawing.palette(len(samples["categories"]))
    _, legend_h = drawing.draw_legend(
        draw, [(samples["categories"][c], pal[c]) for c in used], 10, 10,
        drawing.font(max(18, width // 90)))
    top = legend_h + 20
  canvas = np.asarray(pil).copy()
  cols, rows = (width - 16) // thumb, (height - top - 8) // thumb
  cells = snap_to_grid(_normalise(xy), cols, rows)
  if cells is not None:           # each sketch in its own cell, near its position
    x, y = 8 + cells[:, 0] * thumb, top + cells[:, 1] * thumb
  else:                           # too many to separate: overlap (darker wins)
    pos = _normalise(xy)
    x = np.round(8 + pos[:, 0] * (width - 16 - thumb)).astype(int)
    y = np.round(top + pos[:, 1] * (height - top - 8 - thumb)).astype(int)
  for i in range(n):
    img = np.asarray(drawing.thumbnail(images[i], thumb, colours[i]))
    drawing.paste_darker(canvas, img, x[i], y[i])
  pil = Image.fromarray(canvas)
  drawing.save_jpeg(pil, path)
  return path


def draw_scatter(xy, labels, level, num_total, path, live=None):
  """level_k.jpg / level_l.jpg: t-SNE scatter coloured by label, legend #index."""
  present = sorted(set(labels.tolist()))
  pal = drawing.palette(num_total)
  size = float(np.clip(4000.0 / len(xy), 10, 60))
  fig, ax = plt.subplots(figsize=(9, 7.5), dpi=150)
  for k in present:
    m = labels == k
    ax.scatter(xy[m, 0], -xy[m, 1], s=size, c=[np.array(pal[k]) / 255.0],
               marker=drawing.marker(k), edgecolors="none", alpha=0.85,
               label=f"#{k} ({int(m.sum())})" + (
                   "" if live is None or live[k] else " dead"))
  live_note = "" if live is None else f", {int(np.sum(live))} of {num_total} live"
  ax.set_title(f"t-SNE of {len(xy)} codes coloured by {level} label "
               f"({len(present)} used{live_note})", fontsize=12)
  ax.set_xticks([])
  ax.set_yticks([])
  ncol = 1 if len(present) <= 20 else 2
  ax.legend(title=f"{level} (count)", loc="upper left", bbox_to_anchor=(1.01, 1.0),
            fontsize=10, title_fontsize=11, markerscale=max(1.0, 60.0 / size) ** 0.5,
            ncol=ncol, frameon=True)
  fig.tight_layout()
  drawing.save_figure(fig, path)
  plt.close(fig)
  return path


FIGURES = ("result.jpg", "level_k.jpg", "level_l.jpg", "tree.jpg")


def check_output_dir(output_dir, samples, names=FIGURES):
  """Refuses an output folder that overlaps the model or data folder the
  samples came from, or that holds a figure name this program did not write."""
  ownership.refuse_overlap("--output_dir", output_dir, [
      (f"the {what} folder of these samples", str(samples.get(key, "")) or None)
      for what, key in (("model", "model_dir"), ("data", "data_dir"))])
  for name in names:
    ownership.check_replaceable(os.path.join(output_dir, name), "visualization",
                                "--output_dir")


def visualize(samples, output_dir, seed=0, edge_threshold=0.05,
              sketches_per_component=4):
  """Writes the four figures for ``samples`` (utils.samples_file.load_samples);
  returns {"result", "level_k", "level_l", "tree"} -> path."""
  check_tsne_size(len(samples["z"]), samples.get("path", "samples"))
  check_output_dir(output_dir, samples)
  ensure_dir(output_dir)
  xy = tsne_2d(samples["z"], seed)
  out = {"result": draw_result(xy, samples, os.path.join(output_dir, "result.jpg"))}
  out["level_k"] = draw_scatter(xy, samples["label_k"], "level-k",
                                len(samples["pi_k"]),
                                os.path.join(output_dir, "level_k.jpg"),
                                live=live_mask(samples["pi_k"]))
  out["level_l"] = draw_scatter(xy, samples["label_l"], "level-l",
                                len(samples["pi_l"]),
                                os.path.join(output_dir, "level_l.jpg"),
                                live=live_mask(samples["pi_l"]))
  out["tree"] = tree_figure.draw_tree(
      samples, category_colours(samples), os.path.join(output_dir, "tree.jpg"),
      seed=seed, edge_threshold=edge_threshold, per_component=sketches_per_component)
  return out


def export_projector(samples, output_dir):
  """Writes the projector files into ``output_dir`` (utils/projector.py),
  beside the figures and in the folder's own manifest, so sample.py
  --overwrite may still replace a samples folder holding them; the sketches
  are coloured by category like result.jpg.  Returns its summary dict."""
  projector.thumb_size(len(samples["z"]))   # too many samples: before writing
  check_output_dir(output_dir, samples, projector.FILES)
  ensure_dir(output_dir)
  return projector.write_projector(samples, output_dir,
                                   category_colours(samples))
