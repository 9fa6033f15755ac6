"""TensorBoard logs of a run (train.py + model/training/summaries.py), read back with
tensorboard's own event reader (plugin_event_multiplexer), on the session's
tiny model (tests/conftest.py: validated at steps 3 and 6)."""
import io
import json
import os

import numpy as np
from PIL import Image
import pytest
from tensorboard.backend.event_processing import plugin_event_multiplexer as pem
import tensorflow as tf

from data.dataset import load_dataset
from hparams import CONFIG_NAME
from model.storage.checkpoint import load_trained
from model.training import summaries
from model.training.summaries import (ValidationSummaries, index_histogram,
                                      pick_spread)
from tests.conftest import TINY_STEPS

VALID_STEPS = [3, 6]


@pytest.fixture(scope="module")
def events(tiny_model):
  tb = os.path.join(tiny_model[1], "tb")
  mux = pem.EventMultiplexer(tensor_size_guidance={"scalars": 0, "images": 0,
                                                   "histograms": 0, "text": 0})
  mux.AddRunsFromDirectory(tb)
  mux.Reload()
  (run,) = mux.Runs()
  return mux, run


def _tags(events, plugin):
  mux, run = events
  return set(mux.PluginRunToTagToContent(plugin).get(run, {}))


def _values(events, tag):
  """{step: ndarray} of a tensor summary."""
  mux, run = events
  return {e.step: tf.make_ndarray(e.tensor_proto) for e in mux.Tensors(run, tag)}


def test_scalars_a_researcher_looks_at(events):
  tags = _tags(events, "scalars")
  for key in ("total", "lil", "pen", "de", "gau", "ij", "lr", "kl_weight",
              "num_live_k", "num_live_l", "pi_l/0", "pi_l/1"):
    assert f"train/{key}" in tags, key
  assert {"valid/lil", "test/lil"} <= tags
  assert sorted(_values(events, "train/lr")) == list(range(1, TINY_STEPS + 1))
  # num_live_l counts pi_l above 0.1 / L, from the logged pi_l of that step
  pi = [_values(events, f"train/pi_l/{l}") for l in (0, 1)]
  live = _values(events, "train/num_live_l")
  for step, n in live.items():
    assert float(n) == sum(float(p[step]) > 0.1 / 2 for p in pi)


def test_images_at_every_validation(events):
  assert {summaries.RECON_TAG, summaries.LEVEL_L_TAG} <= _tags(events, "images")
  for tag in (summaries.RECON_TAG, summaries.LEVEL_L_TAG):
    values = _values(events, tag)
    assert sorted(values) == VALID_STEPS
    for v in values.values():
      width, height, png = v            # the image plugin's [w, h, PNG] triple
      img = Image.open(io.BytesIO(png))
      assert img.size == (int(width), int(height)) and img.mode == "RGB"
      assert max(img.size) <= summaries.MAX_SIDE
      assert min(img.size) >= summaries.THUMB


def test_prior_histograms_match_the_logged_priors(events):
  assert {summaries.PI_K_TAG, summaries.PI_L_TAG} <= _tags(events, "histograms")
  pi_k, pi_l = (_values(events, t) for t in (summaries.PI_K_TAG,
                                              summaries.PI_L_TAG))
  assert sorted(pi_k) == sorted(pi_l) == VALID_STEPS
  scalars = [_values(events, f"train/pi_l/{l}") for l in (0, 1)]
  for step in VALID_STEPS:
    k = pi_k[step]
    assert k.shape == (4, 3)
    np.testing.assert_array_equal(k[:, 0], np.arange(4))
    np.testing.assert_array_equal(k[:, 1], np.arange(1, 5))
    assert k[:, 2].sum() == pytest.approx(1.0) and np.all(k[:, 2] >= 0)
    np.testing.assert_allclose(pi_l[step][:, 2],
                               [float(s[step]) for s in scalars], rtol=1e-6)


def test_model_config_as_text(events, tiny_model):
  assert summaries.CONFIG_TAG in _tags(events, "text")
  (text,) = _values(events, summaries.CONFIG_TAG).values()
  text = text.item().decode()
  assert text.startswith("```json\n") and text.endswith("\n```")
  with open(os.path.join(tiny_model[1], CONFIG_NAME)) as f:
    assert json.loads(text[len("```json\n"):-len("\n```")]) == json.load(f)


def test_pick_spread_and_index_histogram():
  labels = np.array([0, 0, 0, 1, 1, 2, 0, 2])
  np.testing.assert_array_equal(pick_spread(labels, 4), [0, 1, 3, 5])
  np.testing.assert_array_equal(pick_spread(labels, 6), [0, 1, 3, 4, 5, 7])
  np.testing.assert_array_equal(pick_spread(labels, 100), np.arange(8))
  np.testing.assert_array_equal(index_histogram([0.5, 0.25, 0.25]),
                                [[0, 1, .5], [1, 2, .25], [2, 3, .25]])


def test_summaries_change_no_model_state(tiny_model, tmp_path):
  """Writing the summaries leaves every variable (weights, hierarchy, step,
  RNG state) as it was, so training logs the same losses with or without."""
  hps, model = load_trained(tiny_model[1])
  before = [v.numpy().copy() for v in model.variables]
  s = ValidationSummaries(load_dataset(tiny_model[0], hps).splits["valid"], hps)
  s.write(tf.summary.create_file_writer(str(tmp_path)), model, 1)
  for v, b in zip(model.variables, before):
    np.testing.assert_array_equal(v.numpy(), b, err_msg=v.name)
