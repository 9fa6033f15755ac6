"""Multi-device and multi-worker training with tf.distribute.

``--strategy``: ``default`` (one device, the plain compiled step),
``mirrored`` (``tf.distribute.MirroredStrategy`` over the local GPUs, or the
CPU) or ``multi_worker`` (``MultiWorkerMirroredStrategy``, configured by the
``TF_CONFIG`` environment variable; see docs/distributed.md).

Data-parallel, synchronous: every global batch of ``hps.batch_size`` examples
is split evenly across the replicas (``experimental_distribute_dataset``; each
worker keeps its replicas' rows of every batch).  Every replica runs
``RPCLPix2SeqH.train_step`` with a ``ReplicaReduction`` (model/reduction.py):

* the losses are per-replica sums divided by the global batch size, so their
  all-reduced sum is the global-batch mean (model/losses.py);
* one all-reduce carries the losses and the gradients; the gradients are
  clipped after the reduction (as on one device), and the NaN guard decides
  on the reduced values, so its decision is global;
* the hierarchy's batch sums go through ``ReplicaContext.all_reduce(SUM)``
  (model/hierarchy.py), so every replica computes the same new state from the
  global statistics -- the single-device update on the global batch;
* each replica's code noise is its rows of the global batch's draw.

Validation sums are all-reduced too, so every worker sees the same losses and
takes the same save / restore / early-stopping decisions.  Logging, configs
and checkpoints are written by the chief only; the other workers take part
in each save in a private temporary folder that is deleted right away (the
pattern TF's multi-worker guide recommends), and restore the chief's
checkpoints, so ``--log_root`` must be on storage every worker can read.
"""
import json
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from model.storage.checkpoint import CheckpointState
from model.reduction import ReplicaReduction, replica_sum
from model.rpcl_model import LOSS_KEYS
from utils.errors import UserError

STRATEGIES = ("default", "mirrored", "multi_worker")


def _check_tf_config():
  """TF_CONFIG parsed and sanity-checked for --strategy=multi_worker."""
  raw = os.environ.get("TF_CONFIG")
  if not raw:
    raise UserError("--strategy=multi_worker needs the TF_CONFIG environment "
                    "variable (cluster and task of this worker; see "
                    "docs/distributed.md)")
  try:
    config = json.loads(raw)
    cluster, task = config["cluster"], config["task"]
    hosts = cluster[task["type"]]
    ok = isinstance(hosts, list) and 0 <= int(task["index"]) < len(hosts)
  except (ValueError, KeyError, TypeError):
    ok = False
  if not ok:
    raise UserError(f"TF_CONFIG={raw!r} is not valid: expected JSON like "
                    f'{{"cluster": {{"worker": ["host1:port", "host2:port"]}}, '
                    f'"task": {{"type": "worker", "index": 0}}}}')
  return config


def make_strategy(name):
  """The tf.distribute strategy of ``--strategy=name``.

  ``multi_worker`` must be created before TensorFlow runs any op."""
  if name not in STRATEGIES:
    raise UserError(f"--strategy={name!r} is unknown: expected one of "
                    f"{', '.join(STRATEGIES)}")
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "mirrored":
    return tf.distribute.MirroredStrategy()
  _check_tf_config()
  try:
    return tf.distribute.MultiWorkerMirroredStrategy()
  except RuntimeError as e:
    raise UserError(f"--strategy=multi_worker: cannot start the cluster "
                    f"({str(e).splitlines()[0]}); create it before any other "
                    f"TensorFlow work") from None


def is_chief(strategy):
  """True on the worker that logs and writes checkpoints: the only one unless
  multi-worker, then the "chief" task or, without one, worker 0."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.cluster_spec().as_dict():
    return True
  task_type, task_id = resolver.task_type, resolver.task_id
  if task_type == "chief":
    return True
  has_chief = "chief" in resolver.cluster_spec().as_dict()
  return task_type == "worker" and task_id == 0 and not has_chief


def first_local(strategy, nest):
  """This worker's first replica's values (used for values that the step
  made identical on every replica)."""
  return tf.nest.map_structure(
      lambda x: strategy.experimental_local_results(x)[0], nest)


def distributed_train_step(model, strategy):
  """A tf.function running ``model.train_step`` on every replica of
  ``strategy`` for one distributed global batch; returns the (identical)
  global-batch outputs of the step."""
  gbs = model.hps.batch_size

  def replica_fn(batch):
    return model.train_step(batch, reduction=ReplicaReduction(gbs))

  def step(batch):
    return first_local(strategy, strategy.run(replica_fn, args=(batch,)))

  return tf.function(step, autograph=False, reduce_retracing=True)


def distributed_eval_step(model, strategy):
  """Like ``model.compiled_eval_step()``, for a distributed batch: the global
  batch's means and count (replicas with no rows of a last partial batch
  contribute nothing)."""

  def replica_fn(batch):
    out = model.eval_step(batch)
    n = out["count"]
    sums = {k: tf.where(n > 0, out[k] * n, 0.0) for k in LOSS_KEYS}
    return replica_sum((sums, n))

  def step(batch):
    sums, n = first_local(strategy, strategy.run(replica_fn, args=(batch,)))
    return dict({k: v / n for k, v in sums.items()}, count=n)

  return tf.function(step, autograph=False, reduce_retracing=True)


def model_fingerprint(model, restored):
  """[restored, step, sum of every weight and hierarchy variable] in float64
  (to compare workers; the RNG counters are left out)."""
  total = sum(float(np.sum(np.asarray(v.numpy(), np.float64)))
              for v in model.variables if v.name != "seed_generator_state")
  return np.array([float(restored), float(model.global_step.numpy()), total])


class SyncedCheckpointState(CheckpointState):
  """CheckpointState of a multi-worker run: after every restore all workers
  check (all-gather) that they hold the same step and weights."""

  def __init__(self, model, log_root, strategy, **kwargs):
    super().__init__(model, log_root, **kwargs)
    self.strategy = strategy

  def restore(self, path=None):
    restored = super().restore(path)
    assert_same_everywhere(self.strategy, model_fingerprint(self.model,
                                                            restored))
    return restored


class WorkerCheckpointState(SyncedCheckpointState):
  """A non-chief worker: saves to a private temporary folder deleted right
  after the save; restores the chief's latest checkpoint in ``log_root``."""

  def __init__(self, model, log_root, strategy, task_id=0):
    self.chief_root = log_root
    temp = tempfile.mkdtemp(prefix=f"rpcl_worker{task_id}_")
    os.rmdir(temp)   # a unique name; created by each save, then deleted
    super().__init__(model, temp, strategy, max_to_keep=1)

  @property
  def latest(self):
    return tf.train.latest_checkpoint(self.chief_root)

  def save(self):
    try:
      path = super().save()
    finally:
      shutil.rmtree(self.log_root, ignore_errors=True)
    return os.path.join(self.chief_root, os.path.basename(path))


def assert_same_everywhere(strategy, values):
  """UserError unless every replica of every worker holds the same ``values``
  (a float64 vector) -- e.g. a --log_root not shared by all workers."""
  values = tf.constant(values, tf.float64)
  gathered = strategy.run(lambda: tf.distribute.get_replica_context()
                          .all_gather(values[None], axis=0))
  table = strategy.experimental_local_results(gathered)[0].numpy()
  if not np.all(table == table[:1]):
    raise UserError(f"the workers are out of sync after restoring a "
                    f"checkpoint ([restored, step, weight sum] per replica: "
                    f"{table.tolist()}): --log_root must be a folder every "
                    f"worker can read (shared storage)")


class Distribution:
  """Everything train.py does differently under a strategy, in one object.

  ``Distribution("default")`` is the plain single-device path."""

  def __init__(self, name="default"):
    self.name = name
    self.strategy = make_strategy(name)
    self.num_replicas = self.strategy.num_replicas_in_sync
    self.is_chief = is_chief(self.strategy)
    resolver = getattr(self.strategy, "cluster_resolver", None)
    self.task_id = getattr(resolver, "task_id", 0) or 0
    self.multi_worker = name == "multi_worker"

  @property
  def distributed(self):
    return self.name != "default"

  def scope(self):
    return self.strategy.scope()

  def check_hps(self, hps):
    """The global batch must split evenly across the replicas."""
    if hps.batch_size % self.num_replicas:
      raise UserError(f"hparam batch_size={hps.batch_size} does not split "
                      f"evenly across the {self.num_replicas} replicas of "
                      f"--strategy={self.name}: use a multiple of "
                      f"{self.num_replicas}")

  def dataset(self, dataset):
    """``dataset`` distributed across the replicas (global batches split)."""
    if not self.distributed:
      return dataset
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    return self.strategy.experimental_distribute_dataset(
        dataset.with_options(options))

  def replicated_train_step(self, model):
    """``model.train_step`` on every replica for one global batch."""
    return distributed_train_step(model, self.strategy)

  def eval_fn(self, model):
    if not self.distributed:
      return model.compiled_eval_step()
    if getattr(model, "_dist_eval_fn", None) is None:
      model._dist_eval_fn = distributed_eval_step(model, self.strategy)
    return model._dist_eval_fn

  def summary_writer(self, log_root):
    """TensorBoard writer on the chief; a no-op writer elsewhere."""
    if self.is_chief:
      return tf.summary.create_file_writer(os.path.join(log_root, "tb"))
    return tf.summary.create_noop_writer()

  def checkpoint_state(self, model, log_root):
    if not self.multi_worker:
      return CheckpointState(model, log_root)
    if self.is_chief:
      return SyncedCheckpointState(model, log_root, self.strategy)
    return WorkerCheckpointState(model, log_root, self.strategy,
                                 task_id=self.task_id)
