"""sample.py's synthesis (model/inference/synthesis.py): outputs of every mode,
determinism, atomic output folder.  The tiny model is the session's
(tests/conftest.py: tiny_model); sample.py's bad inputs are cases of
tests/test_bad_inputs.py.
"""
import json
import os
import shutil

import numpy as np
from PIL import Image
import pytest

from data.dataset import load_dataset
from data.raster import render_many
from hparams import CONFIG_NAME
from model.inference import sampler, synthesis
from model.storage.checkpoint import load_trained
from tests.conftest import TINY_CATS
from utils.errors import UserError

N = 4  # sketches per category
CATS = TINY_CATS


@pytest.fixture(scope="module")
def trained(tiny_model):
  """(data_dir, model_dir, dead_dir) -- the session's tiny model (conftest);
  the last has level-k #3 dead."""
  return tiny_model


def run(trained, out, **kw):
  data_dir, model_dir, _ = trained
  kw.setdefault("data_dir", data_dir)
  kw.setdefault("num_per_category", N)
  return synthesis.synthesize(model_dir, str(out), **kw)


def load(out):
  with np.load(os.path.join(str(out), "samples.npz"), allow_pickle=True) as d:
    return {k: d[k] for k in d.files}


@pytest.fixture(scope="module")
def conditional(trained, tmp_path_factory):
  out = tmp_path_factory.mktemp("cond") / "out"
  return out, run(trained, out, seed=3)


def test_conditional_outputs_are_complete_and_consistent(trained, conditional):
  out, summary = conditional
  s = load(out)
  n = 2 * N
  assert summary["num"] == n and str(s["mode"]) == "conditional"
  assert list(s["categories"]) == CATS
  assert len(s["strokes"]) == n and s["z"].shape == (n, 8) and s["z"].dtype == np.float32
  for key in ("label_k", "label_l", "category", "ref_index"):
    assert s[key].shape == (n,) and s[key].dtype == np.int32
  assert s["images"].shape == s["ref_images"].shape == (n, 48, 48)
  np.testing.assert_array_equal(s["category"], np.repeat([0, 1], N))
  # references: the right test sketches, their category, their encoder mean
  hps, model = load_trained(trained[1])
  test = load_dataset(trained[0], hps).splits["test"]
  np.testing.assert_array_equal(test.labels[s["ref_index"]], s["category"])
  np.testing.assert_array_equal(test.images[s["ref_index"]], s["ref_images"])
  m, _ = model.encode(test.images[s["ref_index"]][..., None] / 127.5 - 1.0)
  np.testing.assert_allclose(s["z"], m.numpy(), atol=1e-4)
  post = model.hierarchy.posteriors(s["z"])
  np.testing.assert_array_equal(s["label_k"], post.label_k.numpy())
  np.testing.assert_array_equal(s["label_l"], post.label_l.numpy())
  np.testing.assert_allclose(s["pi_k"], model.hierarchy.pi_k().numpy(), rtol=1e-5)
  assert s["q_kl"].shape == (4, 2) and s["pi_l"].shape == (2,)
  # strokes at real scale, PNGs = the rasteriser's rendering of them
  for seq in s["strokes"]:
    assert seq.dtype == np.float32 and seq.ndim == 2 and seq.shape[1] == 3
  np.testing.assert_array_equal(render_many(list(s["strokes"]), 48), s["images"])
  assert float(s["scale_factor"]) == pytest.approx(hps.scale_factor, rel=1e-6)
  assert sorted(os.listdir(out)) == [".rpcl-outputs.json", "grid.png", "png",
                                     "samples.npz", "svg"]
  assert len(os.listdir(out / "svg")) == len(os.listdir(out / "png")) == n
  png = np.array(Image.open(out / "png" / "00001.png"))
  np.testing.assert_array_equal(png, s["images"][1])
  assert "<svg" in (out / "svg" / "00000.svg").read_text()
  grid = Image.open(out / "grid.png")
  assert grid.size[0] > 5 * 64 and grid.size[1] >= 2 * 64
  assert not [p for p in os.listdir(out.parent) if p.startswith(".tmp")]


def test_same_seed_same_sketches(trained, conditional, tmp_path):
  run(trained, tmp_path / "again", seed=3)
  a, b = load(conditional[0]), load(tmp_path / "again")
  assert len(a["strokes"]) == len(b["strokes"])
  assert all(np.array_equal(x, y) for x, y in zip(a["strokes"], b["strokes"]))
  for key in ("z", "ref_index", "images"):
    np.testing.assert_array_equal(a[key], b[key])
  labels = np.repeat([0, 1], 16)
  picks = [synthesis.pick_references(labels, [0, 1], N, seed) for seed in (3, 3, 4)]
  np.testing.assert_array_equal(picks[0], picks[1])
  np.testing.assert_array_equal(picks[0], a["ref_index"])
  assert not np.array_equal(picks[0], picks[2])


def test_controlled_modes(trained, tmp_path):
  run(trained, tmp_path / "k", level_k=1)
  k = load(tmp_path / "k")
  assert str(k["mode"]) == "level_k" and len(k["z"]) == N
  assert np.all(k["category"] == -1) and np.all(k["ref_index"] == -1)
  assert not k["ref_images"].any()
  run(trained, tmp_path / "l", level_l=0, greedy=True)
  assert str(load(tmp_path / "l")["mode"]) == "level_l"
  run(trained, tmp_path / "u", conditional=False)
  u = load(tmp_path / "u")
  assert str(u["mode"]) == "unconditional" and len(u["z"]) == 2 * N
  run(trained, tmp_path / "an", analogy="0,20,3", data_dir=None)  # recorded
  an = load(tmp_path / "an")
  assert len(an["z"]) == N and np.all(an["ref_index"] == 3)
  np.testing.assert_allclose(an["z"], an["z"][:1].repeat(N, 0))
  run(trained, tmp_path / "in", interpolate="1,30", steps=5)
  it = load(tmp_path / "in")
  assert len(it["z"]) == 5 and list(it["ref_index"]) == [1, 1, 1, 30, 30]
  np.testing.assert_allclose(it["z"][2], (it["z"][0] + it["z"][4]) / 2, atol=1e-5)


def test_existing_output_refused_then_replaced_with_overwrite(trained, tmp_path):
  out = tmp_path / "out"
  out.mkdir()
  (out / "old.txt").write_text("previous run")
  with pytest.raises(UserError, match="not empty.*--overwrite"):
    run(trained, out)
  assert os.listdir(out) == ["old.txt"]
  with pytest.raises(UserError, match="old.txt"):   # not ours: never deleted
    run(trained, out, overwrite=True)
  assert os.listdir(out) == ["old.txt"]
  mine = tmp_path / "mine"
  run(trained, mine)
  first = (mine / "samples.npz").read_bytes()
  run(trained, mine, overwrite=True, seed=1)        # our own output: replaced
  assert (mine / "samples.npz").read_bytes() != first


def test_old_config_with_missing_fields_still_samples(trained, tmp_path):
  model_dir = str(tmp_path / "old")
  shutil.copytree(trained[1], model_dir)
  path = os.path.join(model_dir, CONFIG_NAME)
  config = json.load(open(path))
  del config["jit_compile"], config["precision"]
  json.dump(config, open(path, "w"))
  run((trained[0], model_dir, None), tmp_path / "o", num_per_category=1)
  assert len(load(tmp_path / "o")["z"]) == 2


def test_all_level_l_is_every_live_unit_as_level_l_gives_it(trained, tmp_path):
  _, model = load_trained(trained[1])
  live = sampler.live_units(model.hierarchy)
  assert live
  run(trained, tmp_path / "all", all_level_l=True, seed=4)
  every = load(tmp_path / "all")
  assert str(every["mode"]) == "level_l" and len(every["z"]) == N * len(live)
  for i, l in enumerate(live):
    run(trained, tmp_path / f"l{l}", level_l=l, seed=4)
    np.testing.assert_array_equal(every["z"][i * N:(i + 1) * N],
                                  load(tmp_path / f"l{l}")["z"])
  with pytest.raises(UserError, match="--level_l and --all_level_l"):
    run(trained, tmp_path / "both", level_l=live[0], all_level_l=True)
