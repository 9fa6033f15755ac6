"""Running a decoder cell over a whole sequence: the cell's math, or a faster
path that computes exactly that math.

The definition of every decoder cell is model/networks/cells.py's
``step_from_hw``.  ``run_cell(cell, xw, states, training)`` runs it over the
projected inputs xw (B, T, F) in one of two ways, chosen by the hparam
``recurrence`` (stored on the cell by ``make_cell``):

* ``autodiff``: :func:`autodiff_loop`, a ``tf.while_loop`` of
  ``cell.step_from_hw`` differentiated by TensorFlow.  It is the model's
  reference path and the one an edited cell runs with.
* ``fused`` (HyperLSTM only; LSTM and layer norm have no other path): the
  same math with a hand-written backward (model/fast/hyper_recurrence.py),
  and in float32 on CPU with each step's elementwise part in C++
  (model/fast/hyper_fused.py).  The gradient loop of autodiff has 540 graph
  nodes per step against 188 (benchmarks/README.md).
* ``auto`` (the default): ``fused`` where it was measured faster (CPU:
  benchmarks/README.md), ``autodiff`` on accelerators, where it was not
  measured.

How an edited cell switches the fast path off: :func:`cell_digest` hashes
the code of the cell class and of cells.py's functions (their syntax trees,
docstrings left out, so comments and docs do not count).  The fast path
records the digest of the cell it was written and tested for
(``VERIFIED_CELL_DIGEST`` in model/fast/hyper_recurrence.py).  When the
digests differ, ``run_cell`` logs a warning once and takes ``autodiff``:
the model trains and samples with the edited math.  tests/test_cells.py
fails until the fast path is brought back in line and the digest renewed.
"""
import ast
import functools
import hashlib
import inspect
import textwrap

import tensorflow as tf
from absl import logging
from keras import ops

from model.fast import fused_gates
from model.fast.hyper_fused import FUSED
from model.fast.hyper_recurrence import (TF_OPS, VERIFIED_CELL_DIGEST,
                                         run_hyper)
from model.networks import cells

RECURRENCES = ("auto", "autodiff", "fused")


def _without_docstrings(tree):
  for node in ast.walk(tree):
    body = getattr(node, "body", None)
    if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)):
      node.body = body[1:] or [ast.Pass()]
  return tree


@functools.lru_cache(maxsize=None)
def cell_digest(cell_class):
  """sha256 of the code that defines ``cell_class``'s step: the class and
  its bases from cells.py, cells.py's module-level functions and
  ``LN_EPSILON`` (syntax trees without docstrings)."""
  parts = [repr(cells.LN_EPSILON)]
  for cls in reversed(cell_class.__mro__):
    if cls.__module__ == cells.__name__ or cls is cell_class:
      parts.append(inspect.getsource(cls))
  parts += [inspect.getsource(f) for _, f in sorted(
      inspect.getmembers(cells, inspect.isfunction))
            if f.__module__ == cells.__name__]
  dumps = [ast.dump(_without_docstrings(ast.parse(textwrap.dedent(p))))
           for p in parts]
  return hashlib.sha256("\n".join(dumps).encode()).hexdigest()


_warned = set()


def fused_matches(cell):
  """True when the fast path was written for exactly this cell's code;
  otherwise False, with a warning logged once per cell class."""
  cls = type(cell)
  if not isinstance(cell, cells.HyperLSTMCell):
    return False
  if cell_digest(cls) == VERIFIED_CELL_DIGEST:
    return True
  if cls not in _warned:
    _warned.add(cls)
    logging.warning(
        "%s's code differs from the one model/fast/hyper_recurrence.py was "
        "verified against: training with recurrence=autodiff (the edited "
        "math).  See model/networks/recurrence.py.", cls.__name__)
  return False


def uses_fused(cell, recurrence=None):
  """Whether ``run_cell`` takes the fast path for ``cell`` (its
  ``recurrence`` setting, or the one given)."""
  recurrence = recurrence or getattr(cell, "recurrence", "auto")
  if recurrence not in RECURRENCES:
    raise ValueError(f"recurrence {recurrence!r}: expected one of "
                     f"{', '.join(RECURRENCES)}")
  if recurrence == "autodiff" or not isinstance(cell, cells.HyperLSTMCell):
    return False
  if recurrence == "auto" and tf.config.list_logical_devices("GPU"):
    return False
  return fused_matches(cell)


def autodiff_loop(cell, xw, states, training, base_seed):
  """The tf.while_loop of ``cell.step_from_hw`` over xw (B, T, F), recurrent
  dropout seeded base_seed + [0, t] at step t (None: no dropout),
  differentiated by autodiff.  -> (outputs (B, T, H), final states)."""
  w_rec = ops.cast(cell.w_rec, xw.dtype)
  xw_t = ops.transpose(xw, (1, 0, 2))
  steps = tf.shape(xw_t)[0]
  inputs = tf.TensorArray(xw.dtype, size=steps).unstack(xw_t)
  outputs = tf.TensorArray(xw.dtype, size=steps)

  def body(t, outputs, states):
    seed = None if base_seed is None else base_seed + tf.stack([0, t])
    hw = ops.matmul(states[0], w_rec)
    h, new_states = cell.step_from_hw(inputs.read(t), hw, list(states),
                                      training=training, seed=seed)
    return t + 1, outputs.write(t, h), tuple(new_states)

  _, outputs, final = tf.while_loop(
      lambda t, *_: t < steps, body, (tf.constant(0), outputs, tuple(states)),
      maximum_iterations=steps)
  return ops.transpose(outputs.stack(), (1, 0, 2)), list(final)


def run_cell(cell, xw, states, training=False, recurrence=None,
             base_seed=None):
  """Runs ``cell`` over projected inputs ``xw`` (B, T, F) from ``states``.

  Recurrent dropout (training) uses ``base_seed`` ((2,) int32) or, when
  None, one seed drawn from the cell's SeedGenerator per call, and a
  stateless mask per step from (seed, t).  ``recurrence``: overrides the
  cell's setting (module docstring).
  Returns (outputs (B, T, H), final states)."""
  xw = ops.convert_to_tensor(xw)
  states = [ops.convert_to_tensor(s, dtype=xw.dtype) for s in states]
  if not cell.uses_dropout(training):
    base_seed = None
  elif base_seed is None:
    base_seed = tf.cast(cell.seed_generator.next(), tf.int32)
  if uses_fused(cell, recurrence):
    path = FUSED if fused_gates.usable(xw.dtype) else TF_OPS
    return run_hyper(cell, xw, states, base_seed, path)
  return autodiff_loop(cell, xw, states, bool(training), base_seed)
