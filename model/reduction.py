"""How a training step's local batch relates to the global batch.

``RPCLPix2SeqH.train_step`` runs the same code on one device and on every
replica of a tf.distribute strategy; the only differences are gathered in a
reduction object passed to it:

* ``global_batch_size``: what the losses divide their sums by (None: the
  local batch is the global batch, the plain batch mean);
* ``code_noise``: the reparameterisation noise, this replica's rows of the
  global batch's draw (the same seed state everywhere), so N replicas use
  exactly the noise one device would;
* ``sum``: the sum of a nest over the replicas -- the hierarchy's batch sums
  (model/hierarchy.py) and the step's losses and gradients.  A non-finite
  term makes the sum non-finite, so the finite checks after it are global.

:data:`LOCAL` is the single-device reduction (every sum the identity);
:class:`ReplicaReduction` the tf.distribute one (model/training/distribute.py).
"""
import keras
import tensorflow as tf

from model.hierarchy import identity_sum

SUM = tf.distribute.ReduceOp.SUM


class LocalReduction:
  """One device: the local batch is the global batch, sums are identities."""

  global_batch_size = None
  sum = staticmethod(identity_sum)

  def code_noise(self, shape, seed):
    """eps ~ N(0, I) of the reparameterisation, ``shape`` (B, D)."""
    return keras.random.normal(shape, seed=seed)


LOCAL = LocalReduction()


def replica_sum(nest):
  """SUM all-reduce of ``nest`` over the replicas (inside a replica)."""
  return tf.distribute.get_replica_context().all_reduce(SUM, nest)


class ReplicaReduction(LocalReduction):
  """Inside a tf.distribute replica: this replica's index, the global batch
  size and the SUM all-reduce.  Create it inside the replica function."""

  sum = staticmethod(replica_sum)

  def __init__(self, global_batch_size):
    ctx = tf.distribute.get_replica_context()
    self.global_batch_size = int(global_batch_size)
    self.index = ctx.replica_id_in_sync_group
    self.num_replicas = ctx.num_replicas_in_sync

  def code_noise(self, shape, seed):
    """This replica's rows of the global batch's draw."""
    full = keras.random.normal([self.global_batch_size, shape[1]], seed=seed)
    return tf.slice(full, [self.index * shape[0], 0], shape)
