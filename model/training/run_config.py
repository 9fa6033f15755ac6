"""How a training run is set up: :class:`RunConfig` (everything but the
hparams and the folders) and the checks :func:`model.training.loop.train`
makes before it creates anything: the --log_root location
(:func:`check_locations`) and the run's hparams (:func:`prepare_hps`: a new
run never silently overwrites another; a resumed one keeps its stored
config, refusing conflicting values other than RESUMABLE_KEYS).
"""
import dataclasses
import os
from typing import Any, Callable, Optional

import tensorflow as tf

from hparams import CONFIG_NAME, load_config
from model.storage import model_dir
from utils import ownership
from utils.errors import UserError
from utils.io import check_writable

# hparams a resumed run may change; the computed ones are filled from data.
RESUMABLE_KEYS = ("num_steps", "save_every", "patience", "jit_compile",
                  "length_buckets", "on_miss", "eval_sketches",
                  "recurrence")
COMPUTED_KEYS = {"max_seq_len": -1, "scale_factor": 0.0}
NO_DATA_HINT = ("--data_dir is required: make a dataset with `python -m "
                "data.synthetic --out_dir datasets/synthetic` (no download) or "
                "fetch QuickDraw with `python -m data.quickdraw --categories "
                "bee,bus --out_dir datasets/quickdraw`, then pass --data_dir")


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """How :func:`model.training.loop.train` runs, apart from the hparams and
  the folders.

  ``num_steps``: overrides hps.num_steps.  ``max_epochs``: also stop after
  that many epochs.  ``save_every_steps``: validate every that many steps
  (0: every hps.save_every epochs).  ``validate_fn(model, split_name) ->
  {"lil": ..., ...}`` replaces the validation / test evaluation (tests inject
  forced sequences).  ``strategy``: a name of model/training/distribute.py's
  STRATEGIES or a Distribution.  ``tb_images``: also write
  model/training/summaries.py's images and histograms at each validation and
  model_config.json as text."""
  resume: bool = False
  seed: int = 0
  num_steps: Optional[int] = None
  max_epochs: Optional[int] = None
  log_every: int = 20
  save_every_steps: int = 0
  overwrite: bool = False
  validate_fn: Optional[Callable] = None
  verbose: bool = True
  strategy: Any = "default"
  tb_images: bool = True


def config_conflicts(stored, requested, keys=None):
  """Keys (of ``keys``, default all) whose requested value differs from the
  stored config, ignoring resumable keys and not-yet-computed values."""
  keys = sorted(stored.to_dict()) if keys is None else sorted(set(keys))
  out = []
  for key in keys:
    want, have = getattr(requested, key), getattr(stored, key)
    if key in RESUMABLE_KEYS or want == have:
      continue
    if key in COMPUTED_KEYS and want == COMPUTED_KEYS[key]:
      continue
    out.append(f"{key}={want!r} (stored {have!r})")
  return out


def has_run(log_root):
  """Whether ``log_root`` holds a run (a checkpoint or a model config)."""
  return os.path.isdir(log_root) and (
      tf.train.latest_checkpoint(log_root) is not None
      or os.path.exists(os.path.join(log_root, CONFIG_NAME)))


def check_locations(log_root, data_dir):
  """Refuses a --log_root that is, contains or lies inside --data_dir, or
  that cannot be created -- before anything is read or written."""
  ownership.refuse_overlap("--log_root", log_root, [("--data_dir", data_dir)])
  if os.path.lexists(log_root) and not os.path.isdir(log_root):
    raise UserError(f"--log_root={log_root!r} is a file, expected a folder")
  check_writable(log_root, "--log_root")


def prepare_hps(hps, log_root, resume, overwrite):
  """The hparams of the run: the stored config when resuming (refusing
  conflicts), else ``hps`` after making sure no run is overwritten silently."""
  config_path = os.path.join(log_root, CONFIG_NAME)
  if resume:
    if not os.path.exists(config_path):
      raise UserError(f"--resume_training: no {CONFIG_NAME} in --log_root="
                      f"{log_root!r}, nothing to resume (drop the flag to start)")
    stored = load_config(config_path)
    conflicts = config_conflicts(stored, hps)
    if conflicts:
      raise UserError(f"--resume_training: hparams conflict with {config_path}: "
                      f"{', '.join(conflicts)}; drop them or use a new --log_root")
    return stored.replace(**{k: getattr(hps, k) for k in RESUMABLE_KEYS})
  if has_run(log_root):
    if not overwrite:
      raise UserError(f"--log_root={log_root!r} already holds a run: pass "
                      f"--resume_training=True to continue it, --overwrite to "
                      f"start afresh, or choose another --log_root")
    model_dir.check_clearable(log_root)
  return hps
