"""Building, checkpointing and loading RPCL-pix2seqH models (method.md §5).

* :func:`build_model` creates every variable eagerly (a dummy forward pass and
  the optimiser slots), so that a restore is immediate and complete.
* :class:`CheckpointState` bundles the model, its optimiser, the step, epoch,
  best validation loss and the semi-supervised label mask in one
  ``tf.train.Checkpoint`` managed by a ``tf.train.CheckpointManager``
  (``max_to_keep=3``; TF writes the data files first and the ``checkpoint``
  index file atomically last, so an interrupted save leaves the previous
  checkpoint valid).
* :func:`load_trained` is THE loading path of sampling (model/inference/synthesis.py)
  and evaluation (model/inference/evaluation.py): ``model_config.json`` + the latest
  checkpoint -> (hps, model), with one-line UserErrors for every way that can
  fail.
"""
import json
import os
import re

import numpy as np
import tensorflow as tf

from hparams import CONFIG_NAME, load_config
from model.storage.model_dir import TRAIN_INFO
from model.rpcl_model import RPCLPix2SeqH
from utils.errors import UserError
from utils.io import atomic_write_text

MAX_TO_KEEP = 3


def write_train_info(model_dir, data_dir):
  """Records the training data folder so sample/evaluate can default to it."""
  atomic_write_text(os.path.join(model_dir, TRAIN_INFO), json.dumps(
      {"data_dir": os.path.abspath(data_dir)}, indent=2) + "\n", role="train")


def recorded_data_dir(model_dir):
  """The data_dir train.py recorded in ``model_dir``, if it still exists."""
  try:
    with open(os.path.join(model_dir, TRAIN_INFO)) as f:
      value = json.load(f).get("data_dir")
  except (OSError, ValueError, AttributeError):
    return None
  return value if isinstance(value, str) and os.path.isdir(value) else None


def build_model(hps, seed=None):
  """A fully built :class:`RPCLPix2SeqH` (needs ``hps.max_seq_len >= 1``)."""
  if hps.max_seq_len < 1:
    raise UserError("max_seq_len is not known yet (-1): load the data first "
                    "or give max_seq_len in --hparams")
  return RPCLPix2SeqH(hps, seed=seed).build_all()


def rng_states(model):
  """The counters of the model's keras SeedGenerators (noise, dropout): saved
  so that a resumed run draws the same random numbers as an uninterrupted one."""
  return [v for v in model.non_trainable_variables
          if v.name == "seed_generator_state"]


def _explain_restore_error(err, path):
  """Turns a TF restore failure into one line naming the checkpoint."""
  text = str(err).strip().splitlines()
  first = text[0] if text else type(err).__name__
  mismatch = re.search(r"shape (\(.*?\)) when attempting to restore variable "
                       r"with shape (\(.*?\)) and name (\S+?)\.?$", first)
  if mismatch:
    got, want, name = mismatch.groups()
    name = re.sub(r"_\d+(?=/)|:0$", "", name)   # keras' uniquifying suffixes
    return (f"checkpoint {path!r} does not match the model config: variable "
            f"{name} has shape {got} in the checkpoint but {want} in the model "
            f"(was it trained with other hparams?)")
  if isinstance(err, AssertionError):
    return (f"checkpoint {path!r} does not match the model config "
            f"(was it trained with other hparams?): {first[:300]}")
  return f"checkpoint {path!r} is unreadable (truncated or corrupt?): {first[:300]}"


class CheckpointState:
  """The training state saved at every improvement of the validation loss."""

  def __init__(self, model, log_root, max_to_keep=MAX_TO_KEEP):
    self.model = model
    self.log_root = log_root
    self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    self.best_loss = tf.Variable(np.inf, dtype=tf.float64, trainable=False,
                                 name="best_loss")
    # Which training samples count as labelled (hps.semi_percent /
    # semi_balanced; data.pipeline.semi_mask), stored as the release stores
    # it and read by no loss (method.md §5).  Any length: the trainer assigns
    # it and a restore brings back whatever the checkpoint holds.
    self.semi_mask = tf.Variable(np.zeros([0], bool), trainable=False,
                                 shape=tf.TensorShape([None]), name="semi_mask")
    self.checkpoint = tf.train.Checkpoint(
        model=model, optimizer=model.optimizer, step=model.global_step,
        epoch=self.epoch, best_loss=self.best_loss, semi_mask=self.semi_mask,
        rng=rng_states(model))
    self.manager = tf.train.CheckpointManager(
        self.checkpoint, log_root, max_to_keep=max_to_keep)

  @property
  def latest(self):
    return self.manager.latest_checkpoint

  @property
  def step(self):
    return int(self.model.global_step.numpy())

  def save(self):
    """Writes a new checkpoint (model, optimiser, hierarchy, counters, mask)."""
    try:
      return self.manager.save(checkpoint_number=self.step)
    except (OSError, tf.errors.OpError) as e:
      raise UserError(f"cannot write a checkpoint in {self.log_root!r}: "
                      f"{str(e).splitlines()[0]}") from None

  def restore(self, path=None):
    """Restores ``path`` (default: the latest); False when there is none."""
    path = path or self.latest
    if not path:
      return False
    restore_checkpoint(self.checkpoint, path, expect_partial=False)
    return True


def restore_checkpoint(checkpoint, path, expect_partial=True):
  """``checkpoint.restore(path)`` with every failure as a one-line UserError.

  Verifies that every object of ``checkpoint`` got a value from the file
  (``assert_existing_objects_matched``): a checkpoint of another model fails.
  """
  try:
    status = checkpoint.restore(path)
    if expect_partial:
      status.expect_partial()
    status.assert_existing_objects_matched()
  except (ValueError, AssertionError, IndexError, tf.errors.OpError) as e:
    # IndexError: "Read less bytes than requested" (a truncated data file).
    raise UserError(_explain_restore_error(e, path)) from None
  return status


def load_trained(model_dir):
  """(hps, model) from ``model_dir/model_config.json`` and its latest checkpoint.

  Restores the networks, the hierarchy and the step; the optimiser slots and
  the training counters in the file are not needed (expect_partial)."""
  if not os.path.isdir(model_dir):
    raise UserError(f"model directory {model_dir!r} does not exist")
  hps = load_config(os.path.join(model_dir, CONFIG_NAME))
  latest = tf.train.latest_checkpoint(model_dir)
  if latest is None:
    raise UserError(f"no checkpoint in {model_dir!r}: train first (python "
                    f"train.py --log_root={model_dir} ...) or wait for the "
                    f"first validation")
  if hps.max_seq_len < 1:
    raise UserError(f"{os.path.join(model_dir, CONFIG_NAME)} has max_seq_len="
                    f"{hps.max_seq_len}: not written by train.py?")
  model = build_model(hps)
  checkpoint = tf.train.Checkpoint(model=model, step=model.global_step)
  restore_checkpoint(checkpoint, latest, expect_partial=True)
  return hps, model
