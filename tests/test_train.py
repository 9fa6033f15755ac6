"""Training step and loop (method.md §4-§5) on the session's tiny_data: every
weight updated, warm-up alternation, NaN steps skipped, restore-on-miss and
early stopping, resume."""
import os

import numpy as np
import pytest
import tensorflow as tf

from data.dataset import load_dataset
from data.pipeline import make_dataset
from hparams import CONFIG_NAME, load_config
from model.storage.checkpoint import build_model, load_trained
from model.training.loop import evaluate_split, train
from tests.conftest import tiny_hps
from utils.errors import UserError


@pytest.fixture(scope="module")
def loaded(tiny_data):
  """(hps with computed lengths, SketchData, one fixed training batch)."""
  hps = tiny_hps()
  data = load_dataset(tiny_data, hps)
  hps = hps.replace(max_seq_len=data.max_seq_len, scale_factor=data.scale_factor)
  batch = next(iter(make_dataset(data.splits["train"], hps, hps.max_seq_len,
                                 training=True, seed=0)))
  return hps, data, batch


def _values(variables):
  return [np.array(v.numpy()) for v in variables]


def _model(hps, seed=0):
  return build_model(hps, seed=seed)


@pytest.fixture(scope="module")
def model(loaded):
  """One model (and its traced steps) shared by the step-level tests."""
  hps, _, _ = loaded
  return _model(hps.replace(learning_rate=0.003))


def _zero_optimizer_slots(model):
  for v in model.optimizer.variables:
    if v is not model.optimizer.iterations and len(v.shape) > 0:
      v.assign(tf.zeros_like(v))


def test_steps_move_every_weight_and_stay_finite(loaded, model):
  """Invariants of 40 compiled steps on one batch (not whether a tiny model's
  loss went down): the step counter advances once per step, nothing is
  skipped, every trainable weight receives an update, everything stays finite."""
  _, _, batch = loaded
  train_fn = model.compiled_train_step()
  start = int(model.global_step.numpy())
  before = _values(model.trainable_variables)
  for _ in range(40):
    out = train_fn(batch)
    assert not out["nonfinite"]
  assert int(model.global_step.numpy()) == start + 40
  after = _values(model.trainable_variables)
  for v, a, b in zip(model.trainable_variables, before, after):
    assert not np.array_equal(a, b), v.name
  assert all(np.isfinite(v).all() for v in _values(model.variables))


def test_warmup_alternation_applies_the_right_loss(loaded, model):
  """step < warmup_steps: de_weight*de on step % 4 != 0, lil otherwise (§4)."""
  hps, _, batch = loaded
  train_fn = model.compiled_train_step()
  img_vars = model.image_decoder.trainable_variables
  stroke_vars = model.stroke_decoder.trainable_variables
  # With Adam's moments zeroed, a step changes exactly the weights that get a
  # gradient: step 0 (stroke step) leaves the image decoder alone ...
  model.global_step.assign(0)
  _zero_optimizer_slots(model)
  img0, stroke0 = _values(img_vars), _values(stroke_vars)
  out = train_fn(batch)
  assert out["use_stroke"] == 1.0
  assert all(np.array_equal(a, b) for a, b in zip(img0, _values(img_vars)))
  assert not all(np.array_equal(a, b) for a, b in
                 zip(stroke0, _values(stroke_vars)))
  # ... and step 1 (a de step) leaves the stroke decoder alone.
  _zero_optimizer_slots(model)
  img0, stroke0 = _values(img_vars), _values(stroke_vars)
  out = train_fn(batch)
  assert out["use_stroke"] == 0.0
  assert all(np.array_equal(a, b) for a, b in zip(stroke0, _values(stroke_vars)))
  assert not all(np.array_equal(a, b) for a, b in zip(img0, _values(img_vars)))
  # Total = kl_factor * kl_weight * (ij + gau) + lil or de_weight * de.
  for step in list(range(2, 9)) + [hps.warmup_steps - 1, hps.warmup_steps + 1]:
    model.global_step.assign(step)
    out = {k: v.numpy() for k, v in train_fn(batch).items()}
    stroke = step % 4 == 0 or step >= hps.warmup_steps
    assert out["use_stroke"] == float(stroke), step
    recon = out["lil"] if stroke else hps.de_weight * out["de"]
    kl_w = 1 - 0.999 * 0.9999 ** step
    np.testing.assert_allclose(out["kl_weight"], kl_w, atol=1e-6)
    want = hps.kl_factor * kl_w * (out["ij"] + out["gau"]) + recon
    np.testing.assert_allclose(out["total"], want, rtol=1e-5)
    lr = (0.003 - hps.min_learning_rate) * hps.decay_rate ** (step / 3)
    np.testing.assert_allclose(out["lr"], lr + hps.min_learning_rate, rtol=1e-5)


def test_nan_batch_is_skipped(loaded, model):
  _, _, batch = loaded
  train_fn = model.compiled_train_step()
  train_fn(batch)

  def state():   # everything but the random-number generators' counters
    return (_values(model.trainable_variables) + _hierarchy(model)
            + _values(model.optimizer.variables) + [model.global_step.numpy()])

  clean = [t.numpy() for t in batch]
  for where in ("images", "strokes"):
    strokes, lens, images, labels = [np.array(a) for a in clean]
    if where == "images":
      images[3, 10, 10, 0] = np.nan
    else:
      strokes[2, 4, 0] = np.inf
    before = state()
    out = train_fn((strokes, lens, images, labels))
    assert bool(out["nonfinite"]), where
    for a, b in zip(before, state()):
      if a.dtype.kind == "f":
        assert np.isfinite(b).all()
      np.testing.assert_array_equal(a, b)
  step = int(model.global_step.numpy())
  assert not train_fn(batch)["nonfinite"]     # and training goes on
  assert int(model.global_step.numpy()) == step + 1


def _hierarchy(model):
  return _values(model.hierarchy.variables)


def test_resume_continues_at_saved_step(tiny_data, tmp_path):
  root = str(tmp_path / "run")
  better = iter([10.0, 9.0])   # both validations improve: no restore-on-miss
  first = train(tiny_hps(), tiny_data, root, num_steps=12, save_every_steps=6,
                validate_fn=lambda m, name: {"lil": next(better) if name ==
                                             "valid" else 0.0}, verbose=False)
  assert first["step"] == 12 and first["stop_reason"] == "num_steps"
  stored = load_config(os.path.join(root, CONFIG_NAME))
  assert stored.max_seq_len == first["hps"].max_seq_len > 0
  assert stored.scale_factor > 0
  _, saved = load_trained(root)
  assert int(saved.global_step.numpy()) == 12
  seen = []

  def validate(model, name):
    seen.append((name, int(model.global_step.numpy())))
    return {"lil": -float(len(seen))}   # always better than the stored best

  with pytest.raises(UserError, match="already holds a run"):
    train(tiny_hps(), tiny_data, root, num_steps=18, verbose=False)
  second = train(tiny_hps(), tiny_data, root, resume=True, num_steps=18,
                 save_every_steps=6, validate_fn=validate, verbose=False)
  assert second["step"] == 18
  assert seen[0] == ("valid", 18)     # 12 -> 18: one validation, at 18
  assert load_config(os.path.join(root, CONFIG_NAME)).num_steps == 18
  with pytest.raises(UserError, match="conflict.*z_size"):
    train(tiny_hps(z_size=16), tiny_data, root, resume=True, verbose=False)


def _forced_validation(losses):
  """(validate_fn returning ``losses`` in turn as the valid lil, snapshots:
  step -> weights + hierarchy at each validation)."""
  forced, snapshots = iter(losses), {}

  def validate(model, name):
    if name == "test":
      return {"lil": 0.0}
    step = int(model.global_step.numpy())
    snapshots[step] = _values(model.trainable_variables) + _hierarchy(model)
    return {"lil": next(forced)}
  return validate, snapshots


def test_restore_on_miss_and_early_stopping(tiny_data, tmp_path):
  """Forced validation sequence: improve, improve, miss, miss -> stop (patience 2)."""
  root = str(tmp_path / "run")
  validate, snapshots = _forced_validation([5.0, 4.0, 4.5, 4.0])
  out = train(tiny_hps(patience=2), tiny_data, root, num_steps=1000,
              save_every_steps=4, validate_fn=validate, verbose=False)
  assert out["stop_reason"] == "patience"
  assert [(s, improved) for s, _, improved in out["history"]] == [
      (4, True), (8, True), (12, False), (12, False)]
  # The second miss happened at step 12 again: after the first miss the
  # weights and hierarchy were rolled back to the step-8 checkpoint.
  assert out["step"] == 8 and out["best_valid_lil"] == 4.0
  assert out["checkpoint"].endswith("ckpt-8")
  _, restored = load_trained(root)
  want = snapshots[8]
  got = _values(restored.trainable_variables) + _hierarchy(restored)
  for a, b in zip(want, got):
    np.testing.assert_array_equal(a, b)


def test_keep_on_miss_trains_on_and_saves(tiny_data, tmp_path):
  """on_miss=keep: improve, miss, miss -> no rollback, every validation
  saves, the latest checkpoint is the newest step; patience still stops."""
  root = str(tmp_path / "run")
  validate, snapshots = _forced_validation([5.0, 6.0, 7.0])
  out = train(tiny_hps(patience=2, on_miss="keep"), tiny_data, root,
              num_steps=1000, save_every_steps=4, validate_fn=validate,
              verbose=False)
  assert out["stop_reason"] == "patience"
  assert [(s, improved) for s, _, improved in out["history"]] == [
      (4, True), (8, False), (12, False)]
  assert out["step"] == 12 and out["best_valid_lil"] == 5.0
  assert out["checkpoint"].endswith("ckpt-12")
  _, restored = load_trained(root)
  for a, b in zip(snapshots[12], _values(restored.trainable_variables)
                  + _hierarchy(restored)):
    np.testing.assert_array_equal(a, b)


def test_eval_sketches_validates_on_a_fixed_subset(tiny_data, tmp_path):
  """hps.eval_sketches = n: the validation losses are those of
  evaluate_split on Split.subset(n) (the same seeded sketches each time)."""
  hps = tiny_hps(eval_sketches=5)
  out = train(hps, tiny_data, str(tmp_path / "run"), num_steps=3,
              save_every_steps=3, verbose=False)
  model, hps = out["model"], out["hps"]
  valid = load_dataset(tiny_data, hps).splits["valid"]
  sub = valid.subset(5)
  assert len(sub) == 5 and len(valid) > 5
  assert [len(s) for s in sub.strokes] == [len(s) for s in valid.subset(5).strokes]
  want = evaluate_split(model, sub, hps)["lil"]
  whole = evaluate_split(model, valid, hps)["lil"]
  assert out["valid"]["lil"] == pytest.approx(want, rel=1e-5)
  assert want != pytest.approx(whole, rel=1e-5)
