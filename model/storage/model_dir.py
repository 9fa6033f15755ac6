"""The layout of a model folder (train.py's --log_root), as exact names.

A model folder holds what train.py writes -- ``model_config.json``,
``train_info.json``, TensorFlow's ``checkpoint`` index and ``ckpt-N.*``
files, TensorBoard event files under ``tb/`` -- and the classifier cache
evaluate.py keeps in ``classifier/``.  ``train.py --overwrite`` deletes
exactly the run files and only when the folder holds nothing else
(utils/ownership.py states the rule).  No TensorFlow import: the checks run
before anything heavy is loaded.
"""
import os
import re
import shutil

from hparams import CONFIG_NAME
from utils import ownership
from utils.errors import UserError

TRAIN_INFO = "train_info.json"
CLASSIFIER_DIR = "classifier"
TB_DIR = "tb"
_CKPT_RE = re.compile(r"^(checkpoint|ckpt-\d+\.(index|data-\d+-of-\d+))$")
# What TensorFlow's checkpoint writer leaves when killed mid-save: the shard
# folder of the checkpoint being written and the index file's temporary.
_TF_TEMP_RE = re.compile(r"^(ckpt-\d+_temp|checkpoint\.tmp[0-9a-f]+)$")
_EVENTS_PREFIX = "events.out.tfevents."


def is_run_file(name):
  """A top-level name train.py writes (and --overwrite may delete)."""
  return bool(_CKPT_RE.match(name)) or name in (CONFIG_NAME, TRAIN_INFO, TB_DIR)


def _tb_foreign(tb):
  """Entries under tb/ that are not TensorBoard event files."""
  out = []
  for root, dirs, names in os.walk(tb):
    out += [os.path.join(root, d) for d in dirs
            if os.path.islink(os.path.join(root, d))]
    out += [os.path.join(root, n) for n in names
            if not n.startswith(_EVENTS_PREFIX)
            or os.path.islink(os.path.join(root, n))]
  return [os.path.relpath(p, os.path.dirname(tb)) for p in out]


def foreign_entries(log_root):
  """Names in ``log_root`` that neither train.py nor evaluate.py's cache
  wrote: what stands in the way of ``--overwrite``."""
  out = []
  for name in sorted(os.listdir(log_root)):
    path = os.path.join(log_root, name)
    if name == ownership.MANIFEST or _TF_TEMP_RE.match(name):
      continue
    if name == TB_DIR and os.path.isdir(path) and not os.path.islink(path):
      out += _tb_foreign(path)
    elif name == CLASSIFIER_DIR and os.path.isdir(path):
      out += [os.path.join(name, f) for f in
              ownership.foreign_files(path, "evaluate")]
    elif not is_run_file(name) or os.path.islink(path) or (
        os.path.isdir(path) and name != TB_DIR):
      out.append(name)
  return [f for f in out if not ownership.is_abandoned_temp(os.path.basename(f))]


def check_clearable(log_root, flag="--log_root"):
  """UserError naming what is in the way unless ``log_root`` holds only a run."""
  foreign = foreign_entries(log_root)
  if foreign:
    shown = ", ".join(repr(f) for f in foreign[:3])
    more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
    raise UserError(f"{flag}={log_root!r} holds files train.py did not write "
                    f"({shown}{more}): refusing --overwrite; move them away or "
                    f"choose another {flag}")


def clear_run(log_root):
  """Deletes the run files of ``log_root`` (checkpoints, config, train_info,
  tb/); the caller has checked ``check_clearable``.  Returns their names."""
  removed = []
  for name in sorted(os.listdir(log_root)):
    path = os.path.join(log_root, name)
    if not is_run_file(name) and not _TF_TEMP_RE.match(name):
      continue
    if os.path.isdir(path) and not os.path.islink(path):
      shutil.rmtree(path)
    else:
      os.remove(path)
    removed.append(name)
  ownership.forget(log_root, removed)
  return removed


def remove_leftovers(log_root):
  """Deletes what a killed train.py left in ``log_root``: TensorFlow's
  half-written checkpoint temporaries and this program's own temporaries."""
  removed = ownership.remove_leftovers(log_root)
  for name in os.listdir(log_root):
    path = os.path.join(log_root, name)
    if _TF_TEMP_RE.match(name):
      if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
      else:
        os.remove(path)
      removed.append(name)
  return removed
