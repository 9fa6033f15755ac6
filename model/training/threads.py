"""TensorFlow thread pools sized from the cores this process may use.

Both pools (inter-op: ops run side by side; intra-op: threads splitting one
op) are set to the number of cores in the process's affinity mask.  On the
2-core machine these were measured against TF's unset defaults: the small
preset's recurrence 1.5x and its train step 1.15x faster; one intra-op thread
(two ops side by side, each on one core) was no better for the small preset
and 4.6x slower at the paper size (benchmarks/README.md).

Must run before TensorFlow executes its first op (``configure_threads``
does nothing when it is too late, e.g. a CLI's main run in-process by tests).
"""
import os

import tensorflow as tf


def available_cores():
  """CPUs this process may run on (its affinity mask), at least 1."""
  try:
    return max(1, len(os.sched_getaffinity(0)))
  except (AttributeError, OSError):
    return max(1, os.cpu_count() or 1)


def configure_threads(cores=None):
  """Sets both TF thread pools to ``cores`` (default: available_cores());
  returns the number set, or None if TensorFlow was already initialised
  with other values (the pools stay as they are)."""
  cores = int(cores or available_cores())
  try:
    tf.config.threading.set_intra_op_parallelism_threads(cores)
    tf.config.threading.set_inter_op_parallelism_threads(cores)
  except RuntimeError:
    return None
  return cores
