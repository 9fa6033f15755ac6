"""Sketch synthesis from a trained model (method.md §6): the logic of sample.py.

:func:`synthesize` checks every argument and the output folder before
anything is loaded, builds the codes of the chosen mode (:func:`build_codes`),
decodes them all together with model/inference/sampler.py and publishes the output
folder (per-sketch SVG + PNG, grid.png pages, samples.npz written by
utils/samples_file.py) atomically through utils.io.publish_dir.
"""
import os

import numpy as np
import svgwrite
from PIL import Image

from data.dataset import load_dataset
from data.images import to_unit_range
from data.raster import render_many
from model.inference import sampler
from model.storage.checkpoint import load_trained, recorded_data_dir
from utils import ownership, samples_file
from utils.contact_sheet import page_name, render_pages
from utils.drawing import palette
from utils.errors import UserError
from utils.io import check_writable, publish_dir

GRID_NAME = "grid.png"  # further pages: grid-2.png, grid-3.png, ...
SVG_SIZE = 256


# --- argument checks (all before anything is loaded or written) --------------

def parse_indices(text, count, flag):
  """'3,17' -> [3, 17]; UserError for a wrong count or non-integers."""
  parts = [p.strip() for p in (text or "").split(",")]
  try:
    values = [int(p) for p in parts]
  except ValueError:
    values = None
  if values is None or len(values) != count:
    raise UserError(f"{flag}={text!r} is malformed: expected {count} "
                    f"comma-separated test-split indices")
  return values


def check_output_dir(path, overwrite, model_dir, data_dir=None):
  """Refuses an output folder that overlaps the model or data folder (given
  or recorded in the model's train_info.json), a file, a non-empty folder
  without --overwrite, a folder holding files this program did not write, or
  no write access -- all before anything is loaded or written."""
  ownership.refuse_overlap("--output_dir", path, [
      ("--model_dir", model_dir), ("--data_dir", data_dir),
      (f"the data folder recorded in {model_dir}",
       recorded_data_dir(model_dir) if model_dir else None)])
  if os.path.lexists(path):
    if os.path.islink(path) or not os.path.isdir(path):
      raise UserError(f"--output_dir={path!r} is a file, expected a folder")
    if os.listdir(path) and not overwrite:
      raise UserError(f"--output_dir={path!r} is not empty (a previous run?): "
                      f"pass --overwrite to replace it or choose another folder")
    ownership.check_replaceable_dir(path, ownership.SAMPLE_ROLES, "--output_dir")
  check_writable(path, "--output_dir")


def check_args(num_per_category, temperature, greedy, steps, max_len, modes):
  if max_len < 0:
    raise UserError(f"--max_len={max_len}: expected 0 (the model's max_seq_len) "
                    f"or an integer >= 1")
  if num_per_category < 1:
    raise UserError(f"--num_per_category={num_per_category}: expected an integer >= 1")
  if not greedy and not temperature > 0:
    raise UserError(f"--temperature={temperature}: expected a number > 0 "
                    f"(or --greedy)")
  if steps < 2:
    raise UserError(f"--steps={steps}: expected an integer >= 2")
  chosen = [name for name, value in modes.items() if value is not None]
  if len(chosen) > 1:
    raise UserError(f"{' and '.join('--' + c for c in chosen)} exclude each "
                    f"other: choose one mode")


def load_test_split(model_dir, data_dir, hps, why):
  data_dir = data_dir or recorded_data_dir(model_dir)
  if not data_dir:
    raise UserError(f"--data_dir is required for {why} (no data folder is "
                    f"recorded in {model_dir!r})")
  return load_dataset(data_dir, hps).splits["test"]


def encode(model, images, batch=256):
  """Encoder means (N, D) float32 of uint8 images (N, w, w)."""
  out = [model.encode(to_unit_range(images[i:i + batch])[..., None])[0].numpy()
         for i in range(0, len(images), batch)]
  return np.concatenate(out).astype(np.float32)


def pick_references(labels, wanted, n, seed):
  """n seeded random test indices per wanted category (with replacement only
  when the category has fewer than n test sketches)."""
  rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 3])
  refs = []
  for c in wanted:
    pool = np.flatnonzero(labels == c)
    refs.append(rng.choice(pool, size=n, replace=n > len(pool)))
  return np.concatenate(refs).astype(np.int32)


def check_test_indices(indices, size, flag):
  for i in indices:
    if not 0 <= i < size:
      raise UserError(f"{flag}: index {i} is out of range: the test split has "
                      f"{size} sketches (0..{size - 1})")


def _codes_from_units(h, units, n, seed):
  """n codes from each level-l unit of ``units`` (each unit's codes those
  ``--level_l`` gives it, whatever the other units); grid rows by unit and
  component."""
  zs, rows = [], []
  for i, l in enumerate(units):
    z, ks = sampler.codes_from_level_l(h, l, n, seed)
    rows += [(f"l #{l} > k #{k}", (i * n + np.flatnonzero(ks == k)).tolist())
             for k in np.unique(ks)]
    zs.append(z)
  m = n * len(units)
  return dict(z=np.concatenate(zs), category=np.full(m, -1, np.int32),
              ref_index=np.full(m, -1, np.int32), mode="level_l", rows=rows)


def build_codes(model, hps, model_dir, data_dir, a):
  """Codes and bookkeeping for the chosen mode -> dict (z, category, ref_index,
  ref_images, mode, rows) where rows group sketch indices for the grid."""
  h, n, seed = model.hierarchy, a["num_per_category"], a["seed"]
  K, L, C = hps.num_components, hps.num_units, len(hps.categories)
  none = lambda m: np.full(m, -1, np.int32)
  if a["level_k"] is not None:
    sampler.check_index(a["level_k"], sampler.live_components(h), K,
                        "--level_k", "level-k components")
    z = sampler.codes_from_level_k(h, a["level_k"], n, seed)
    return dict(z=z, category=none(n), ref_index=none(n), mode="level_k",
                rows=[(f"level-k #{a['level_k']}", list(range(n)))])
  if a["level_l"] is not None:
    sampler.check_index(a["level_l"], sampler.live_units(h), L,
                        "--level_l", "level-l units")
    return _codes_from_units(h, [a["level_l"]], n, seed)
  if a["all_level_l"]:
    live = sampler.live_units(h)
    if not live:
      raise UserError("--all_level_l: the model has no live level-l unit")
    return _codes_from_units(h, live, n, seed)
  needs_data = a["analogy"] or a["interpolate"] or a["conditional"]
  if not needs_data:
    z = sampler.normal_codes(n * C, hps.z_size, seed)
    return dict(z=z, category=none(n * C), ref_index=none(n * C),
                mode="unconditional", rows=None)
  mode = ("analogy" if a["analogy"] else "interpolate" if a["interpolate"]
          else "conditional")
  if mode == "conditional":
    wanted = _wanted_categories(a["categories"], hps.categories)
  test = load_test_split(model_dir, data_dir, hps, f"{mode} sampling")
  size = len(test)
  if mode == "conditional":
    refs = pick_references(test.labels, wanted, n, seed)
    z = encode(model, test.images[refs])
    rows = [(hps.categories[c], list(range(i * n, (i + 1) * n)))
            for i, c in enumerate(wanted)]
    return dict(z=z, category=test.labels[refs].astype(np.int32), ref_index=refs,
                ref_images=test.images[refs], mode=mode, rows=rows, pairs=True)
  flag = "--" + mode
  idx = parse_indices(a[mode], 3 if mode == "analogy" else 2, flag)
  check_test_indices(idx, size, flag)
  zs = encode(model, test.images[idx])
  if mode == "analogy":
    z = np.repeat(sampler.analogy(*zs)[None], n, axis=0)
    ref = np.full(n, idx[2], np.int32)
  else:
    z = sampler.interpolate(zs[0], zs[1], a["steps"])
    ref = np.where(np.arange(len(z)) < len(z) / 2, idx[0], idx[1]).astype(np.int32)
  return dict(z=z, category=test.labels[ref].astype(np.int32), ref_index=ref,
              ref_images=test.images[ref], mode=mode, refs=idx,
              ref_thumbs=test.images[idx], rows=None)


def _wanted_categories(names, categories):
  if not names:
    return list(range(len(categories)))
  unknown = [c for c in names if c not in categories]
  if unknown:
    raise UserError(f"--categories: unknown {', '.join(unknown)}; the model "
                    f"knows {', '.join(categories)}")
  return [categories.index(c) for c in names]


# --- rendering ----------------------------------------------------------------

def write_svg(path, stroke3, rgb, size=SVG_SIZE):
  """One sketch as an SVG: a polyline per pen-down stroke, fitted to size px."""
  dwg = svgwrite.Drawing(path, size=(size, size), profile="tiny")
  dwg.add(dwg.rect((0, 0), (size, size), fill="white"))
  if len(stroke3):
    pts = np.cumsum(np.asarray(stroke3, np.float64)[:, :2], axis=0)
    lo, hi = np.minimum(pts.min(0), 0), np.maximum(pts.max(0), 0)
    span = max(float((hi - lo).max()), 1e-5)
    xy = (pts - lo + 0.5 * (span - (hi - lo))) * ((size - 10) / span) + 5
    colour = svgwrite.rgb(*rgb)
    starts = np.concatenate([[0], np.flatnonzero(stroke3[:-1, 2] != 0) + 1])
    ends = np.concatenate([starts[1:], [len(xy)]])
    for s, e in zip(starts, ends):
      if e - s >= 2:
        dwg.add(dwg.polyline([tuple(map(float, p)) for p in xy[s:e]],
                             stroke=colour, fill="none", stroke_width=2,
                             stroke_linecap="round", stroke_linejoin="round"))
  dwg.save()


REF_GRAY = (110, 110, 110)   # references are drawn grey, syntheses in colour


def grid_rows(codes, images, colours, label_l, categories):
  """The grid's blocks [(label, items)] for each mode; an item is a tuple of
  (gray image, rgb) tiles: (reference, synthesis) pairs where there are
  references, single syntheses otherwise."""
  mode = codes["mode"]
  syn = lambda i: ((images[i], colours[i]),)
  if codes.get("pairs"):
    return [(f"{name}: reference | synthesis ({len(ids)})",
             [((codes["ref_images"][i], REF_GRAY),) + syn(i) for i in ids])
            for name, ids in codes["rows"]]
  if mode in ("analogy", "interpolate"):
    names = "ABC" if mode == "analogy" else "AB"
    refs = [(f"{n} = test #{i}", [((t, REF_GRAY),)]) for n, i, t in
            zip(names, codes["refs"], codes["ref_thumbs"])]
    what = "C + (B - A)" if mode == "analogy" else "A -> B"
    return refs + [(what, [syn(i) for i in range(len(images))])]
  if codes["rows"] is not None:
    return [(name, [syn(i) for i in ids]) for name, ids in codes["rows"]]
  return [(f"level-l #{l}", [syn(i) for i in np.flatnonzero(label_l == l)])
          for l in np.unique(label_l)]


GRID_TITLES = {
    "conditional": "Conditional synthesis: test references (grey) beside "
                   "their syntheses",
    "unconditional": "z ~ N(0, I), grouped by level-l label",
    "level_k": "Codes drawn from one level-k Gaussian",
    "level_l": "Codes drawn from one level-l unit, by the component k drawn",
    "analogy": "Latent analogy C + (B - A) of test sketches (grey)",
    "interpolate": "Interpolation between test sketches A and B (grey)",
}


def grid_legend(codes, label_l, categories, temperature, greedy):
  """(title, swatches, swatch title) of the grid's legend: the syntheses'
  colours are their category (conditional) or their level-l label."""
  how = "greedy" if greedy else f"temperature {temperature:g}"
  title = f"{GRID_TITLES[codes['mode']]}; {how}"
  if codes["mode"] == "conditional":
    used = sorted(set(np.asarray(codes["category"]).tolist()))
    pal = palette(len(categories))
    return title, [(categories[c], pal[c]) for c in used], "colour = category:"
  used = sorted(set(np.asarray(label_l).tolist()))
  pal = palette(max(used) + 1 if used else 1)
  return (title, [(f"#{l}", pal[l]) for l in used],
          "colour = level-l label of the code:")


def write_grid(folder, blocks, legend):
  """grid.png (and grid-2.png, ... when one page of utils/contact_sheet.py's
  MAX_SIDE px does not hold every sketch); returns the file names."""
  title, entries, entries_title = legend
  pages = render_pages(blocks, title, entries, entries_title)
  names = [page_name(GRID_NAME, i) for i in range(len(pages))]
  for page, name in zip(pages, names):
    page.save(os.path.join(folder, name))
  return names


# --- the whole run ------------------------------------------------------------

def synthesize(model_dir, output_dir="outputs/samples", data_dir=None,
               num_per_category=10, conditional=True, temperature=0.24,
               greedy=False, seed=0, level_k=None, level_l=None, analogy=None,
               interpolate=None, steps=8, categories=None, max_len=0,
               overwrite=False, all_level_l=False):
  """Runs one sampling job and writes output_dir; returns a summary dict."""
  a = dict(locals())
  check_args(num_per_category, temperature, greedy, steps, max_len,
             dict(level_k=level_k, level_l=level_l, analogy=analogy,
                  interpolate=interpolate,
                  all_level_l=True if all_level_l else None))
  check_output_dir(output_dir, overwrite, model_dir, data_dir)
  hps, model = load_trained(model_dir)
  codes = build_codes(model, hps, model_dir, data_dir, a)
  z = codes["z"]
  strokes5, lengths = sampler.sample_strokes(
      model.stroke_decoder, z, max_len or hps.max_seq_len, temperature, greedy,
      seed, batch_size=1024)
  scale = hps.scale_factor if hps.scale_factor > 0 else 1.0
  seqs = sampler.to_stroke3(strokes5, lengths, scale)
  images = render_many(seqs, hps.png_width, workers=1)  # no fork under TF
  post = model.hierarchy.posteriors(z)
  label_k = np.asarray(post.label_k, np.int32)
  label_l = np.asarray(post.label_l, np.int32)
  by_category = codes["mode"] == "conditional"
  colours = [palette(len(hps.categories))[c] if by_category
             else palette(hps.num_units)[l]
             for c, l in zip(codes["category"], label_l)]
  n, w = len(z), hps.png_width
  ref_images = codes.get("ref_images", np.zeros((n, w, w), np.uint8))
  record = dict(
      strokes=seqs, images=images, z=z, label_k=label_k, label_l=label_l,
      category=codes["category"], ref_index=codes["ref_index"],
      ref_images=ref_images, temperature=temperature, seed=seed,
      greedy=greedy, mode=codes["mode"], categories=hps.categories,
      scale_factor=scale, pi_l=model.hierarchy.pi_l.numpy(),
      pi_k=model.hierarchy.pi_k().numpy(), q_kl=model.hierarchy.q_kl.numpy(),
      model_dir=model_dir, data_dir=data_dir or recorded_data_dir(model_dir))
  codes["ref_images"] = ref_images

  def fill(folder):
    os.makedirs(os.path.join(folder, "svg"))
    os.makedirs(os.path.join(folder, "png"))
    for i in range(n):
      write_svg(os.path.join(folder, "svg", f"{i:05d}.svg"), seqs[i], colours[i])
      Image.fromarray(images[i], "L").save(os.path.join(folder, "png", f"{i:05d}.png"))
    write_grid(folder, grid_rows(codes, images, colours, label_l,
                                 hps.categories),
               grid_legend(codes, label_l, hps.categories, temperature, greedy))
    samples_file.write_samples(folder, **record)  # last: complete

  publish_dir(output_dir, fill, ownership.SAMPLE_ROLES)
  return dict(num=n, mode=codes["mode"], output_dir=os.path.abspath(output_dir),
              mean_length=float(np.mean(lengths)), ended=float(
                  np.mean(lengths < (max_len or hps.max_seq_len))))
