"""The real-data experiment and ablations of experiments/real_data.py: data
copy, hparams, the variants (experiments/variant.py: budget, training,
samples, metrics), the results table, the learning curve and the figures
(experiments/report.py).
"""
import os
import shutil

from data import seq2png
from experiments import learning_curve, report
from experiments.variant import (budget_steps, evaluate_variant,
                                 level_l_samples, log, train_variant,
                                 write_json)
from hparams import PRESETS, _split_assignments, get_hparams
from model.inference.evaluation import STYLES_SUFFIX
from utils import ownership
from utils.errors import UserError
from utils.io import atomic_path, atomic_write_text, ensure_dir

# Ablation switches (hparams keys from hparams.py), in table order.
VARIANTS = {
    "full": dict(hierarchy="two_level", rpcl=True),
    "em": dict(hierarchy="two_level", rpcl=False),
    "flat": dict(hierarchy="flat", rpcl=True),
    "single": dict(hierarchy="single", rpcl=True),
}
# Figures of every variant, and those only of the variant shown in detail.
EVERY_VARIANT_FIGURES = ("grid", "tree")
SHOWN_FIGURES = ("result", "level_k", "level_l", "level_l_samples")
# Validations per training run when --validate_every is 0: the learning
# curve's points.
CURVE_POINTS = 10


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


# --- 2. hparams -----------------------------------------------------------------

def base_hparams(preset, categories=None, num_per_category=0, overrides=""):
  """The preset; ``categories`` (default: the preset's); num_mixture = 2 x
  the categories unless the preset sets it (K = L = 16 in release, demo and
  real); ``num_per_category`` when > 0; then the user's overrides."""
  clash = [k for k, _ in _split_assignments(overrides) if k in ("hierarchy", "rpcl")]
  if clash:
    raise UserError(f"--hparams sets {', '.join(clash)}: those are chosen by "
                    f"--variants ({', '.join(VARIANTS)})")
  hps = get_hparams(preset)
  fixed = dict(categories=list(categories or hps.categories))
  if "num_mixture" not in PRESETS[preset]:
    fixed["num_mixture"] = 2 * len(fixed["categories"])
  if num_per_category:
    fixed["num_per_category"] = num_per_category
  return hps.replace(**fixed).parse(overrides)


def check_variants(variants):
  unknown = [v for v in variants if v not in VARIANTS]
  if unknown or not variants:
    raise UserError(f"--variants={','.join(variants)}: expected a non-empty "
                    f"subset of {','.join(VARIANTS)}")
  return [v for v in VARIANTS if v in variants]


def _check_counts(counts, num_steps, budget_minutes, validate_every):
  for name, value in counts.items():
    if value < 1:
      raise UserError(f"--{name}={value}: expected an integer >= 1")
  if num_steps < 0 or budget_minutes <= 0 or validate_every < 0:
    raise UserError("--num_steps and --validate_every must be >= 0 and "
                    "--budget_minutes > 0")


# --- 3. the whole experiment -----------------------------------------------------

def run_experiment(work_dir, data_dir, categories=None, variants=("full", "em"),
                   preset="real", hparams="", seed=0, budget_minutes=60.0,
                   num_steps=0, num_per_category=0, num_samples=100,
                   level_l_samples_per_unit=10, classifier_epochs=5,
                   validate_every=0, calibration_steps=40, figures_dir=None,
                   grid_per_category=12, verbose=True):
  """Data, then per variant training, samples, figures and metrics, then
  the tables and figures of all (experiments/real_data.py's docstring);
  returns {"rows", "meta", "curves", "learning_curves", "evaluations",
  "figures"}."""
  variants = check_variants(list(variants))
  _check_counts(dict(num_samples=num_samples,
                     level_l_samples=level_l_samples_per_unit,
                     classifier_epochs=classifier_epochs,
                     calibration_steps=calibration_steps,
                     grid_per_category=grid_per_category),
                num_steps, budget_minutes, validate_every)
  base = base_hparams(preset, categories, num_per_category, hparams)
  categories = base.categories
  ownership.refuse_overlap("--work_dir", work_dir, [("--data_dir", data_dir)])
  ensure_dir(work_dir, "--work_dir")
  data = prepare_data(data_dir, categories, os.path.join(work_dir, "data"),
                      base.png_width, verbose)
  hps = {v: base.replace(**VARIANTS[v]) for v in variants}
  sps = None
  if not num_steps:
    num_steps, sps = budget_steps(hps[variants[0]], data, work_dir,
                                  budget_minutes, seed, calibration_steps, verbose)
  validate_every = validate_every or max(1, num_steps // CURVE_POINTS)
  log(f"{num_steps} training steps per variant "
      + (f"({sps:.2f} steps/s x {budget_minutes} min)" if sps else "(given)")
      + f", validating every {validate_every}")
  rows, curves, lcurves, evals = [], {}, {}, {}
  for v in variants:
    vdir = ensure_dir(os.path.join(work_dir, v))
    log(f"variant {v}: {VARIANTS[v]} K={hps[v].num_components} "
        f"L={hps[v].num_units}")
    summary = train_variant(hps[v], data, vdir, num_steps, seed, validate_every,
                            verbose)
    result, figures = evaluate_variant(
        vdir, data, seed, num_samples, classifier_epochs,
        os.path.join(work_dir, "classifier"), base.num_per_category,
        grid_per_category, verbose)
    tb = os.path.join(vdir, "model", "tb")
    curves[v] = report.read_live_counts(tb)
    lcurves[v] = report.read_learning_curve(tb, curves[v])
    evals[v] = dict(result, figures=figures)
    rows.append(report.table_row(v, dict(summary, evaluation=result)))
  sizes = {v: (hps[v].num_components, hps[v].num_units) for v in variants}
  plots = write_curves(work_dir, curves, lcurves, sizes)
  shown = "full" if "full" in variants else variants[0]
  unit_image, units = level_l_samples(os.path.join(work_dir, shown), data, seed,
                                      level_l_samples_per_unit)
  evals[shown]["figures"]["level_l_samples"] = unit_image
  meta = dict(categories=list(categories), data_dir=os.path.abspath(data_dir),
              preset=preset, hparams=hparams, seed=seed, num_steps=num_steps,
              budget_minutes_per_variant=budget_minutes if sps else None,
              calibrated_steps_per_sec=sps,
              num_per_category=base.num_per_category,
              conditional_samples_per_category=num_samples,
              sizes_K_L=sizes, level_l_units_sampled=units, variant_shown=shown,
              validate_every=validate_every, cpus=os.cpu_count())
  report.write_results(rows, meta, os.path.join(work_dir, "results.md"),
                       os.path.join(work_dir, "results.json"))
  figs = export_figures(figures_dir or os.path.join(work_dir, "figures"), plots,
                        {v: evals[v]["figures"] for v in variants}, shown)
  log("results:\n" + report.results_markdown(rows))
  return dict(rows=rows, meta=meta, curves=curves, learning_curves=lcurves,
              evaluations=evals, figures=figs)


def write_curves(work_dir, curves, lcurves, sizes):
  """live_components.{json,png} and learning_curve.{json,md,png} of every
  variant -> {"live_components", "learning_curve"}: the two plots."""
  write_json(os.path.join(work_dir, "live_components.json"), curves)
  write_json(os.path.join(work_dir, "learning_curve.json"), lcurves)
  table = [dict(r, variant=v) for v, rows in lcurves.items() for r in rows]
  atomic_write_text(os.path.join(work_dir, "learning_curve.md"),
                    learning_curve.markdown(table, report.CURVE_COLUMNS))
  return {"live_components": report.plot_live_components(
              curves, sizes, os.path.join(work_dir, "live_components.png")),
          "learning_curve": report.plot_learning_curve(
              lcurves, os.path.join(work_dir, "learning_curve.png"))}


def export_figures(out_dir, plots, figures, shown):
  """Small copies for the docs, named ``<variant>_<figure>``: the plots,
  every variant's conditional grid and tree, and the t-SNE figures and
  level-l samples of ``shown`` -> {name: path}."""
  ensure_dir(out_dir, "--figures_dir")
  out = {}
  for name, path in plots.items():
    out[name] = os.path.join(out_dir, os.path.basename(path))
    _copy(path, out[name])
  for v, paths in figures.items():
    names = EVERY_VARIANT_FIGURES + (SHOWN_FIGURES if v == shown else ())
    for name in names:
      out[f"{v}_{name}"] = report.save_small_jpg(
          paths[name], os.path.join(out_dir, f"{v}_{name}.jpg"))
  return out
