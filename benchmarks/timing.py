"""Timing helpers of the benchmarks: minima over repetitions, interleaved so
that load from other processes hits every part alike."""
import resource
import time

import tensorflow as tf


def maxrss_mb():
  """Peak resident set size of this process so far (Linux: KiB -> MiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def best_time(fn, args=(), reps=3, warmup=1):
  """Minimum wall time of ``fn(*args)`` over ``reps`` calls after ``warmup``.

  Inputs are passed as arguments, never captured: grappler would constant-fold
  computations on captured constants."""
  for _ in range(warmup):
    block(fn(*args))
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    block(fn(*args))
    times.append(time.perf_counter() - start)
  return min(times)


def interleaved(steps, reps, log=print):
  """{name: (fn, args)} -> {name: min seconds}: one warm-up call each (RSS
  logged after it), then ``reps`` rounds calling every fn once per round, so
  that a burst of load from other processes hits all of them alike."""
  times = {name: [] for name in steps}
  for name, (fn, args) in steps.items():
    block(fn(*args))
    log(f"  warm-up {name}: peak RSS so far {maxrss_mb():.0f} MB")
  for _ in range(reps):
    for name, (fn, args) in steps.items():
      start = time.perf_counter()
      block(fn(*args))
      times[name].append(time.perf_counter() - start)
  return {name: min(t) for name, t in times.items()}


def block(out):
  """Forces the result (numpy of every tensor) so that timing is complete."""
  for t in tf.nest.flatten(out):
    if hasattr(t, "numpy"):
      t.numpy()
