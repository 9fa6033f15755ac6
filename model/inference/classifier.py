"""Sketch-a-Net-style CNN classifier for the Rec metric (method.md §8).

Rec = accuracy of a classifier trained on the training images of the
model's categories, applied to the generated sketches.  The network follows
Sketch-a-Net's shape scaled to 48x48 inputs: a large-filter strided first
convolution, 3x3 convolutions with max pooling, and a dropout-regularised
dense head.  A trained classifier is cached in ``<model_dir>/classifier/``
(``sketchanet.keras`` + ``sketchanet.json`` with its categories and test
accuracy) and reused when the categories and image width match.
"""
import json
import os

import numpy as np
import keras
import tensorflow as tf

from utils.io import atomic_path, atomic_write_text

MODEL_NAME = "sketchanet.keras"
INFO_NAME = "sketchanet.json"
CACHE_VERSION = 1


def SketchANet(num_classes, width=48, dropout=0.5):
  """The classifier of Rec (method.md (52)): (B, w, w, 1) ink images in [0, 1]
  -> (B, num_classes) logits."""
  inputs = keras.Input((width, width, 1), name="image")
  x = keras.layers.Conv2D(32, 7, strides=2, padding="same", activation="relu",
                          name="conv1")(inputs)                       # w/2
  x = keras.layers.MaxPooling2D(2, name="pool1")(x)                   # w/4
  x = keras.layers.Conv2D(64, 3, padding="same", activation="relu",
                          name="conv2")(x)
  x = keras.layers.Conv2D(128, 3, padding="same", activation="relu",
                          name="conv3")(x)
  x = keras.layers.MaxPooling2D(2, name="pool2")(x)                   # w/8
  x = keras.layers.Conv2D(128, 3, padding="same", activation="relu",
                          name="conv4")(x)
  x = keras.layers.MaxPooling2D(2, name="pool3")(x)                   # w/16
  x = keras.layers.Flatten()(x)
  x = keras.layers.Dense(256, activation="relu", name="fc1")(x)
  x = keras.layers.Dropout(dropout, name="dropout")(x)
  logits = keras.layers.Dense(num_classes, name="logits")(x)
  return keras.Model(inputs, logits, name="sketch_a_net")


def to_input(images):
  """uint8 (N, w, w) black-on-white -> float32 (N, w, w, 1) ink in [0, 1]."""
  images = tf.convert_to_tensor(images)
  return (1.0 - tf.cast(images, tf.float32) / 255.0)[..., None]


def _dataset(images, labels, batch_size, shuffle_seed=None):
  ds = tf.data.Dataset.from_tensor_slices((np.asarray(images, np.uint8),
                                          np.asarray(labels, np.int32)))
  if shuffle_seed is not None:
    ds = ds.shuffle(len(images), seed=shuffle_seed,
                    reshuffle_each_iteration=True)
  return ds.batch(batch_size).map(lambda x, y: (to_input(x), y)).prefetch(2)


class _Ticker(keras.callbacks.Callback):
  """Calls ``on_batch()`` after every training batch (for a Progress bar)."""

  def __init__(self, on_batch):
    super().__init__()
    self._on_batch = on_batch

  def on_train_batch_end(self, batch, logs=None):
    self._on_batch()


def train_steps(num_train, epochs, batch_size=128):
  """Number of training batches train_classifier runs (for progress totals)."""
  return epochs * int(np.ceil(num_train / batch_size))


def train_classifier(train_images, train_labels, valid_images=None,
                     valid_labels=None, epochs=5, seed=0, batch_size=128,
                     num_classes=None, learning_rate=1e-3, on_batch=None):
  """Trains a SketchANet; with a validation split the best epoch's weights win."""
  train_labels = np.asarray(train_labels)
  if num_classes is None:
    num_classes = int(train_labels.max()) + 1
  keras.utils.set_random_seed(seed)
  model = SketchANet(num_classes, width=np.shape(train_images)[1])
  model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])
  callbacks = [_Ticker(on_batch)] if on_batch else []
  valid = None
  if valid_images is not None and len(valid_images):
    valid = _dataset(valid_images, valid_labels, 512)
    callbacks.append(keras.callbacks.EarlyStopping(
        monitor="val_accuracy", patience=epochs, restore_best_weights=True))
  model.fit(_dataset(train_images, train_labels, batch_size, shuffle_seed=seed),
            validation_data=valid, epochs=epochs, verbose=0, callbacks=callbacks,
            shuffle=False)
  return model


def predict_labels(model, images, batch_size=512):
  """Argmax class of each uint8 image."""
  if len(images) == 0:
    return np.zeros((0,), np.int32)
  preds = []
  for start in range(0, len(images), batch_size):
    logits = model(to_input(images[start:start + batch_size]), training=False)
    preds.append(np.argmax(np.asarray(logits), axis=1))
  return np.concatenate(preds).astype(np.int32)


def save_classifier(model, cache_dir, info):
  """Writes the model, then its info json (the json marks a complete cache)."""
  with atomic_path(os.path.join(cache_dir, MODEL_NAME), role="evaluate") as tmp:
    model.save(tmp)
  atomic_write_text(os.path.join(cache_dir, INFO_NAME),
                    json.dumps(dict(info, version=CACHE_VERSION), indent=2),
                    role="evaluate")


def load_classifier(cache_dir, categories, width):
  """(model, info) from the cache if it matches categories and width, else None."""
  info_path = os.path.join(cache_dir, INFO_NAME)
  model_path = os.path.join(cache_dir, MODEL_NAME)
  try:
    with open(info_path) as f:
      info = json.load(f)
  except (OSError, ValueError):
    return None
  if (info.get("version") != CACHE_VERSION
      or info.get("categories") != list(categories)
      or info.get("width") != int(width)):
    return None
  try:
    model = keras.models.load_model(model_path, compile=False)
  except Exception:  # a truncated or foreign file: retrain instead.  pylint: disable=broad-except
    return None
  return model, info


def get_classifier(cache_dir, categories, splits, epochs=5, seed=0,
                   batch_size=128, on_batch=None, retrain=False):
  """The cached classifier for ``categories`` or a newly trained one.

  ``splits`` maps "train" / "valid" / "test" to (images uint8, labels).
  Returns (model, info) with info["test_accuracy"] on the test split.
  """
  width = np.shape(splits["train"][0])[1]
  if not retrain:
    cached = load_classifier(cache_dir, categories, width)
    if cached is not None:
      return cached
  train, valid, test = splits["train"], splits.get("valid"), splits["test"]
  model = train_classifier(train[0], train[1], *(valid or (None, None)),
                           epochs=epochs, seed=seed, batch_size=batch_size,
                           num_classes=len(categories), on_batch=on_batch)
  test_pred = predict_labels(model, test[0])
  info = {"categories": list(categories), "width": int(width),
          "epochs": int(epochs), "seed": int(seed),
          "num_train": int(len(train[0])),
          "test_accuracy": float(np.mean(test_pred == np.asarray(test[1])))}
  save_classifier(model, cache_dir, info)
  return model, info
