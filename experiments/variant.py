"""One variant of experiments/ablation.py: the step budget, training that
resumes where it stopped, conditional samples, figures and metrics, and the
samples of every live level-l unit.

Each variant lives in ``<work_dir>/<variant>``: ``model/`` (train.py's run
folder, TensorBoard logs in ``model/tb``), ``train_summary.json`` (written
once training has reached its steps), ``samples/`` (conditional samples for
the metrics), ``figures/``, ``evaluation.json``, ``samples_grid/`` (a
smaller conditional grid for the figures, when ``samples/`` is too big to
read) and ``samples_level_l/``.
"""
import json
import os
import shutil
import sys
import time

import numpy as np
import tensorflow as tf

from experiments import report
from hparams import CONFIG_NAME, load_config
from model.inference import evaluation, synthesis
from model.storage import model_dir as model_folder
from model.training import loop as training
from model.training.run_config import config_conflicts
from utils import figures as figs
from utils.errors import UserError
from utils.io import atomic_write_text
from utils.metrics import live_mask
from utils.samples_file import load_samples

GRID = synthesis.GRID_NAME   # a samples folder's first grid page


def log(msg):
  sys.stderr.write(time.strftime("[%H:%M:%S] ") + msg + "\n")
  sys.stderr.flush()


def read_json(path):
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def write_json(path, obj):
  atomic_write_text(path, json.dumps(obj, indent=2, default=_jsonable) + "\n")


def _jsonable(x):
  if isinstance(x, (np.generic,)):
    return x.item()
  if hasattr(x, "to_dict"):
    return x.to_dict()
  return str(x)


# --- the step budget -------------------------------------------------------------

def budget_steps(hps, data_dir, work_dir, budget_minutes, seed,
                 calibration_steps=40, verbose=True):
  """Steps that fit ``budget_minutes`` at the measured speed (cached in
  ``budget.json``, so that reruns and every variant use the same count).

  The timing run has no warm-up: a warm-up step that trains only the image
  decoder is about twice as fast as a full step, and 12 warm-up steps once
  made the budget 1.6x too long (docs/results.md, real sets).  Tracing (the
  first step) is left out; validations are not in the budget."""
  path = os.path.join(work_dir, "budget.json")
  key = dict(budget_minutes=budget_minutes, hparams=hps.to_dict(), seed=seed)
  cached = read_json(path)
  if cached and cached.get("key") == json.loads(json.dumps(key)):
    return cached["num_steps"], cached["steps_per_sec"]
  if verbose:
    log(f"timing {calibration_steps} training steps for the budget")
  calibration = os.path.join(work_dir, "calibration")
  summary = training.train(hps.replace(warmup_steps=0), data_dir, calibration,
                           seed=seed, num_steps=calibration_steps,
                           save_every_steps=calibration_steps, overwrite=True,
                           validate_fn=lambda m, name: {"lil": 0.0},
                           tb_images=False, verbose=False)
  model_folder.check_clearable(calibration)   # only the run train() just wrote
  model_folder.clear_run(calibration)
  os.rmdir(calibration)
  sps = float(summary["steps_per_sec"])
  steps = max(1, int(budget_minutes * 60.0 * sps))
  write_json(path, dict(key=key, num_steps=steps, steps_per_sec=sps,
                        measured=time.strftime("%Y-%m-%d %H:%M:%S"),
                        load_average=list(os.getloadavg())))
  return steps, sps


# --- training ----------------------------------------------------------------------

def checkpoint_step(model_dir):
  """The step of the latest checkpoint in ``model_dir`` (0: none); the
  checkpoints are numbered by their step (model/storage/checkpoint.py)."""
  path = tf.train.latest_checkpoint(model_dir)
  return int(path.rsplit("-", 1)[1]) if path else 0


def resume_from(hps, model_dir, num_steps):
  """The step an earlier run in ``model_dir`` resumes from, or None to
  train afresh (no run there, or one already past ``num_steps``, which the
  variants' equal budget cannot use).  A run of other hparams is an error:
  an hour of training is never thrown away silently."""
  config = os.path.join(model_dir, CONFIG_NAME)
  if not os.path.isfile(config):
    return None
  step = checkpoint_step(model_dir)
  if step > num_steps:
    log(f"{model_dir} is at step {step}, past {num_steps}: training afresh")
    return None
  conflicts = config_conflicts(load_config(config), hps)
  if conflicts:
    raise UserError(f"{model_dir} holds a run of other hparams "
                    f"({', '.join(conflicts)}): delete "
                    f"{os.path.dirname(model_dir)} to train that variant "
                    f"afresh, or choose another --work_dir")
  return step


def train_variant(hps, data_dir, vdir, num_steps, seed, validate_every=0,
                  verbose=True):
  """Trains ``<vdir>/model`` to ``num_steps`` steps, validating (and
  checkpointing) every ``validate_every`` steps (0: at the end), and returns
  the stored summary.  A finished run (``train_summary.json`` of these
  steps) is reused; an interrupted one continues from its last checkpoint
  (train.py --resume_training).  ``train_minutes`` are the training minutes
  of all parts together (report.read_learning_curve)."""
  path = os.path.join(vdir, "train_summary.json")
  done = read_json(path)
  if done and done.get("num_steps") == num_steps:
    return done
  model_dir = os.path.join(vdir, "model")
  start = resume_from(hps, model_dir, num_steps)
  if start is not None and verbose:
    log(f"resuming {model_dir} from step {start}")
  t0 = time.time()
  s = training.train(hps, data_dir, model_dir, seed=seed,
                     num_steps=num_steps, log_every=max(1, num_steps // 150),
                     save_every_steps=validate_every or num_steps,
                     resume=start is not None, overwrite=start is None,
                     verbose=verbose)
  curve = report.read_learning_curve(os.path.join(model_dir, "tb"))
  summary = dict(num_steps=num_steps, steps=s["step"], stop_reason=s["stop_reason"],
                 valid_lil=s["best_valid_lil"], valid=s["valid"], test=s["test"],
                 train_minutes=curve[-1]["minutes"] if curve else None,
                 last_part_minutes=(time.time() - t0) / 60.0,
                 resumed_from=start, steps_per_sec=s["steps_per_sec"],
                 history=s["history"], nonfinite_skips=s["nonfinite_skips"])
  write_json(path, summary)
  return summary


# --- samples, figures, metrics --------------------------------------------------

def share_classifier(model_dir, cache_dir):
  """The Rec classifier depends only on the data: train it once per work_dir."""
  own = os.path.join(model_dir, "classifier")
  if os.path.isdir(cache_dir) and not os.path.isdir(own):
    shutil.copytree(cache_dir, own)
  return own


def evaluate_variant(vdir, data_dir, seed, num_samples, classifier_epochs,
                     classifier_cache, num_per_category, grid_per_category,
                     verbose=True):
  """Conditional samples + the four figures + evaluate.py's metrics, and
  the conditional grid of the figures -> (result, {figure: path})."""
  model_dir = os.path.join(vdir, "model")
  samples_dir = os.path.join(vdir, "samples")
  synthesis.synthesize(model_dir, samples_dir, data_dir=data_dir,
                       num_per_category=num_samples, conditional=True, seed=seed,
                       overwrite=True)
  figures = figs.visualize(load_samples(samples_dir),
                           os.path.join(vdir, "figures"), seed=seed)
  figures["grid"] = figure_grid(vdir, data_dir, seed, num_samples,
                                grid_per_category)
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


def figure_grid(vdir, data_dir, seed, num_samples, per_category):
  """The conditional grid (test reference beside synthesis, a block per
  category) of the figures: the samples' own first page when they hold at
  most ``per_category`` pairs a category, else a synthesis of that many."""
  if num_samples <= per_category:
    return os.path.join(vdir, "samples", GRID)
  out = os.path.join(vdir, "samples_grid")
  synthesis.synthesize(os.path.join(vdir, "model"), out, data_dir=data_dir,
                       num_per_category=per_category, conditional=True,
                       seed=seed, overwrite=True)
  return os.path.join(out, GRID)


def level_l_samples(vdir, data_dir, seed, per_unit):
  """``per_unit`` samples of every live level-l unit, a grid row per unit
  and component drawn (sample.py --all_level_l) -> (grid path, units)."""
  out = os.path.join(vdir, "samples_level_l")
  synthesis.synthesize(os.path.join(vdir, "model"), out, data_dir=data_dir,
                       num_per_category=per_unit, all_level_l=True, seed=seed,
                       overwrite=True)
  units = np.flatnonzero(live_mask(load_samples(out)["pi_l"]))
  return os.path.join(out, GRID), [int(l) for l in units]
