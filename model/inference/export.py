"""A trained model as a portable TensorFlow SavedModel: the logic of export.py.

The SavedModel holds the encoder, the stroke decoder and the (frozen)
hierarchy, with serving signatures that need nothing of this repository:

* ``encode(images uint8 (N, w, w))`` -> ``m``, ``s`` (N, D), ``p_k`` (N, K),
  ``p_l`` (N, L), ``label_k``, ``label_l`` (N,): the encoder's mean and
  variance and the hierarchy's posteriors of the mean (method.md §2, §3);
* ``posteriors(z (N, D))`` -> ``p_k``, ``p_l``, ``label_k``, ``label_l``;
* ``sample(z (N, D), temperature, seed, max_len)`` -> ``strokes`` (N, T, 3)
  stroke-3 in real coordinates (the data files' scale; rows from
  ``lengths[b]`` on are zeros, the pen of each last point is lifted) and
  ``lengths`` (N,): the batched decoding loop of model/inference/sampler.py
  itself, so a code and a seed give the sketch ``sample.py`` draws;
* ``sample_unit(level "k"|"l", index, n, seed, temperature, max_len)`` ->
  ``z``, ``k`` (the component drawn) and ``strokes``, ``lengths``: codes from
  a level-k Gaussian or a level-l unit (k ~ q(k|l)), drawn by TensorFlow's
  stateless generators (the same distribution as ``sample.py --level_l``,
  not the same draws: NumPy's generator is not a graph op);
* ``hierarchy()`` -> ``mu``, ``sigma2``, ``pi_l``, ``pi_k``, ``q_kl``,
  ``live_k``, ``live_l``.

Assets: ``model_config.json`` (the hparams), ``hierarchy.json`` (the same
parameters as lists) and ``export_info.json`` (format, source model, step,
the data folder it was trained on, ``max_len``, the signatures).  Functions
are traced without the project's C++ kernels (model/fast/native_ops.py), so
the graph has only TensorFlow's own ops.  The folder is built next to
``--out_dir`` and renamed into place (utils.io.publish_dir), and every file
is recorded in its manifest under the role ``export``: ``--overwrite``
replaces a folder only when that proves it is an earlier export.
"""
import json
import os
import tempfile

import numpy as np
import tensorflow as tf

from hparams import CONFIG_NAME, save_config
from model.fast import native_ops
# The sampler's own decoding loop, so that the export decodes as sample.py.
from model.inference.sampler import decode_loop
from model.storage.checkpoint import load_trained, recorded_data_dir
from utils import ownership
from utils.errors import UserError
from utils.io import check_writable, publish_dir
from utils.metrics import live_mask

ROLE = "export"
FORMAT = "rpcl-pix2seqh-savedmodel"
FORMAT_VERSION = 1
INFO_NAME = "export_info.json"
HIERARCHY_NAME = "hierarchy.json"
SIGNATURES = ("encode", "posteriors", "sample", "sample_unit", "hierarchy")


def _spec(shape, dtype, name):
  return tf.TensorSpec(shape, dtype, name=name)


def _stroke3(strokes5, lengths, max_len, scale):
  """Stroke-5 rows of the sampler -> stroke-3 (B, max_len, 3) in real units,
  as sampler.to_stroke3: dx, dy times ``scale``, pen = p2, the last point's
  pen lifted; rows from ``lengths`` on are zeros."""
  s5 = strokes5[:, :max_len]
  lengths = tf.minimum(lengths, max_len)
  t = tf.range(tf.shape(s5)[1])[None, :]
  valid = t < lengths[:, None]
  pen = tf.where(t == lengths[:, None] - 1, tf.ones_like(s5[..., 3]), s5[..., 3])
  rows = tf.stack([s5[..., 0] * scale, s5[..., 1] * scale, pen], axis=-1)
  return tf.where(valid[..., None], rows, tf.zeros_like(rows)), lengths


def _live_text(mask):
  return ", ".join(str(i) for i in np.flatnonzero(mask)) or "none"


def build_module(hps, model, max_len):
  """A tf.Module with the signatures of this module's docstring for ``model``
  (a restored RPCLPix2SeqH); ``max_len`` caps the sketches' length."""
  h = model.hierarchy
  mu, sigma2 = h.mu.numpy(), h.sigma2.numpy()
  pi_l, q_kl = h.pi_l.numpy(), h.q_kl.numpy()
  pi_k = h.pi_k().numpy()
  live_k, live_l = live_mask(pi_k), live_mask(pi_l)
  scale = np.float32(hps.scale_factor if hps.scale_factor > 0 else 1.0)
  w, dim, cap = hps.png_width, hps.z_size, int(max_len)
  decoder = model.stroke_decoder
  module = tf.Module()
  # The functions read the networks' and the hierarchy's variables: tracked
  # here, so that they are saved (the Keras objects themselves are not).
  module.weights = [getattr(v, "value", v) for v in model.variables]

  def decode(z, temperature, seed, length):
    tf.debugging.assert_greater(temperature, 0.0,
                                message="temperature must be > 0")
    tf.debugging.assert_positive(length, message="max_len must be >= 1")
    tf.debugging.assert_less_equal(
        length, cap, message=f"max_len must be <= {cap} (export.py --max_len)")
    ids = tf.cast(tf.range(tf.shape(z)[0]), tf.uint32)
    seed = tf.cast(tf.bitwise.bitwise_and(seed, 0xFFFFFFFF), tf.uint32)
    strokes5, lengths = decode_loop(decoder, z, ids, seed, temperature, cap,
                                     False)
    strokes, lengths = _stroke3(strokes5, lengths, length, scale)
    return {"strokes": strokes, "lengths": lengths}

  def posteriors(z):
    post = h.posteriors(z)
    return {"p_k": post.post_k, "p_l": post.post_l,
            "label_k": post.label_k, "label_l": post.label_l}

  @tf.function(autograph=False, input_signature=[
      _spec([None, w, w], tf.uint8, "images")])
  def encode(images):
    x = tf.cast(images, tf.float32) * np.float32(2.0 / 255.0) - np.float32(1.0)
    m, s = model.encode(x[..., None])
    return dict(posteriors(m), m=m, s=s)

  @tf.function(autograph=False, input_signature=[
      _spec([None, dim], tf.float32, "z")])
  def posteriors_fn(z):
    return posteriors(z)

  @tf.function(autograph=False, input_signature=[
      _spec([None, dim], tf.float32, "z"), _spec([], tf.float32, "temperature"),
      _spec([], tf.int64, "seed"), _spec([], tf.int32, "max_len")])
  def sample(z, temperature, seed, max_len):
    return decode(z, temperature, seed, max_len)

  @tf.function(autograph=False, input_signature=[
      _spec([], tf.string, "level"), _spec([], tf.int32, "index"),
      _spec([], tf.int32, "n"), _spec([], tf.int64, "seed"),
      _spec([], tf.float32, "temperature"), _spec([], tf.int32, "max_len")])
  def sample_unit(level, index, n, seed, temperature, max_len):
    is_l = tf.equal(level, "l")
    tf.debugging.Assert(is_l | tf.equal(level, "k"),
                        ["level must be 'k' or 'l', got", level])
    tf.debugging.assert_positive(n, message="n must be >= 1")
    count = tf.where(is_l, len(pi_l), len(pi_k))
    in_range = (index >= 0) & (index < count)
    safe = tf.where(in_range, index, 0)
    alive = tf.where(is_l, tf.gather(live_l, safe), tf.gather(live_k, safe))
    tf.debugging.Assert(in_range & alive, [
        "index must be a live level-k component (", _live_text(live_k),
        ") or a live level-l unit (", _live_text(live_l), "), got level", level,
        "index", index])
    seeds = tf.stack([seed, tf.constant(2, tf.int64)])
    logits = tf.math.log(tf.gather(q_kl, safe, axis=1) + 1e-300)[None]
    drawn = tf.cast(tf.random.stateless_categorical(logits, n, seeds)[0],
                    tf.int32)
    ks = tf.where(is_l, drawn, tf.fill([n], safe))
    eps = tf.random.stateless_normal([n, dim], tf.stack([seed, tf.constant(1, tf.int64)]),
                                     dtype=tf.float64)
    z = tf.cast(tf.gather(mu, ks) + tf.sqrt(tf.gather(sigma2, ks)) * eps,
                tf.float32)
    return dict(decode(z, temperature, seed, max_len), z=z, k=ks)

  @tf.function(autograph=False, input_signature=[])
  def hierarchy():
    return {"mu": tf.constant(mu), "sigma2": tf.constant(sigma2),
            "pi_l": tf.constant(pi_l), "pi_k": tf.constant(pi_k),
            "q_kl": tf.constant(q_kl), "live_k": tf.constant(live_k),
            "live_l": tf.constant(live_l)}

  module.encode, module.posteriors, module.sample = encode, posteriors_fn, sample
  module.sample_unit, module.hierarchy = sample_unit, hierarchy
  return module


def check_out_dir(out_dir, model_dir, overwrite):
  """Refuses an --out_dir that overlaps the model folder or its data folder, a
  file, a non-empty folder without --overwrite, or a folder that is not an
  earlier export (its manifest must list every file under the role export)."""
  ownership.refuse_overlap("--out_dir", out_dir, [
      ("--model_dir", model_dir),
      (f"the data folder recorded in {model_dir}", recorded_data_dir(model_dir))])
  if os.path.lexists(out_dir):
    if os.path.islink(out_dir) or not os.path.isdir(out_dir):
      raise UserError(f"--out_dir={out_dir!r} is a file, expected a folder")
    if os.listdir(out_dir) and not overwrite:
      raise UserError(f"--out_dir={out_dir!r} is not empty (an earlier "
                      f"export?): pass --overwrite to replace it or choose "
                      f"another folder")
    ownership.check_replaceable_dir(out_dir, ROLE, "--out_dir")
  check_writable(out_dir, "--out_dir")


def _info(hps, model, model_dir, max_len):
  data_dir = recorded_data_dir(model_dir)
  return {"format": FORMAT, "format_version": FORMAT_VERSION,
          "written_by": "export.py", "model_dir": os.path.abspath(model_dir),
          "checkpoint": tf.train.latest_checkpoint(model_dir),
          "step": int(model.global_step.numpy()),
          "data_dir": os.path.abspath(data_dir) if data_dir else None,
          "categories": list(hps.categories), "max_len": int(max_len),
          "scale_factor": float(hps.scale_factor), "z_size": hps.z_size,
          "png_width": hps.png_width, "signatures": list(SIGNATURES)}


def _write_assets(folder, hps, model, info):
  """The asset files' sources in ``folder`` -> [tf.saved_model.Asset]."""
  h = model.hierarchy
  params = {"mu": h.mu.numpy(), "sigma2": h.sigma2.numpy(),
            "pi_l": h.pi_l.numpy(), "pi_k": h.pi_k().numpy(),
            "q_kl": h.q_kl.numpy()}
  texts = {HIERARCHY_NAME: {k: v.tolist() for k, v in params.items()},
           INFO_NAME: info}
  for name, payload in texts.items():
    with open(os.path.join(folder, name), "w") as f:
      json.dump(payload, f, indent=1)
  save_config(os.path.join(folder, CONFIG_NAME), hps)
  return [tf.saved_model.Asset(os.path.join(folder, name))
          for name in (CONFIG_NAME, HIERARCHY_NAME, INFO_NAME)]


def export(model_dir, out_dir, overwrite=False, max_len=0):
  """Writes the SavedModel of ``model_dir`` to ``out_dir``; returns a summary."""
  if max_len < 0:
    raise UserError(f"--max_len={max_len}: expected 0 (the model's "
                    f"max_seq_len) or an integer >= 1")
  check_out_dir(out_dir, model_dir, overwrite)
  hps, model = load_trained(model_dir)
  max_len = max_len or hps.max_seq_len
  info = _info(hps, model, model_dir, max_len)

  def fill(folder):
    module = build_module(hps, model, max_len)
    with tempfile.TemporaryDirectory() as sources, native_ops.disabled():
      module.assets = _write_assets(sources, hps, model, info)
      tf.saved_model.save(module, folder, signatures={
          name: getattr(module, name) for name in SIGNATURES})

  publish_dir(out_dir, fill, ROLE, flag="--out_dir")
  size = sum(os.path.getsize(os.path.join(root, name))
             for root, _, names in os.walk(out_dir) for name in names)
  return dict(out_dir=os.path.abspath(out_dir), bytes=size, step=info["step"],
              max_len=max_len, signatures=list(SIGNATURES))


def is_export(path):
  """Whether ``path`` is a folder written by export.py."""
  return (os.path.isfile(os.path.join(path, "saved_model.pb"))
          and os.path.isfile(os.path.join(path, "assets", INFO_NAME)))
