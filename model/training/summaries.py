"""TensorBoard summaries written at validation, beside train.py's scalars.

* ``valid/reconstructions`` (image): a few validation sketches (grey) beside
  their syntheses from z = the encoder mean, in blocks per category;
* ``samples/level_l`` (image): a few syntheses from each live level-l unit
  (k ~ q(k|l), then z ~ N(mu_k, sigma2_k));
* ``hierarchy/pi_k``, ``hierarchy/pi_l`` (histograms over the component
  index: bucket [k, k+1) holds the prior pi_k), so the histogram dashboard
  shows the priors concentrate and the RPCL losers die out over training;
* ``config/model_config`` (text): model_config.json, once at the start.

The syntheses of one validation are decoded together in one call of
model/inference/sampler.py's batched sampler, whose compiled loop is traced once and
reused, with fixed seeds and fixed validation sketches, so successive images
differ only by the model.  Nothing here changes a variable or the training
RNG state (the sampler's noise is counter-based), so a run logs the same
losses with or without these summaries.
"""
import json

import numpy as np
import tensorflow as tf
from tensorboard.plugins.histogram import metadata

from data.images import to_unit_range
from data.raster import render_many
from model.inference import sampler
from utils import contact_sheet
from utils.drawing import palette

RECON_TAG = "valid/reconstructions"
LEVEL_L_TAG = "samples/level_l"
PI_K_TAG, PI_L_TAG = "hierarchy/pi_k", "hierarchy/pi_l"
CONFIG_TAG = "config/model_config"
REF_GRAY = (110, 110, 110)
# TensorBoard shows an image at its own size in a card about 300 px wide
# (wider ones scroll), so the images are narrow and tall, titled by their
# description (the card's info icon) rather than by text in the image.
THUMB = 64          # px of each sketch
MAX_SIDE = 1600     # px, longest side of an image
ASPECT = 2.5        # height / width aimed at
RECON_TEXT = ("A few validation sketches (grey, the same at every validation) "
              "beside their syntheses from z = the encoder mean, by category.")
LEVEL_L_TEXT = ("Syntheses from each live level-l unit: k ~ q(k|l), z ~ "
                "N(mu_k, sigma2_k); the block label gives pi_l and the k drawn.")
TEMPERATURE = 0.24  # sample.py's default
SEED = 0


def pick_spread(labels, n):
  """``n`` indices taken in turn from each category (the first sketch of
  every category, then the second, ...), in increasing order: the same
  every call."""
  labels = np.asarray(labels)
  rank = np.zeros(len(labels), np.int64)
  for c in np.unique(labels):
    idx = np.flatnonzero(labels == c)
    rank[idx] = np.arange(len(idx))
  order = np.lexsort((labels, rank))
  return np.sort(order[:n])


def index_histogram(weights):
  """The histogram plugin's (K, 3) [left, right, count] tensor with one
  bucket [k, k+1) per component holding ``weights[k]``."""
  w = np.asarray(weights, np.float64).reshape(-1)
  k = np.arange(len(w), dtype=np.float64)
  return np.stack([k, k + 1.0, w], axis=1)


def write_index_histogram(tag, weights, step, description=""):
  tf.summary.write(tag, tf.constant(index_histogram(weights), tf.float64),
                   step=step,
                   metadata=metadata.create_summary_metadata(tag, description))


def config_markdown(config_text):
  """model_config.json as a Markdown code block (the text plugin renders
  Markdown: without the fence the JSON would be reflowed)."""
  return "```json\n" + config_text.strip() + "\n```"


def write_config(writer, config_path, step):
  """The model's config file as the ``config/model_config`` text summary."""
  with open(config_path) as f:
    text = f.read()
  json.loads(text)   # a valid config, or an error here rather than in the UI
  with writer.as_default(step=int(step)):
    tf.summary.text(CONFIG_TAG, config_markdown(text))


class ValidationSummaries:
  """Images, histograms and live counts of one run, written at validation.

  split: the validation data.Split; ``num_recon`` of its sketches are
  reconstructed and ``per_unit`` codes drawn from each live level-l unit
  (at most ``max_units`` of them, the largest pi_l first)."""

  def __init__(self, split, hps, num_recon=8, per_unit=4, max_units=12):
    self.hps = hps
    self.idx = pick_spread(split.labels, num_recon)
    self.images = split.images[self.idx]
    self.labels = np.asarray(split.labels)[self.idx]
    self.refs = render_many([split.strokes[i] for i in self.idx], THUMB,
                            workers=1)
    self.per_unit, self.max_units = int(per_unit), int(max_units)

  def _codes(self, model):
    m, _ = model.encode(to_unit_range(self.images)[..., None])
    h = model.hierarchy
    pi_l = h.pi_l.numpy()
    units = sorted(sampler.live_units(h), key=lambda l: -pi_l[l])
    units = sorted(units[:self.max_units])
    zs, owners = [np.asarray(m.numpy(), np.float32)], [None] * len(self.idx)
    for l in units:
      z, ks = sampler.codes_from_level_l(h, l, self.per_unit, seed=SEED)
      zs.append(z)
      owners += [(l, int(k)) for k in ks]
    return np.concatenate(zs), owners, units

  def _decode(self, model, z):
    strokes5, lengths = sampler.sample_strokes(
        model.stroke_decoder, z, self.hps.max_seq_len, TEMPERATURE, seed=SEED)
    return render_many(sampler.to_stroke3(strokes5, lengths), THUMB,
                       workers=1)

  def images_for(self, model):
    """(reconstructions page, level-l samples page or None) as uint8 RGB."""
    z, owners, units = self._codes(model)
    syn = self._decode(model, z)
    n, cats = len(self.idx), list(self.hps.categories)
    cat_pal = palette(len(cats))
    blocks = []
    for c in sorted(set(self.labels.tolist())):
      items = [((self.refs[i], REF_GRAY), (syn[i], cat_pal[c]))
               for i in np.flatnonzero(self.labels == c)]
      blocks.append((cats[c], items))
    recon = contact_sheet.render_pages(blocks, max_side=MAX_SIDE, cell=THUMB,
                                       aspect=ASPECT)[0]
    if not units:
      return np.asarray(recon), None
    unit_pal = palette(self.hps.num_units)
    pi_l = model.hierarchy.pi_l.numpy()
    blocks = []
    for l in units:
      rows = [i for i in range(n, len(owners)) if owners[i][0] == l]
      blocks.append((f"l #{l} (pi_l {pi_l[l]:.2f}): k "
                     + ",".join(str(owners[i][1]) for i in rows),
                     [((syn[i], unit_pal[l]),) for i in rows]))
    level_l = contact_sheet.render_pages(blocks, max_side=MAX_SIDE, cell=THUMB,
                                         aspect=ASPECT)[0]
    return np.asarray(recon), np.asarray(level_l)

  def write(self, writer, model, step):
    """Every summary of one validation at ``step``."""
    recon, level_l = self.images_for(model)
    h = model.hierarchy
    pi_k, pi_l = h.pi_k().numpy(), h.pi_l.numpy()
    with writer.as_default(step=int(step)):
      tf.summary.image(RECON_TAG, recon[None], max_outputs=1,
                       description=RECON_TEXT)
      if level_l is not None:
        tf.summary.image(LEVEL_L_TAG, level_l[None], max_outputs=1,
                         description=LEVEL_L_TEXT)
      write_index_histogram(PI_K_TAG, pi_k, step,
                            "level-k prior pi_k: bucket [k, k+1) holds pi_k")
      write_index_histogram(PI_L_TAG, pi_l, step,
                            "level-l prior pi_l: bucket [l, l+1) holds pi_l")
