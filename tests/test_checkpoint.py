"""Checkpoints and the one loading path (method.md §5): round trip of every
variable, load_trained.  Its bad inputs (no folder, config or checkpoint,
another architecture, a truncated file) are cases of tests/test_bad_inputs.py;
kill -9 during training is tests/test_faults.py's."""
import os

import numpy as np
import pytest

from data.dataset import load_dataset
from data.pipeline import make_dataset
from hparams import CONFIG_NAME, save_config
from model.storage.checkpoint import CheckpointState, build_model, load_trained
from tests.conftest import tiny_hps


@pytest.fixture(scope="module")
def setup(tiny_data):
  hps = tiny_hps()
  data = load_dataset(tiny_data, hps)
  hps = hps.replace(max_seq_len=data.max_seq_len, scale_factor=data.scale_factor)
  batches = list(make_dataset(data.splits["train"], hps, hps.max_seq_len,
                              training=True, seed=0).take(4))
  return hps, batches


def _state_values(state):
  """Every saved value: weights, hierarchy, optimiser slots, counters, mask, rng."""
  model = state.model
  out = {f"{i}:{v.name}": v.numpy() for i, v in enumerate(model.variables)}
  out.update({f"opt/{i}": v.numpy() for i, v in
              enumerate(model.optimizer.variables)})
  out.update(step=model.global_step.numpy(), epoch=state.epoch.numpy(),
             best=state.best_loss.numpy(), mask=state.semi_mask.numpy())
  return out


def test_round_trip_restores_every_variable(setup, tmp_path):
  hps, batches = setup
  mask = np.arange(96) % 3 == 0
  a = CheckpointState(build_model(hps, seed=1), str(tmp_path))
  a.semi_mask.assign(mask)
  step_a = a.model.compiled_train_step()
  for batch in batches[:3]:
    step_a(batch)
  a.epoch.assign(5)
  a.best_loss.assign(1.25)
  path = a.save()
  assert path.endswith("ckpt-3")
  saved = _state_values(a)
  b = CheckpointState(build_model(hps, seed=2), str(tmp_path))
  differs = [k for k, v in _state_values(b).items()
             if not np.array_equal(v, saved[k])]
  assert any(k.endswith(":mu") for k in differs)
  assert any(k.endswith(":seed_generator_state") for k in differs)
  assert b.restore()
  got = _state_values(b)
  assert sorted(got) == sorted(saved)
  for k, v in saved.items():
    np.testing.assert_array_equal(got[k], v, err_msg=k)
  # The restored model continues exactly like the original.
  out_a = step_a(batches[3])
  out_b = b.model.compiled_train_step()(batches[3])
  for k in ("total", "lil", "de", "gau", "ij"):
    assert float(out_a[k]) == float(out_b[k]), k


@pytest.fixture(scope="module")
def saved_run(setup, tmp_path_factory):
  hps, batches = setup
  root = str(tmp_path_factory.mktemp("run"))
  save_config(os.path.join(root, CONFIG_NAME), hps)
  state = CheckpointState(build_model(hps), root)
  state.model.compiled_train_step()(batches[0])
  state.save()
  return root, state.model


def test_load_trained_restores_the_model(saved_run):
  root, model = saved_run
  hps, loaded = load_trained(root)
  assert hps.max_seq_len == model.hps.max_seq_len
  assert int(loaded.global_step.numpy()) == 1
  for v, w in zip(model.trainable_variables + list(model.hierarchy.variables),
                  loaded.trainable_variables + list(loaded.hierarchy.variables)):
    np.testing.assert_array_equal(v.numpy(), w.numpy())
