"""model/inference/classifier.py: the Rec classifier learns simple shapes; cache round trip."""
import json
import os

import numpy as np
from PIL import Image, ImageDraw

from data.raster import render_many
from data.synthetic import CATEGORIES, generate_sketches
from model.inference import classifier

SHAPES = ("circle", "cross", "square")


def draw_shapes(n_per_class, width=48, seed=0):
  """Black-on-white outline shapes at random sizes and positions."""
  rng = np.random.default_rng(seed)
  images, labels = [], []
  for label, shape in enumerate(SHAPES):
    for _ in range(n_per_class):
      img = Image.new("L", (width, width), 255)
      d = ImageDraw.Draw(img)
      r = rng.uniform(8, 18)
      cx, cy = rng.uniform(r + 2, width - r - 2, size=2)
      box = [cx - r, cy - r, cx + r, cy + r]
      lw = int(rng.integers(1, 3))
      if shape == "circle":
        d.ellipse(box, outline=0, width=lw)
      elif shape == "square":
        d.rectangle(box, outline=0, width=lw)
      else:
        d.line([box[0], box[1], box[2], box[3]], fill=0, width=lw)
        d.line([box[0], box[3], box[2], box[1]], fill=0, width=lw)
      images.append(np.asarray(img))
      labels.append(label)
  order = rng.permutation(len(labels))
  return np.stack(images)[order], np.asarray(labels, np.int32)[order]


def test_network_shapes():
  net = classifier.SketchANet(5, width=48)
  out = net(classifier.to_input(np.full((2, 48, 48), 255, np.uint8)))
  assert out.shape == (2, 5)
  x = classifier.to_input(np.array([[[0, 255]]], np.uint8))
  np.testing.assert_allclose(np.asarray(x)[0, 0, :, 0], [1.0, 0.0])


def test_classifier_learns_shapes_and_caches(tmp_path):
  train = draw_shapes(200, seed=0)
  valid = draw_shapes(30, seed=1)
  test = draw_shapes(100, seed=2)
  ticks = []
  splits = {"train": train, "valid": valid, "test": test}
  model, info = classifier.get_classifier(
      str(tmp_path), list(SHAPES), splits, epochs=6, seed=0,
      on_batch=lambda: ticks.append(1))
  assert len(ticks) == classifier.train_steps(600, 6)
  assert info["test_accuracy"] > 0.9, info
  pred = classifier.predict_labels(model, test[0])
  assert np.mean(pred == test[1]) == info["test_accuracy"]
  # cached: same predictions, no training when reloaded.
  saved = json.load(open(tmp_path / classifier.INFO_NAME))
  assert saved["categories"] == list(SHAPES)
  again, info2 = classifier.get_classifier(
      str(tmp_path), list(SHAPES), splits, on_batch=lambda: 1 / 0)
  assert info2["test_accuracy"] == info["test_accuracy"]
  np.testing.assert_array_equal(classifier.predict_labels(again, test[0]), pred)
  # other categories or a corrupted model file -> not reused.
  assert classifier.load_classifier(str(tmp_path), ["a", "b", "c"], 48) is None
  with open(tmp_path / classifier.MODEL_NAME, "wb") as f:
    f.write(b"truncated")
  assert classifier.load_classifier(str(tmp_path), list(SHAPES), 48) is None
  assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]


def test_classifier_learns_the_embedded_synthetic_categories():
  """Rec's classifier on the embedded dataset (data.synthetic, 5 categories)."""
  def images(n, split):
    seqs, labels, _ = generate_sketches(n, seed=0, split=split)
    return render_many([s.astype(np.float32) for s in seqs], 48, workers=1), labels
  train, test = images(500, "train"), images(200, "test")
  model = classifier.train_classifier(*train, epochs=6, seed=0,
                                      num_classes=len(CATEGORIES))
  acc = np.mean(classifier.predict_labels(model, test[0]) == test[1])
  assert acc > 0.9, acc
