"""The real-data experiment and ablations of experiments/real_data.py: data
copy, the step budget, training, sampling, figures and metrics per variant,
the results table (experiments/report.py).
"""
import json
import os
import shutil
import sys
import time

import numpy as np

from data import seq2png
from experiments import report
from hparams import _split_assignments, get_hparams
from model.inference import evaluation, sampler, synthesis
from model.inference.evaluation import STYLES_SUFFIX
from model.storage import model_dir as model_folder
from model.storage.checkpoint import load_trained
from model.training import loop as training
from utils import figures as figs
from utils import ownership
from utils.errors import UserError
from utils.io import atomic_path, atomic_write_text, ensure_dir
from utils.samples_file import load_samples

# Ablation switches (hparams keys from hparams.py), in table order.
VARIANTS = {
    "full": dict(hierarchy="two_level", rpcl=True),
    "em": dict(hierarchy="two_level", rpcl=False),
    "flat": dict(hierarchy="flat", rpcl=True),
    "single": dict(hierarchy="single", rpcl=True),
}
FULL_FIGURES = ("result", "level_k", "level_l", "tree")


def log(msg):
  sys.stderr.write(time.strftime("[%H:%M:%S] ") + msg + "\n")
  sys.stderr.flush()


def _read_json(path):
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _write_json(path, obj):
  atomic_write_text(path, json.dumps(obj, indent=2, default=_jsonable) + "\n")


def _jsonable(x):
  if isinstance(x, (np.generic,)):
    return x.item()
  if hasattr(x, "to_dict"):
    return x.to_dict()
  return str(x)


# --- 1. data ------------------------------------------------------------------

def _copy(src, dst):
  with atomic_path(dst, role="data") as tmp:
    shutil.copyfile(src, tmp)


def prepare_data(src_dir, categories, dst_dir, png_width=48, verbose=True):
  """Copies the stroke (and image) files to ``dst_dir``; renders missing
  ``_png.npz`` files there.  ``src_dir`` is never written."""
  if not src_dir or not os.path.isdir(src_dir):
    raise UserError(f"--data_dir={src_dir!r} is not a folder with <category>.npz "
                    f"files")
  ownership.refuse_overlap("--work_dir/data", dst_dir, [("--data_dir", src_dir)])
  missing = [c for c in categories
             if not os.path.isfile(seq2png.stroke_path(src_dir, c))]
  if missing:
    raise UserError(f"--categories: no {', '.join(c + '.npz' for c in missing)} "
                    f"in --data_dir={src_dir!r}")
  ensure_dir(dst_dir, "--work_dir")
  for cat in categories:
    src, dst = seq2png.stroke_path(src_dir, cat), seq2png.stroke_path(dst_dir, cat)
    png_src, png_dst = seq2png.png_path(src_dir, cat), seq2png.png_path(dst_dir, cat)
    if not os.path.isfile(dst) or os.path.getsize(dst) != os.path.getsize(src):
      if os.path.exists(png_dst):   # rendered from another stroke file
        ownership.check_replaceable(png_dst, "data", "--work_dir")
      _copy(src, dst)
      if os.path.exists(png_dst):
        ownership.remove_owned(png_dst, "data")
    if not os.path.isfile(png_dst) and os.path.isfile(png_src):
      _copy(png_src, png_dst)
    styles_src, styles_dst = (os.path.join(d, cat + STYLES_SUFFIX)
                              for d in (src_dir, dst_dir))   # known styles
    if os.path.isfile(styles_src) and not (
        os.path.isfile(styles_dst)
        and os.path.getsize(styles_dst) == os.path.getsize(styles_src)):
      _copy(styles_src, styles_dst)
    if not os.path.isfile(png_dst):
      if verbose:
        log(f"rendering {cat} -> {png_dst}")
      seq2png.convert_category(dst_dir, cat, png_width, progress=verbose)
  return dst_dir


# --- 2. hparams and budget ------------------------------------------------------

def base_hparams(preset, categories, num_per_category=0, overrides=""):
  """Preset + categories + num_mixture = 2 x categories (+ user overrides)."""
  clash = [k for k, _ in _split_assignments(overrides) if k in ("hierarchy", "rpcl")]
  if clash:
    raise UserError(f"--hparams sets {', '.join(clash)}: those are chosen by "
                    f"--variants ({', '.join(VARIANTS)})")
  fixed = f"categories=[{','.join(categories)}],num_mixture={2 * len(categories)}"
  if num_per_category:
    fixed += f",num_per_category={num_per_category}"
  return get_hparams(preset, fixed).parse(overrides)


def check_variants(variants):
  unknown = [v for v in variants if v not in VARIANTS]
  if unknown or not variants:
    raise UserError(f"--variants={','.join(variants)}: expected a non-empty "
                    f"subset of {','.join(VARIANTS)}")
  return [v for v in VARIANTS if v in variants]


def budget_steps(hps, data_dir, work_dir, budget_minutes, seed,
                 calibration_steps=12, verbose=True):
  """Steps that fit ``budget_minutes`` at the measured speed (cached)."""
  path = os.path.join(work_dir, "budget.json")
  key = dict(budget_minutes=budget_minutes, hparams=hps.to_dict(), seed=seed)
  cached = _read_json(path)
  if cached and cached.get("key") == json.loads(json.dumps(key)):
    return cached["num_steps"], cached["steps_per_sec"]
  if verbose:
    log(f"timing {calibration_steps} training steps for the budget")
  calibration = os.path.join(work_dir, "calibration")
  summary = training.train(hps, data_dir, calibration, seed=seed,
                           num_steps=calibration_steps,
                           save_every_steps=calibration_steps, overwrite=True,
                           validate_fn=lambda m, name: {"lil": 0.0},
                           verbose=False)
  model_folder.check_clearable(calibration)   # only the run train() just wrote
  model_folder.clear_run(calibration)
  os.rmdir(calibration)
  sps = float(summary["steps_per_sec"])
  steps = max(1, int(budget_minutes * 60.0 * sps))
  _write_json(path, dict(key=key, num_steps=steps, steps_per_sec=sps,
                         measured=time.strftime("%Y-%m-%d %H:%M:%S"),
                         load_average=list(os.getloadavg())))
  return steps, sps


# --- per variant ----------------------------------------------------------------

def train_variant(hps, data_dir, vdir, num_steps, seed, validate_every=0,
                  verbose=True):
  """Trains (or reuses) ``<vdir>/model``; returns the stored summary."""
  path = os.path.join(vdir, "train_summary.json")
  done = _read_json(path)
  if done and done.get("num_steps") == num_steps:
    return done
  t0 = time.time()
  s = training.train(hps, data_dir, os.path.join(vdir, "model"), seed=seed,
                     num_steps=num_steps, log_every=max(1, num_steps // 150),
                     save_every_steps=validate_every or num_steps,
                     overwrite=True, verbose=verbose)
  summary = dict(num_steps=num_steps, steps=s["step"], stop_reason=s["stop_reason"],
                 valid_lil=s["best_valid_lil"], valid=s["valid"], test=s["test"],
                 train_minutes=(time.time() - t0) / 60.0,
                 steps_per_sec=s["steps_per_sec"], history=s["history"],
                 nonfinite_skips=s["nonfinite_skips"])
  _write_json(path, summary)
  return summary


def share_classifier(model_dir, cache_dir):
  """The Rec classifier depends only on the data: train it once per work_dir."""
  own = os.path.join(model_dir, "classifier")
  if os.path.isdir(cache_dir) and not os.path.isdir(own):
    shutil.copytree(cache_dir, own)
  return own


def evaluate_variant(vdir, data_dir, seed, num_samples, classifier_epochs,
                     classifier_cache, num_per_category, verbose=True):
  """Conditional samples + the four figures + evaluate.py's metrics."""
  model_dir = os.path.join(vdir, "model")
  samples_dir = os.path.join(vdir, "samples")
  synthesis.synthesize(model_dir, samples_dir, data_dir=data_dir,
                       num_per_category=num_samples, conditional=True, seed=seed,
                       overwrite=True)
  figures = figs.visualize(load_samples(samples_dir),
                           os.path.join(vdir, "figures"), seed=seed)
  own = share_classifier(model_dir, classifier_cache)
  result = evaluation.evaluate(
      model_dir, data_dir, samples_dir, os.path.join(vdir, "evaluation.json"),
      classifier_epochs=classifier_epochs,
      classifier_per_category=num_per_category, seed=seed,
      show_progress=verbose)
  if not os.path.isdir(classifier_cache) and os.path.isdir(own):
    shutil.copytree(own, classifier_cache)
  if verbose:
    log("\n" + evaluation.format_table(result))
  return result, figures


def level_l_samples(vdir, data_dir, seed, per_unit):
  """Samples of every live level-l unit -> one stacked image (path, units)."""
  model_dir = os.path.join(vdir, "model")
  _, model = load_trained(model_dir)
  units = sampler.live_units(model.hierarchy)
  grids = []
  for l in units:
    out = os.path.join(vdir, "level_l", str(l))
    synthesis.synthesize(model_dir, out, data_dir=data_dir, level_l=l,
                         num_per_category=per_unit, seed=seed, overwrite=True)
    grids.append(os.path.join(out, "grid.png"))
  pi_l = model.hierarchy.pi_l.numpy()
  titles = [f"level-l unit #{l} (pi_l = {pi_l[l]:.3f})" for l in units]
  path = os.path.join(vdir, "level_l_samples.png")
  return report.stack_images(grids, path, titles), units


# --- the whole experiment -------------------------------------------------------

def run_experiment(work_dir, data_dir, categories, variants=tuple(VARIANTS),
                   preset="small", hparams="", seed=0, budget_minutes=10.0,
                   num_steps=0, num_per_category=2500, num_samples=100,
                   level_l_samples_per_unit=10, classifier_epochs=5,
                   validate_every=0, calibration_steps=12, figures_dir=None,
                   verbose=True):
  """Runs steps 1-4 of the module docstring; returns {"rows", "meta", ...}."""
  variants = check_variants(list(variants))
  if not categories:
    raise UserError("--categories is required, e.g. aaron_sheep,omniglot")
  for name, value in (("num_samples", num_samples), ("level_l_samples",
                      level_l_samples_per_unit), ("classifier_epochs",
                      classifier_epochs), ("calibration_steps", calibration_steps)):
    if value < 1:
      raise UserError(f"--{name}={value}: expected an integer >= 1")
  if num_steps < 0 or budget_minutes <= 0 or validate_every < 0:
    raise UserError("--num_steps and --validate_every must be >= 0 and "
                    "--budget_minutes > 0")
  base = base_hparams(preset, list(categories), num_per_category, hparams)
  ownership.refuse_overlap("--work_dir", work_dir, [("--data_dir", data_dir)])
  ensure_dir(work_dir, "--work_dir")
  data = prepare_data(data_dir, list(categories), os.path.join(work_dir, "data"),
                      base.png_width, verbose)
  hps = {v: base.replace(**VARIANTS[v]) for v in variants}
  sps = None
  if not num_steps:
    num_steps, sps = budget_steps(hps[variants[0]], data, work_dir,
                                  budget_minutes, seed, calibration_steps, verbose)
  log(f"{num_steps} training steps per variant "
      + (f"({sps:.2f} steps/s x {budget_minutes} min)" if sps else "(given)"))
  rows, curves, evals = [], {}, {}
  for v in variants:
    vdir = ensure_dir(os.path.join(work_dir, v))
    log(f"variant {v}: {VARIANTS[v]} K={hps[v].num_components} "
        f"L={hps[v].num_units}")
    summary = train_variant(hps[v], data, vdir, num_steps, seed, validate_every,
                            verbose)
    result, figures = evaluate_variant(
        vdir, data, seed, num_samples, classifier_epochs,
        os.path.join(work_dir, "classifier"), base.num_per_category, verbose)
    curves[v] = report.read_live_counts(os.path.join(vdir, "model", "tb"))
    evals[v] = dict(result, figures=figures)
    rows.append(report.table_row(v, dict(summary, evaluation=result)))
  sizes = {v: (hps[v].num_components, hps[v].num_units) for v in variants}
  _write_json(os.path.join(work_dir, "live_components.json"), curves)
  plot = report.plot_live_components(
      curves, sizes, os.path.join(work_dir, "live_components.png"))
  shown = "full" if "full" in variants else variants[0]
  unit_image, units = level_l_samples(os.path.join(work_dir, shown), data, seed,
                                      level_l_samples_per_unit)
  meta = dict(categories=list(categories), data_dir=os.path.abspath(data_dir),
              preset=preset, hparams=hparams, seed=seed, num_steps=num_steps,
              budget_minutes_per_variant=budget_minutes if sps else None,
              calibrated_steps_per_sec=sps,
              num_per_category=base.num_per_category,
              conditional_samples_per_category=num_samples,
              sizes_K_L=sizes, level_l_units_sampled=units, variant_shown=shown,
              validate_every=validate_every or num_steps, cpus=os.cpu_count())
  report.write_results(rows, meta, os.path.join(work_dir, "results.md"),
                       os.path.join(work_dir, "results.json"))
  figs = export_figures(figures_dir or os.path.join(work_dir, "figures"), plot,
                        evals[shown]["figures"], unit_image, shown)
  log("results:\n" + report.results_markdown(rows))
  return dict(rows=rows, meta=meta, curves=curves, evaluations=evals,
              figures=figs)


def export_figures(out_dir, plot, figures, unit_image, shown):
  """Small copies for the README: the live-components plot, the four
  visualisation images and the level-l samples of ``shown``."""
  ensure_dir(out_dir, "--figures_dir")
  out = {"live_components": os.path.join(out_dir, "live_components.png")}
  _copy(plot, out["live_components"])
  for name in FULL_FIGURES:
    out[name] = report.save_small_jpg(
        figures[name], os.path.join(out_dir, f"{shown}_{name}.jpg"))
  out["level_l_samples"] = report.save_small_jpg(
      unit_image, os.path.join(out_dir, f"{shown}_level_l_samples.jpg"))
  return out
