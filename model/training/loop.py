"""The training loop of train.py (method.md §4-§5).

:func:`train` checks the locations, hparams and data before it creates
anything (``_prepare``, with model/training/run_config.py's checks), then runs epochs of compiled train steps
(``RPCLPix2SeqH.train_step``, model/rpcl_model.py; on one device or every
replica of a tf.distribute strategy, model/training/distribute.py), with
:class:`_Loop` doing the bookkeeping between steps: validation every
``save_every`` epochs (or ``save_every_steps`` steps) with z = m, no dropout
and the masked pen loss, the criterion being the stroke loss (lil).
Improved: a checkpoint is saved and the test-split losses are reported.  Not
improved: the last checkpoint is restored (weights, optimiser, hierarchy,
step) and a miss is counted; training stops after ``patience`` consecutive
misses or at ``num_steps``.  A step whose loss or gradients are not finite is
skipped inside the compiled step; NONFINITE_RESTORE_AFTER in a row restore
the last checkpoint.
"""
import dataclasses
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from data.dataset import load_dataset
from data.pipeline import make_dataset, semi_mask
from hparams import CONFIG_NAME, save_config
from model.inference import code_worth
from model.rpcl_model import LOSS_KEYS
from model.storage import model_dir
from model.storage.checkpoint import build_model, write_train_info
from model.training import summaries as tb_summaries
from model.training.distribute import Distribution
from model.training.run_config import (NO_DATA_HINT, RunConfig,
                                       check_locations, has_run, prepare_hps)
from utils.errors import UserError
from utils.io import ensure_dir
from utils.metrics import live_mask
from utils.progress import Progress

NONFINITE_RESTORE_AFTER = 3    # consecutive skipped steps -> restore checkpoint
NONFINITE_GIVE_UP = 12         # consecutive skipped steps -> stop with an error


def log(msg, verbose=True):
  if verbose:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def evaluate_split(model, split, hps, eval_fn=None, distribute=None):
  """Example-weighted means of the eval_step losses over a whole split
  (``distribute``: Distribution.dataset, with its eval_fn)."""
  eval_fn = eval_fn or model.compiled_eval_step()
  sums, count = dict.fromkeys(LOSS_KEYS, 0.0), 0.0
  dataset = make_dataset(split, hps, hps.max_seq_len, training=False, seed=0)
  for batch in (distribute or (lambda ds: ds))(dataset):
    out = eval_fn(batch)
    n = float(out["count"])
    for k in LOSS_KEYS:
      sums[k] += float(out[k]) * n
    count += n
  return {k: v / max(count, 1.0) for k, v in sums.items()}


def _fmt(values, keys=("lil", "pen", "de", "gau", "ij")):
  return " ".join(f"{k} {float(values[k]):.4f}" for k in keys if k in values)


def write_scalars(writer, prefix, values, step):
  """TensorBoard scalars ``prefix/key`` (vectors as ``prefix/key/i``).

  Written with ``tf.summary.scalar`` (tensorboard is a dependency)."""
  with writer.as_default(step=int(step)):
    for k, v in values.items():
      v = np.asarray(v, np.float32)
      names = ([f"{prefix}/{k}"] if v.ndim == 0 else
               [f"{prefix}/{k}/{i}" for i in range(v.size)])
      for name, x in zip(names, v.reshape(-1)):
        tf.summary.scalar(name, x)


class _NonfiniteGuard:
  """The NaN policy's counters.  Every NONFINITE_RESTORE_AFTER skipped steps
  in a row restore the checkpoint; NONFINITE_GIVE_UP skips without getting
  past the step where they happened stop the run (else restore, fail again,
  ... for ever)."""

  def __init__(self):
    self.skips, self.in_a_row = 0, 0
    self.stuck_at, self.stuck_skips = -1, 0

  def skipped(self, step):
    """Counts a skipped step at global step ``step``."""
    self.skips += 1
    self.in_a_row += 1
    self.stuck_at = max(self.stuck_at, step)
    self.stuck_skips += 1

  def restore_due(self):
    """True when the checkpoint is due to be restored; UserError when
    training is stuck."""
    if self.stuck_skips >= NONFINITE_GIVE_UP:
      raise UserError(f"training diverged: {self.stuck_skips} non-finite steps "
                      f"without getting past step {self.stuck_at}, even after "
                      f"restoring the checkpoint; check the data or lower "
                      f"learning_rate")
    return self.in_a_row % NONFINITE_RESTORE_AFTER == 0

  def applied(self, step):
    """A step was applied and the counter reached ``step``."""
    self.in_a_row = 0
    if step > self.stuck_at:
      self.stuck_skips = 0


class _Loop:
  """Host side of training: epochs, validation, restore-on-miss, NaN policy.

  ``writer``: TensorBoard writer; ``summaries``: model/training/summaries.py's
  ValidationSummaries (images at validation) or None."""

  def __init__(self, model, state, data, hps, dist, config, writer,
               summaries=None):
    self.model, self.state, self.data, self.hps = model, state, data, hps
    self.dist, self.config = dist, config
    self.writer, self.summaries = writer, summaries
    self.validate_fn = config.validate_fn or (
        lambda m, name: evaluate_split(
            m, data.splits[name].subset(hps.eval_sketches), hps,
            dist.eval_fn(m), dist.dataset))
    self.log_every = max(1, config.log_every)
    self.epoch = int(state.epoch.numpy())
    self.misses, self.guard = 0, _NonfiniteGuard()
    self.best = float(state.best_loss.numpy())
    self.valid, self.test, self.stop = None, None, None
    self.history = []   # (step, valid lil, improved)
    self.train_time, self.timed_steps = 0.0, 0
    self.progress = Progress(max(0, hps.num_steps - self.step), "train",
                             "step", enabled=config.verbose)

  @property
  def step(self):
    return int(self.model.global_step.numpy())

  def log(self, msg):
    log(msg, self.config.verbose)

  def validate(self):
    """method.md §5: improved -> save + test losses; else a miss, then
    restore (on_miss=restore) or save and go on (keep)."""
    hps, step = self.hps, self.step
    valid = self.validate_fn(self.model, "valid")
    crit = float(valid["lil"])
    improved = crit < self.best
    self.history.append((step, crit, improved))
    write_scalars(self.writer, "valid", valid, step)
    if self.config.validate_fn is None and self.dist.is_chief:
      write_scalars(self.writer, "valid", code_worth.validation_scalars(
          self.model, self.data.splits["valid"]), step)
    if self.summaries is not None:   # of the validated model, before a restore
      self.summaries.write(self.writer, self.model, step)
    if improved:
      self.best, self.misses, self.valid = crit, 0, valid
      self.state.best_loss.assign(crit)
      self.state.epoch.assign(self.epoch)
      path = self.state.save()
      self.test = self.validate_fn(self.model, "test")
      write_scalars(self.writer, "test", self.test, step)
      self.log(f"step {step} epoch {self.epoch}: valid lil {crit:.4f} improved; "
               f"saved {os.path.basename(path)}; test {_fmt(self.test)}")
    else:
      self.misses += 1
      if hps.on_miss == "restore":
        self.restore()
        action = f"restored step {self.step}"
      else:
        self.state.epoch.assign(self.epoch)
        action = f"kept; saved {os.path.basename(self.state.save())}"
      self.log(f"step {step} epoch {self.epoch}: valid lil {crit:.4f} not "
               f"better than {self.best:.4f} (miss {self.misses}/"
               f"{hps.patience}); {action}")
      if self.misses >= hps.patience:
        self.stop = "patience"
    self.writer.flush()

  def restore(self):
    """Back to the last checkpoint; the epoch counter keeps counting."""
    if self.state.restore():
      self.state.epoch.assign(self.epoch)
      return True
    return False

  def on_nonfinite(self):
    """A skipped step: logged; the guard decides on restoring or giving up."""
    self.guard.skipped(self.step)
    self.log(f"step {self.step}: non-finite loss or gradient, update skipped "
             f"({self.guard.in_a_row} in a row)")
    if self.guard.restore_due() and self.restore():
      self.log(f"restored the last checkpoint (step {self.step})")

  def log_step(self, out, progress):
    step = self.step
    scalars = {k: v for k, v in out.items() if k != "nonfinite"}
    scalars["num_live_l"] = float(np.sum(live_mask(out["pi_l"])))
    write_scalars(self.writer, "train", scalars, step)
    progress.update(0, info=f"step {step} {_fmt(out)} lr {float(out['lr']):.2e} "
                            f"live_k {int(out['num_live_k'])}")

  def training_batches(self):
    """The training split's batches from the current epoch on (distributed
    across the replicas under a strategy)."""
    return self.dist.dataset(make_dataset(
        self.data.splits["train"], self.hps, self.hps.max_seq_len,
        training=True, seed=self.config.seed, first_epoch=self.epoch))

  def after_step(self, out, seconds):
    """Bookkeeping of one step's outputs (numpy): the NaN policy, progress,
    logs, validation every ``save_every_steps``.  True when training stops."""
    if self.step > 1:   # exclude tracing from the speed measurement
      self.train_time += seconds
      self.timed_steps += 1
    if out["nonfinite"]:
      self.on_nonfinite()
      return False
    self.guard.applied(self.step)
    self.progress.update(1)
    if self.step % self.log_every == 0:
      self.log_step(out, self.progress)
    every_steps = self.config.save_every_steps
    if every_steps and self.step % every_steps == 0:
      self.validate()
    return bool(self.stop) or self.step >= self.hps.num_steps

  def end_of_epoch(self):
    """Validation every ``save_every`` epochs (unless by steps) and the
    ``max_epochs`` stop."""
    self.epoch += 1
    self.state.epoch.assign(self.epoch)
    if not self.config.save_every_steps and self.epoch % self.hps.save_every == 0:
      self.validate()
    max_epochs = self.config.max_epochs
    if max_epochs and self.epoch >= max_epochs and not self.stop:
      self.stop = "max_epochs"

  def finish(self):
    """At num_steps: a last validation unless the last step had one."""
    if self.stop is None:
      self.stop = "num_steps"
      if not self.history or self.history[-1][0] != self.step:
        self.validate()
        if self.stop == "patience":
          self.stop = "num_steps"
    self.progress.close()
    self.writer.flush()

  def summary(self):
    """What :func:`train` returns about the run (without hps and model)."""
    return dict(step=self.step, epoch=self.epoch, stop_reason=self.stop,
                best_valid_lil=self.best, valid=self.valid, test=self.test,
                misses=self.misses, nonfinite_skips=self.guard.skips,
                history=self.history, checkpoint=self.state.latest,
                steps_per_sec=self.timed_steps / max(self.train_time, 1e-9))


def train(hps, data_dir, log_root, *, config=None, **options):
  """Trains a model in ``log_root``; returns a summary dict.

  ``config``: a RunConfig (default RunConfig()); ``options``: RunConfig
  fields that override it, e.g. ``train(hps, data_dir, log_root,
  num_steps=10, verbose=False)``.  Only the chief worker logs and writes
  configs and checkpoints."""
  config = dataclasses.replace(config or RunConfig(), **options)
  loop = _prepare(hps, data_dir, log_root, config)
  model, hps = loop.model, loop.hps
  # One optimisation step, RPCLPix2SeqH.train_step (model/rpcl_model.py):
  # compute, reduce, apply.  Compiled; on every replica under a strategy.
  train_step = (loop.dist.replicated_train_step(model) if loop.dist.distributed
                else model.compiled_train_step())
  batches = loop.training_batches()
  while loop.stop is None and loop.step < hps.num_steps:
    for batch in batches:
      start = time.perf_counter()
      out = {k: v.numpy() for k, v in train_step(batch).items()}
      if loop.after_step(out, time.perf_counter() - start):
        break
    else:
      loop.end_of_epoch()
  loop.finish()
  return dict(loop.summary(), hps=hps, model=model)


def _prepare(hps, data_dir, log_root, config):
  """Checks the locations, hparams and data, then creates the run folder,
  the model and its checkpoint state: a :class:`_Loop` ready to train."""
  if not data_dir:
    raise UserError(NO_DATA_HINT)
  dist = (config.strategy if isinstance(config.strategy, Distribution)
          else Distribution(config.strategy))   # first: multi_worker starts the cluster
  config = dataclasses.replace(config, verbose=config.verbose and dist.is_chief)
  resume, seed, verbose = config.resume, config.seed, config.verbose
  check_locations(log_root, data_dir)
  if config.num_steps is not None:
    hps = hps.replace(num_steps=config.num_steps)
  if dist.is_chief or resume:
    hps = prepare_hps(hps, log_root, resume, config.overwrite and dist.is_chief)
  data = load_dataset(data_dir, hps)
  hps = hps.replace(max_seq_len=data.max_seq_len, scale_factor=data.scale_factor)
  dist.check_hps(hps)
  # Only now, with the data and hparams checked, is anything created/deleted.
  ensure_dir(log_root, "--log_root")
  if dist.is_chief:
    model_dir.remove_leftovers(log_root)
    if config.overwrite and not resume and has_run(log_root):
      model_dir.clear_run(log_root)
    save_config(os.path.join(log_root, CONFIG_NAME), hps)
    write_train_info(log_root, data_dir)
  keras.utils.set_random_seed(seed)
  with dist.scope():
    model = build_model(hps, seed=seed)
  labels = data.splits["train"].labels
  state = dist.checkpoint_state(model, log_root)
  state.semi_mask.assign(semi_mask(labels, hps.semi_percent, hps.semi_balanced,
                                   np.random.default_rng([seed, 7])))
  if resume and not state.restore():
    log(f"no checkpoint in {log_root} yet: starting at step 0", verbose)
  summaries = None
  if config.tb_images and dist.is_chief:
    summaries = tb_summaries.ValidationSummaries(data.splits["valid"], hps)
  loop = _Loop(model, state, data, hps, dist, config,
               dist.summary_writer(log_root), summaries)
  if summaries is not None:
    tb_summaries.write_config(loop.writer, os.path.join(log_root, CONFIG_NAME),
                              loop.step)
  log(f"training from step {loop.step} epoch {loop.epoch} to {hps.num_steps} "
      f"({len(labels)} train sketches, batch {hps.batch_size} over "
      f"{dist.num_replicas} replica(s), max_seq_len {hps.max_seq_len})",
      verbose)
  return loop
