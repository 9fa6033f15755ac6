"""The mixed-precision switch (hps.precision, model/precision.py) on CPU.

A float32 model and a mixed one with the same weights, hierarchy and noise run
the same compiled training steps: the mixed losses are finite and close to the
float32 ones, the hierarchy stays float64 and the losses float32, variables
stay float32 while the networks compute in float16 / bfloat16.

The losses of those steps are also pinned, per precision:
tests/golden/precision_steps.json was computed by the code before model/ was
split into layers (commit 3c6eb3f; this machine reproduced it bit for bit).
A change that means to keep the math keeps them, to float tolerance (another
CPU may round differently); one that changes the math renews the file.
"""
import json
import os

import keras
import keras
import numpy as np
import pytest
import tensorflow as tf

from data.random_batch import random_batch
from hparams import get_hparams
from model import precision
from model.rpcl_model import RPCLPix2SeqH

STEPS = 3
# Relative tolerance of the losses vs float32 on the first step (bfloat16 keeps
# 8 significant bits, float16 11).  Later steps start from weights that Adam
# already moved by ~lr * sign(gradient): for near-zero gradients the sign is
# rounding noise, so those losses are only checked to stay in a loose band.
RTOL_FIRST = {"mixed_bfloat16": 0.02, "mixed_float16": 0.01}
RTOL_LATER = 0.25
PINNED = os.path.join(os.path.dirname(__file__), "golden",
                      "precision_steps.json")
# Pinned losses: rounding of another CPU's kernels, amplified by 16-bit
# compute (8 / 11-bit mantissas).
RTOL_PINNED = {"float32": 1e-4, "mixed_float16": 2e-2, "mixed_bfloat16": 5e-2}
LOSSES = ("total", "lil", "pen", "de", "gau", "ij")


def check_pinned(prec, outs):
  """``outs``: the losses of the STEPS steps, as pinned for ``prec``."""
  with open(PINNED) as f:
    pinned = json.load(f)[prec]
  for i, (got, want) in enumerate(zip(outs, pinned)):
    np.testing.assert_allclose([float(got[k]) for k in LOSSES],
                               [want[k] for k in LOSSES],
                               rtol=RTOL_PINNED[prec], err_msg=f"step {i}")


def tiny_hps(prec):
  return get_hparams("tiny", f"max_seq_len=12,precision={prec},num_mixture=2")


def make_batches(hps, n, seed=0):
  rng = np.random.default_rng(seed)
  return [random_batch(hps, rng) for _ in range(n)]


def build(prec, like=None):
  model = RPCLPix2SeqH(tiny_hps(prec), seed=3).build_all()
  if like is not None:
    for dst, src in zip(model.trainable_variables, like.trainable_variables):
      assert dst.shape == src.shape
      dst.assign(src)
  return model


@pytest.fixture(scope="module")
def reference():
  """The float32 model's initial weights and its losses on the batches."""
  keras.utils.set_random_seed(0)   # the pinned losses' initial weights
  ref = build("float32")
  init = build("float32", like=ref)   # an untouched copy to start others from
  batches = make_batches(ref.hps, STEPS)
  step = ref.compiled_train_step()
  outs = [{k: v.numpy() for k, v in step(b).items()} for b in batches]
  return init, batches, outs, ref


class Fresh:
  """One mixed-precision model and its compiled step, shared by the tests of
  this file (a trace costs 10-30 s on 2 cores), put back to the state it had
  when built before each use: weights (those of the reference's init),
  hierarchy, step, optimiser slots and loss scale."""

  def __init__(self, prec, init):
    self.model = build(prec, like=init)
    self.step = self.model.compiled_train_step()
    model = self.model
    found = (list(model.variables) + list(model.optimizer.variables)
             + [model.global_step] + list(model.hierarchy.state())
             + (list(model.loss_scale.variables) if model.loss_scale else []))
    self.variables = list({id(v): v for v in found
                           if isinstance(v, (tf.Variable, keras.Variable))}
                          .values())
    self.values = [v.numpy() for v in self.variables]

  def __call__(self):
    for v, value in zip(self.variables, self.values):
      v.assign(value)
    return self.model, self.step


@pytest.fixture(scope="module")
def fresh(reference):
  """{precision: Fresh} for the mixed precisions."""
  init = reference[0]
  return {prec: Fresh(prec, init) for prec in ("mixed_bfloat16", "mixed_float16")}


@pytest.mark.parametrize("prec", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_losses_finite_and_close_to_float32(reference, fresh, prec):
  init, batches, ref_outs, ref = reference
  model, step = fresh[prec]()
  compute = prec.split("_")[1]
  assert model.stroke_decoder.cell.compute_dtype == compute
  assert model.encoder.compute_dtype == compute
  assert all(v.dtype == "float32" for v in model.trainable_variables)
  outs = []
  for i, (batch, want) in enumerate(zip(batches, ref_outs)):
    got = step(batch)
    outs.append(got)
    for key in ("total", "lil", "pen", "de", "gau", "ij"):
      assert got[key].dtype == tf.float32, key
      value = got[key].numpy()
      assert np.isfinite(value), (prec, key)
      rtol = RTOL_FIRST[prec] if i == 0 else RTOL_LATER
      np.testing.assert_allclose(value, want[key], rtol=rtol, atol=1e-3,
                                 err_msg=f"{prec} step {i} {key}")
    assert not got["nonfinite"].numpy()
  check_pinned(prec, outs)
  # The hierarchy is float64 and follows the float32 model's closely.
  for mine, theirs in zip(model.hierarchy.state(), ref.hierarchy.state()):
    assert mine.dtype == tf.float64
    np.testing.assert_allclose(mine.numpy(), theirs.numpy(), rtol=0.05,
                               atol=0.05)
  assert int(model.global_step.numpy()) == STEPS
  # The weights moved like the float32 model's (Adam's first steps are ~lr
  # per element, so compare the overall change).
  moved = [np.abs(a.numpy() - b.numpy()).mean() for a, b in
           zip(model.trainable_variables, init.trainable_variables)]
  moved_ref = [np.abs(a.numpy() - b.numpy()).mean() for a, b in
               zip(ref.trainable_variables, init.trainable_variables)]
  np.testing.assert_allclose(np.sum(moved), np.sum(moved_ref), rtol=0.1)


def test_float32_losses_as_pinned(reference):
  check_pinned("float32", reference[2])


def test_eval_step_float32_outputs(fresh):
  model, _ = fresh["mixed_bfloat16"]()
  out = model.compiled_eval_step()(make_batches(model.hps, 1)[0])
  for key, value in out.items():
    assert value.dtype == tf.float32, key
    assert np.isfinite(value.numpy()), key
  m, s = model.encode(make_batches(model.hps, 1)[0][2])
  assert m.dtype == tf.float32 and s.dtype == tf.float32


def test_scale_rule_matches_loss_scale_optimizer():
  """precision.update_loss_scale follows keras' LossScaleOptimizer:
  the same finite / overflow sequence gives the same scales and counters."""
  var = keras.Variable([1.0, 2.0])
  lib = precision.loss_scale_optimizer("mixed_float16", keras.optimizers.SGD())
  lib.dynamic_growth_steps = 2
  ours = precision.loss_scale_optimizer("mixed_float16", keras.optimizers.SGD())
  ours.dynamic_growth_steps = 2
  for opt in (lib, ours):
    opt.build([var])
  assert float(lib.scale_loss(tf.constant(1.5))) == 1.5 * precision.INITIAL_SCALE
  for finite in (False, True, True, True, False, True):
    grad = tf.constant([1.0, 1.0] if finite else [np.inf, 1.0])
    lib.apply([grad], [var])
    precision.update_loss_scale(ours, tf.constant(finite), tf.constant(True))
    assert float(ours.dynamic_scale) == float(lib.dynamic_scale), finite
    assert int(ours.step_counter) == int(lib.step_counter), finite
  before = (float(ours.dynamic_scale), int(ours.step_counter))
  precision.update_loss_scale(ours, tf.constant(False), tf.constant(False))
  assert (float(ours.dynamic_scale), int(ours.step_counter)) == before
  assert precision.loss_scale_optimizer("mixed_bfloat16", lib) is None
  assert precision.loss_scale_optimizer("float32", lib) is None


def _state(model):
  """Everything a skipped step must leave alone (the loss scale included)."""
  return ([v.numpy() for v in model.trainable_variables]
          + [v.numpy() for v in model.loss_scale.variables]
          + [v.numpy() for v in model.hierarchy.state()]
          + [model.global_step.numpy()])


def test_float16_overflow_skips_update_without_flagging(fresh):
  """A gradient overflow under loss scaling halves the scale and skips the
  update; it is not reported as a non-finite (diverged) step."""
  model, step = fresh["mixed_float16"]()
  model.loss_scale.dynamic_scale.assign(3e38)   # scaled loss overflows to inf
  before = [v.numpy() for v in model.trainable_variables]
  slots = [v.numpy() for v in model.optimizer.variables]
  out = step(make_batches(model.hps, 1)[0])
  assert not out["nonfinite"].numpy()
  assert int(model.global_step.numpy()) == 0
  assert float(model.loss_scale.dynamic_scale.numpy()) == pytest.approx(1.5e38)
  for a, b in zip(before + slots,
                  model.trainable_variables + model.optimizer.variables):
    np.testing.assert_array_equal(a, b.numpy())


def test_float16_diverged_step_changes_nothing_then_finite_step_applies(fresh):
  """A NaN batch (non-finite loss and hierarchy) is flagged and leaves the
  weights, the optimiser slots, the loss scale, the hierarchy and the step;
  the next, finite step goes through LossScaleOptimizer (Adam steps once,
  the scale doubles when its growth counter is due)."""
  model, step = fresh["mixed_float16"]()
  strokes, lens, images, labels = make_batches(model.hps, 1)[0]
  bad = tf.tensor_scatter_nd_update(images, [[0, 0, 0, 0]], [np.nan])
  before = _state(model)
  assert step((strokes, lens, bad, labels))["nonfinite"].numpy()
  for a, b in zip(before, _state(model)):
    np.testing.assert_array_equal(a, b)
  lso = model.loss_scale
  # A small scale: the initial 2^10 can overflow float16 gradients of some
  # random initial weights (Keras' unseeded initialisers follow the global
  # RNG, i.e. which tests ran before), which would skip this step.
  lso.dynamic_scale.assign(4.0)
  lso.step_counter.assign(lso.dynamic_growth_steps - 1)
  assert not step((strokes, lens, images, labels))["nonfinite"].numpy()
  assert int(model.global_step.numpy()) == 1
  assert int(model.optimizer.iterations.numpy()) == 1
  assert float(lso.dynamic_scale.numpy()) == 8.0
  assert int(lso.step_counter.numpy()) == 0


def test_policy_scope_restores_global_policy():
  before = keras.mixed_precision.global_policy().name
  with precision.policy_scope("mixed_bfloat16"):
    assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
  assert keras.mixed_precision.global_policy().name == before
  with pytest.raises(ValueError):
    with precision.policy_scope("float8"):
      pass
