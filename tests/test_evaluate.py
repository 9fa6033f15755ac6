"""model/inference/evaluation.py: the metric core with stand-in encoder / hierarchy /
classifier, style labels, reference checks, and evaluate() end to end (the
CLI's bad inputs are cases of tests/test_bad_inputs.py)."""
import collections
import json
import os
import shutil

import numpy as np
import pytest

from data.dataset import load_dataset
from model.inference import evaluation, synthesis
from model.inference import classifier as cls
from model.storage.checkpoint import load_trained
from tests.test_classifier import SHAPES, draw_shapes
from tests.test_visualization import write_samples
from utils import figures
from utils.errors import UserError
from utils.samples_file import load_samples

Post = collections.namedtuple("Post", "label_k label_l")
PROJ = np.random.default_rng(7).normal(size=(48 * 48, 6)).astype(np.float32)


def encode(x):
  """Stand-in encoder: a fixed random projection of the [-1, 1] pixels."""
  x = np.asarray(x)
  assert x.ndim == 4 and x.shape[-1] == 1 and x.min() >= -1 and x.max() <= 1
  m = x.reshape(len(x), -1) @ PROJ
  return m, np.ones_like(m)


def make_test_split(n_per_class=20):
  images, labels = draw_shapes(n_per_class, seed=3)
  order = np.argsort(labels, kind="stable")           # grouped like load_dataset
  return images[order], labels[order]


def samples_from_refs(tmp_path, images, labels, ref_index, noise=0):
  rng = np.random.default_rng(0)
  gen = images[ref_index].astype(int)
  if noise:
    gen = np.where(rng.random(gen.shape) < noise, 255 - gen, gen)
  n = len(ref_index)
  write_samples(str(tmp_path), n=n, images=gen.astype(np.uint8),
                ref_images=images[ref_index], ref_index=ref_index.astype(np.int32),
                category=labels[ref_index].astype(np.int32),
                categories=np.array(SHAPES),
                z=np.zeros((n, 8), np.float32), label_k=np.zeros(n, np.int32),
                label_l=np.zeros(n, np.int32))
  return load_samples(str(tmp_path))


def test_metrics_core_with_exact_references(tmp_path):
  images, labels = make_test_split()
  styles = np.arange(len(labels)) % 2
  ref = np.random.default_rng(1).permutation(len(labels))[:30]
  samples = samples_from_refs(tmp_path, images, labels, ref)

  def posteriors(z):
    # codes of the test split in order: label_k = (category, style), label_l = category.
    assert z.shape == (len(labels), 6)
    return Post(labels * 2 + styles, labels)

  predicted = []
  def predict(imgs):
    predicted.append(len(imgs))
    return np.zeros(len(imgs), np.int32)                # always "circle"

  r = evaluation.compute_metrics(encode, posteriors, (images, labels), samples,
                                 list(SHAPES), predict=predict,
                                 styles=labels * 10 + styles, batch_size=16)
  assert r["ret"] == {"top1": 1.0, "top10": 1.0, "top50": 1.0}
  assert r["num_ret"] == 30 and predicted == [30]
  assert r["rec"] == pytest.approx(np.mean(labels[ref] == 0))
  assert r["rec_per_category"]["circle"] == 1.0
  assert r["rec_per_category"]["cross"] == 0.0
  cat_k = r["clustering"]["category"]["level_k"]
  assert cat_k["purity"] == 1.0 and cat_k["clusters"] == 6
  assert r["clustering"]["category"]["level_l"]["ari"] == pytest.approx(1.0)
  assert r["clustering"]["style"]["level_k"]["nmi"] == pytest.approx(1.0)
  # level-l (3 clusters) against 6 equal (category, style) classes: purity 1/2.
  assert r["clustering"]["style"]["level_l"]["purity"] == pytest.approx(0.5)


def test_retrieval_degrades_with_corrupted_sketches(tmp_path):
  images, labels = make_test_split()
  ref = np.arange(len(labels))
  samples = samples_from_refs(tmp_path, images, labels, ref, noise=0.45)
  r = evaluation.compute_metrics(encode, lambda z: Post(labels, labels),
                                 (images, labels), samples, list(SHAPES))
  assert r["ret"]["top1"] < 0.5 and r["ret"]["top50"] >= r["ret"]["top10"]
  assert "rec" not in r                                 # no classifier given


def test_references_must_come_from_this_test_split(tmp_path):
  images, labels = make_test_split()
  samples = samples_from_refs(tmp_path, images, labels, np.arange(10))
  samples["ref_images"] = 255 - samples["ref_images"]
  with pytest.raises(UserError, match="differ from the test split"):
    evaluation.check_references(samples, images)
  samples["ref_index"][0] = len(images)
  with pytest.raises(UserError, match="another data_dir"):
    evaluation.check_references(samples, images)


def test_category_targets_map_by_name(tmp_path):
  images, labels = make_test_split()
  samples = samples_from_refs(tmp_path, images, labels, np.array([0, 25, 45]))
  assert labels[[0, 25, 45]].tolist() == [0, 1, 2]
  # the model lists the categories in another order.
  t = evaluation.category_targets(samples, ["square", "circle", "cross"])
  assert t.tolist() == [1, 2, 0]
  with pytest.raises(UserError, match="not trained on"):
    evaluation.category_targets(samples, ["circle", "cross"])


def test_style_labels(tmp_path):
  labels = np.array([0, 0, 0, 1, 1])
  np.savez(tmp_path / "a_styles.npz", train=np.zeros(9), valid=np.zeros(2),
           test=np.array([1, 0, 1, 7]))
  styles, note = evaluation.load_style_labels(str(tmp_path), ["a", "b"], labels, 3)
  assert styles is None and "b_styles.npz" in note
  np.savez(tmp_path / "b_styles.npz", train=np.zeros(9), valid=np.zeros(2),
           test=np.array([1, 1]))
  styles, note = evaluation.load_style_labels(str(tmp_path), ["a", "b"], labels, 3)
  assert note == "ok"
  # (category, style) pairs: a1 a0 a1 b1 b1 -> three distinct classes.
  assert styles[0] == styles[2] != styles[1] and styles[3] == styles[4] != styles[0]
  styles, note = evaluation.load_style_labels(str(tmp_path), ["a", "b"], labels, 2)
  assert styles is None and "test split has 3" in note


def test_format_table_lists_every_metric():
  result = {"rec": 0.9, "classifier": {"test_accuracy": 0.95},
            "ret": {"top1": 0.5, "top10": 0.8, "top50": 0.9},
            "clustering": {"category": {"level_k": {"purity": 1, "nmi": .5, "ari": .25},
                                        "level_l": {"purity": 1, "nmi": 1, "ari": 1}}},
            "live_k": 3, "num_k": 10, "live_l": 2, "num_l": 5,
            "code_worth": {"nats_per_sketch": 12.5, "nats_per_point": 0.25}}
  table = evaluation.format_table(result)
  for text in ("Rec", "0.900", "0.950", "Ret top50", "level_k vs category",
               "0.250", "3/10", "2/5", "code's worth",
               "12.500 nats/sketch (0.2500 nats/point)"):
    assert text in table
  table = evaluation.format_table(dict(result, code_worth=None))
  assert "code's worth (test, shuffled - own)  n/a" in table


@pytest.fixture
def trained(tiny_model, tmp_path):
  """(data_dir, model_dir): a copy of the session's tiny model (evaluate
  caches its classifier in the model folder)."""
  data_dir, model_dir, _ = tiny_model
  copy = str(tmp_path / "model")
  shutil.copytree(model_dir, copy)
  return data_dir, copy


def test_evaluate_end_to_end_with_references_as_samples(trained, tmp_path):
  """Samples whose images ARE their references: Ret@1 must be exactly 1 through
  the real encoder, and Rec equals the classifier's accuracy on them."""
  data_dir, model_dir = trained
  hps, model = load_trained(model_dir)
  test = load_dataset(data_dir, hps).splits["test"]
  ref = np.random.default_rng(0).permutation(len(test.labels))[:12]
  write_samples(str(tmp_path), n=12, images=test.images[ref],
                ref_images=test.images[ref], ref_index=ref.astype(np.int32),
                category=test.labels[ref].astype(np.int32),
                categories=np.array(hps.categories),
                pi_l=model.hierarchy.pi_l.numpy(),
                pi_k=model.hierarchy.pi_k().numpy(),
                q_kl=model.hierarchy.q_kl.numpy(),
                z=np.zeros((12, hps.z_size), np.float32),
                label_k=np.zeros(12, np.int32), label_l=np.zeros(12, np.int32))
  out = str(tmp_path / "eval.json")
  r = evaluation.evaluate(model_dir, data_dir, str(tmp_path), out,
                          classifier_epochs=4, show_progress=False)
  assert r["ret"] == {"top1": 1.0, "top10": 1.0, "top50": 1.0}
  assert r["num_ret"] == 12 and r["num_test"] == len(test.labels)
  clf, info = cls.load_classifier(os.path.join(model_dir, "classifier"),
                                  hps.categories, hps.png_width)
  assert r["classifier"]["test_accuracy"] == info["test_accuracy"] > 0.8
  pred = cls.predict_labels(clf, test.images[ref])
  assert r["rec"] == pytest.approx(np.mean(pred == test.labels[ref]))
  assert 1 <= r["live_k"] <= r["num_k"] == hps.num_components
  assert r["styles"] == "ok"              # data.synthetic writes <cat>_styles.npz
  assert set(r["clustering"]) == {"category", "style"}
  assert set(r["clustering"]["style"]) == {"level_k", "level_l"}
  saved = json.load(open(out))
  assert saved["ret"] == r["ret"] and saved["rec"] == r["rec"]
  # the code's worth of the whole test split (tests/test_code_worth.py checks
  # its values)
  worth = r["code_worth"]
  assert {"nats_per_sketch", "nats_per_point", "lil_own", "lil_shuffled"} <= set(worth)
  assert worth["num_sketches"] == len(test.labels)
  assert worth["nats_per_sketch"] == pytest.approx(
      worth["lil_shuffled"] - worth["lil_own"])
  assert saved["code_worth"] == worth
  assert "code's worth" in evaluation.format_table(r)


def test_visualize_sample_py_output(trained, tmp_path):
  """The real samples.npz of sample.py goes through visualization unchanged."""
  data_dir, model_dir = trained
  out = tmp_path / "samples"
  synthesis.synthesize(model_dir, str(out), data_dir=data_dir, num_per_category=4)
  samples = load_samples(str(out))
  paths = figures.visualize(samples, str(out))
  for path in paths.values():
    assert os.path.getsize(path) > 10000
