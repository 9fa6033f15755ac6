"""Visualise generated sketches and the learned hierarchy (method.md §7).

  python visualization.py [--input_dir=outputs/samples] [--output_dir=DIR]

reads ``samples.npz`` written by sample.py and writes ``result.jpg`` (t-SNE of
the codes with each sketch pasted at its position), ``level_k.jpg`` /
``level_l.jpg`` (the t-SNE scatter coloured by level-k / level-l label) and
``tree.jpg`` (live level-l units -> their live level-k components, edges
labelled with q(k|l), each component shown by a few member sketches).

  python visualization.py --projector [--input_dir=...] [--output_dir=DIR]

writes instead ``<output_dir>/projector/`` for TensorBoard's Embedding
Projector (utils/projector.py): the codes, their metadata (category, level-k,
level-l, reference index) and a sprite of the sketches; open it with
``tensorboard --logdir <output_dir>/projector`` (PROJECTOR tab), where PCA,
t-SNE and UMAP run in the browser -- so no t-SNE is computed here.
"""
import os
import zipfile

from utils import quiet  # noqa: F401  (first: quiets TensorFlow's start-up)
from absl import app, flags
import numpy as np
from PIL import Image

from utils import ownership
from utils.errors import UserError, cli_main
from utils.io import ensure_dir
from utils import drawing, tree_figure

FLAGS = flags.FLAGS


def define_flags():
  """The CLI's flags; defined only when run as a script, so that importing
  this module next to other CLIs never clashes on a flag name."""
  flags.DEFINE_string("input_dir", "outputs/samples",
                      "Folder with samples.npz written by sample.py.")
  flags.DEFINE_string("output_dir", None, "Where to write the figures "
                      "(default: the input folder).")
  flags.DEFINE_integer("seed", 0, "Seed of t-SNE and of the tree's sketch choice.")
  flags.DEFINE_float("edge_threshold", 0.05,
                     "Smallest q(k|l) drawn as a tree edge.")
  flags.DEFINE_integer("sketches_per_component", 4,
                       "Member sketches shown per level-k component in tree.jpg.")
  flags.DEFINE_boolean("projector", False,
                       "Write <output_dir>/projector/ for TensorBoard's "
                       "Embedding Projector instead of the JPEG figures.")


SAMPLES_NAME = "samples.npz"
MIN_TSNE_SAMPLES = 5
REQUIRED = ("images", "z", "label_k", "label_l", "pi_l", "pi_k", "q_kl")


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


def check_tsne_size(n, path="samples"):
  if n < MIN_TSNE_SAMPLES:
    raise UserError(f"{path!r} has {n} sample(s): t-SNE needs at least "
                    f"{MIN_TSNE_SAMPLES}; sample more with sample.py --num_per_category")


def tsne_2d(z, seed=0):
  """2-D t-SNE of the codes (sklearn), perplexity adapted to small N."""
  from sklearn.manifold import TSNE  # pylint: disable=import-outside-toplevel
  n = len(z)
  check_tsne_size(n)
  perplexity = float(min(30.0, max(2.0, (n - 1) / 3.0)))
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
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
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
  """Writes the four figures for ``samples`` (see :func:`load_samples`);
  returns {"result", "level_k", "level_l", "tree"} -> path."""
  check_tsne_size(len(samples["z"]), samples.get("path", "samples"))
  check_output_dir(output_dir, samples)
  ensure_dir(output_dir)
  xy = tsne_2d(samples["z"], seed)
  from utils.metrics import live_mask  # pylint: disable=import-outside-toplevel
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


PROJECTOR_DIR = "projector"


def export_projector(samples, output_dir):
  """Writes ``<output_dir>/projector/`` (utils/projector.py), the sketches
  coloured by category like result.jpg; returns its summary dict."""
  from utils import projector  # pylint: disable=import-outside-toplevel
  folder = os.path.join(output_dir, PROJECTOR_DIR)
  projector.thumb_size(len(samples["z"]))   # too many samples: before writing
  check_output_dir(output_dir, samples,
                   [os.path.join(PROJECTOR_DIR, n) for n in projector.FILES])
  ensure_dir(folder)
  return projector.write_projector(samples, folder, category_colours(samples))


@cli_main
def main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments {argv[1:]}: use --input_dir/--output_dir")
  samples = load_samples(FLAGS.input_dir)
  if FLAGS.projector:
    out = export_projector(samples, FLAGS.output_dir or FLAGS.input_dir)
    print(f"wrote {len(samples['z'])} codes, their metadata and a "
          f"{out['sprite_size'][0]}x{out['sprite_size'][1]} px sprite "
          f"({out['thumb']} px thumbnails) to {out['folder']}; view them with: "
          f"tensorboard --logdir {out['folder']}  (PROJECTOR tab)")
    return
  out = visualize(samples, FLAGS.output_dir or FLAGS.input_dir, seed=FLAGS.seed,
                  edge_threshold=FLAGS.edge_threshold,
                  sketches_per_component=FLAGS.sketches_per_component)
  for name in ("result", "level_k", "level_l", "tree"):
    print(f"wrote {out[name]}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
