"""One interface over a trained model, whether a model folder or an export.

The explorer (model/inference/explorer.py) works with either a model folder
(``model_config.json`` + checkpoint, loaded by model/storage/checkpoint.py's
``load_trained``, decoded by model/inference/sampler.py) or a SavedModel
written by export.py (model/inference/export.py, loaded with plain
``tf.saved_model.load``).  Both give the same answers for the same codes
and seed (tests/test_export.py), through the same four calls:

* ``encode(images uint8 (N, w, w))`` -> :class:`Codes` (of the means);
* ``posteriors(z (N, D))`` -> :class:`Codes` without m and s;
* ``sample(z, temperature, seed, max_len)`` -> list of stroke-3 sketches in
  real coordinates (sample.py's ``samples.npz`` strokes);
* ``hierarchy``: :class:`HierarchyParams`, NumPy arrays with the attributes
  that sampler.live_units / codes_from_level_l read.

Calls are serialised by a lock: a web app's handlers run in threads.
"""
import dataclasses
import json
import os
import threading

import numpy as np
import tensorflow as tf

from data.images import to_unit_range
from hparams import CONFIG_NAME, load_config
from model.inference import sampler
from model.inference.export import INFO_NAME, is_export
from model.storage.checkpoint import load_trained, recorded_data_dir
from utils.errors import UserError


@dataclasses.dataclass
class HierarchyParams:
  """The hierarchy's parameters as NumPy arrays (method.md §3)."""
  mu: np.ndarray       # (K, D)
  sigma2: np.ndarray   # (K, D)
  pi_l: np.ndarray     # (L,)
  q_kl: np.ndarray     # (K, L), columns sum to 1

  def pi_k(self):
    """pi_k = sum_l q(k|l) pi_l."""
    return self.q_kl @ self.pi_l


@dataclasses.dataclass
class Codes:
  """Posteriors of codes under the hierarchy; m, s when they were encoded."""
  p_k: np.ndarray        # (N, K)
  p_l: np.ndarray        # (N, L)
  label_k: np.ndarray    # (N,) int32
  label_l: np.ndarray    # (N,) int32
  m: np.ndarray = None   # (N, D) encoder means
  s: np.ndarray = None   # (N, D) encoder variances


def _codes(out):
  arrays = {k: np.asarray(v) for k, v in out.items()}
  return Codes(p_k=arrays["p_k"].astype(np.float32),
               p_l=arrays["p_l"].astype(np.float32),
               label_k=arrays["label_k"].astype(np.int32),
               label_l=arrays["label_l"].astype(np.int32),
               m=arrays.get("m"), s=arrays.get("s"))


class ModelFolder:
  """A model folder of train.py (or model.tf1.import_tf1)."""
  kind = "model folder"

  def __init__(self, model_dir):
    self.hps, self.model = load_trained(model_dir)
    self.path = model_dir
    self.data_dir = recorded_data_dir(model_dir)
    self.max_len = self.hps.max_seq_len
    h = self.model.hierarchy
    self.hierarchy = HierarchyParams(h.mu.numpy(), h.sigma2.numpy(),
                                     h.pi_l.numpy(), h.q_kl.numpy())
    self._lock = threading.Lock()

  def encode(self, images):
    with self._lock:
      m, s = self.model.encode(to_unit_range(images)[..., None])
      post = self.model.hierarchy.posteriors(m)
    return _codes(dict(m=m.numpy(), s=s.numpy(), p_k=post.post_k,
                       p_l=post.post_l, label_k=post.label_k,
                       label_l=post.label_l))

  def posteriors(self, z):
    with self._lock:
      post = self.model.hierarchy.posteriors(np.asarray(z, np.float32))
    return _codes(dict(p_k=post.post_k, p_l=post.post_l,
                       label_k=post.label_k, label_l=post.label_l))

  def sample(self, z, temperature, seed, max_len):
    with self._lock:
      strokes5, lengths = sampler.sample_strokes(
          self.model.stroke_decoder, z, max_len, temperature, seed=seed)
    scale = self.hps.scale_factor if self.hps.scale_factor > 0 else 1.0
    return sampler.to_stroke3(strokes5, lengths, scale)


class ExportedModel:
  """A SavedModel written by export.py, read through its signatures only."""
  kind = "exported SavedModel"

  def __init__(self, path):
    assets = os.path.join(path, "assets")
    try:
      with open(os.path.join(assets, INFO_NAME)) as f:
        info = json.load(f)
    except (OSError, ValueError) as e:
      raise UserError(f"{path!r} is a SavedModel but not one of export.py "
                      f"(assets/{INFO_NAME}: {e})") from None
    self.hps = load_config(os.path.join(assets, CONFIG_NAME), warn=False)
    try:
      self._saved = tf.saved_model.load(path)
    except (OSError, ValueError, tf.errors.OpError) as e:
      raise UserError(f"cannot load the SavedModel {path!r}: "
                      f"{str(e).splitlines()[0]}") from None
    self.path = path
    data_dir = info.get("data_dir")
    self.data_dir = data_dir if data_dir and os.path.isdir(data_dir) else None
    self.max_len = int(info.get("max_len") or self.hps.max_seq_len)
    params = {k: v.numpy() for k, v in self._saved.hierarchy().items()}
    self.hierarchy = HierarchyParams(params["mu"], params["sigma2"],
                                     params["pi_l"], params["q_kl"])
    self._lock = threading.Lock()

  def encode(self, images):
    with self._lock:
      out = self._saved.encode(np.asarray(images, np.uint8))
    return _codes({k: v.numpy() for k, v in out.items()})

  def posteriors(self, z):
    with self._lock:
      out = self._saved.posteriors(np.asarray(z, np.float32))
    return _codes({k: v.numpy() for k, v in out.items()})

  def sample(self, z, temperature, seed, max_len):
    with self._lock:
      out = self._saved.sample(np.asarray(z, np.float32), np.float32(temperature),
                               np.int64(seed), np.int32(max_len))
    strokes, lengths = out["strokes"].numpy(), out["lengths"].numpy()
    return [s[:int(n)] for s, n in zip(strokes, lengths)]


def open_model(path):
  """A :class:`ModelFolder` or an :class:`ExportedModel` for ``path``."""
  if not os.path.isdir(path):
    raise UserError(f"--model_dir={path!r} does not exist (expected a model "
                    f"folder of train.py or a SavedModel of export.py)")
  if os.path.isfile(os.path.join(path, "saved_model.pb")):
    if not is_export(path):
      raise UserError(f"--model_dir={path!r} is a SavedModel but not one "
                      f"written by export.py (no assets/export_info.json)")
    return ExportedModel(path)
  return ModelFolder(path)
