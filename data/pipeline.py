"""The tf.data input pipeline: stroke-5 batches, lengths, images, labels.

Each batch is built by one NumPy function (vectorised over the batch) run by
``tf.data`` in parallel threads with prefetching, so augmentation happens off
the training thread.  Randomness never comes from a global stateful RNG: the
order of epoch ``e`` comes from ``default_rng([seed, e])`` and the
augmentation of batch ``b`` of epoch ``e`` from ``default_rng([seed, e, b, 1])``,
so the batch sequence is identical across runs for a seed whatever the
parallelism.  Every new iteration over a training dataset is the next epoch
(reshuffled and re-augmented); ``first_epoch`` lets a resumed run continue
the epoch numbering.

Length buckets (``hps.length_buckets = n > 0``, training only): the epoch's
permutation is regrouped into n bins of within-category length rank (a
batch keeps the data's category mix, at similar length quantiles of each
category), the batch order is shuffled, and a batch is padded only to its
longest sketch (after augmentation):
strokes5 is (B, longest + 1, 5), the time dimension varies between batches
(the train step has a free time dimension: one trace).  Under
``hps.jit_compile`` batches are padded to their bucket's boundary instead,
(``bucket_boundaries``: n quantiles of the split's lengths, rounded up to
multiples of 8, the last one max_seq_len) so that XLA compiles at most n
shapes.  Which sketches an epoch drops (the remainder of ``n //
batch_size``) and the per-batch augmentation are as without buckets.

Why not batches of one length bucket (tf.data's bucket_by_sequence_length):
lengths differ by category (real sets: 125 vs 31 points on average), so
such batches hold one category; the hierarchy's per-batch EM/RPCL update
(moving averages with rate eta) would then pull every component of the
absent categories for many batches in a row.
"""
import os
import threading

import numpy as np
import tensorflow as tf

from data import images as I
from data import strokes as S
from utils.errors import UserError

# Batches built concurrently; each holds the GIL only between NumPy calls.
PARALLEL_CALLS = max(2, min(4, os.cpu_count() or 2))


BUCKET_ROUND = 8   # boundaries are multiples of this (or max_seq_len)


def bucket_boundaries(lengths, num_buckets, max_len):
  """Ascending padded lengths of ``num_buckets`` (at most) buckets: the
  k/num_buckets quantiles of ``lengths`` rounded up to BUCKET_ROUND, the last
  one ``max_len``."""
  lengths = np.asarray(lengths)
  qs = np.quantile(lengths, np.arange(1, num_buckets) / num_buckets) \
      if len(lengths) and num_buckets > 1 else []
  bounds = [int(-(-q // BUCKET_ROUND) * BUCKET_ROUND) for q in qs]
  return np.array(sorted({b for b in bounds if b < max_len} | {int(max_len)}),
                  np.int64)


def num_batches(n, batch_size, drop_remainder):
  """Batches per epoch for ``n`` examples."""
  return n // batch_size if drop_remainder else -(-n // batch_size)


class _EpochCounter:
  """Hands out consecutive epoch numbers, one per iteration of the dataset."""

  def __init__(self, first_epoch):
    self._next = int(first_epoch)
    self._lock = threading.Lock()

  def __call__(self):
    with self._lock:
      epoch, self._next = self._next, self._next + 1
    yield np.int64(epoch)


class BatchMaker:
  """Builds batch ``b`` of epoch ``e`` of a :class:`data.dataset.Split` in NumPy."""

  def __init__(self, split, hps, max_seq_len, augment, seed, shuffle,
               length_buckets=None, pad_to_longest=None):
    """``length_buckets``: None = hps.length_buckets when augmenting (training);
    ``pad_to_longest``: None = not hps.jit_compile (see the module doc)."""
    self.split, self.hps, self.max_seq_len = split, hps, int(max_seq_len)
    self.augment, self.seed, self.shuffle = augment, int(seed) & 0x7FFFFFFF, shuffle
    self.batch_size = hps.batch_size
    self._orders = {}
    self._lock = threading.Lock()
    self.bounds = None   # length buckets (shuffled, whole batches only)
    if length_buckets is None:
      length_buckets = hps.length_buckets if augment else 0
    self.pad_to_longest = (not hps.jit_compile if pad_to_longest is None
                           else bool(pad_to_longest))
    if length_buckets and shuffle:
      self.lengths = np.array([len(x) for x in split.strokes], np.int64)
      self.bounds = bucket_boundaries(self.lengths, length_buckets,
                                      self.max_seq_len)

  def order(self, epoch):
    """The example order of ``epoch`` (a permutation when shuffling)."""
    return self._epoch(epoch)[0]

  def _epoch(self, epoch):
    """(example order, padded length of each batch or None) of ``epoch``."""
    n = len(self.split)
    if not self.shuffle:
      return np.arange(n), None
    with self._lock:
      if epoch not in self._orders:
        if len(self._orders) > 4:
          self._orders.pop(min(self._orders))
        rng = np.random.default_rng([self.seed, int(epoch)])
        perm = rng.permutation(n)
        self._orders[epoch] = (perm, None) if self.bounds is None else \
            self._bucketed(perm, rng)
      return self._orders[epoch]

  def _bucketed(self, perm, rng):
    """``perm``'s first n // B * B examples regrouped by length, keeping each
    batch's category mix: every example gets its length rank within its
    category (ties in ``perm``'s random order), rank fraction in [0, 1); the
    examples are grouped into ``len(bounds)`` equal rank bins, random order
    within a bin, cut into batches, batches in random order.  A batch thus
    holds each category in its share of the data, at similar within-category
    length quantiles.  -> (order, padded length per batch)."""
    bsz, nbins = self.batch_size, len(self.bounds)
    keep = perm[:len(perm) // bsz * bsz]
    labels, lens = self.split.labels[keep], self.lengths[keep]
    rank = np.empty(len(keep))
    for c in np.unique(labels):
      members = np.flatnonzero(labels == c)
      by_len = members[np.argsort(lens[members], kind="stable")]
      rank[by_len] = np.arange(len(members)) / len(members)
    bins = np.floor(rank * nbins)
    grouped = keep[np.argsort(bins, kind="stable")].reshape(-1, bsz)
    shuffled = rng.permutation(len(grouped))
    pad = self.bounds[np.searchsorted(
        self.bounds, self.lengths[grouped].max(axis=1))][shuffled]
    return grouped[shuffled].reshape(-1), pad

  def batch(self, epoch, index):
    """-> (strokes5 (B,T+1,5) f32, seq_len (B,) i32, images (B,w,w,1) f32,
    labels (B,) i32); T = max_seq_len, or the batch's bucket boundary."""
    epoch, index = int(epoch), int(index)
    order, pad = self._epoch(epoch)
    idx = order[index * self.batch_size:(index + 1) * self.batch_size]
    seqs = [self.split.strokes[i] for i in idx]
    imgs = self.split.images[idx]
    if self.augment:
      hps = self.hps
      rng = np.random.default_rng([self.seed, epoch, index, 1])
      seqs = S.augment_strokes(seqs, hps.random_scale_factor,
                               hps.augment_stroke_prob, rng)
      imgs = I.augment_images(imgs, hps, rng)
    lens = np.array([len(s) for s in seqs], np.int32)
    max_len = self.max_seq_len if pad is None else int(pad[index])
    if pad is not None and self.pad_to_longest:
      max_len = int(lens.max())
    return (S.to_stroke5(seqs, max_len), lens,
            I.to_unit_range(imgs)[..., None], self.split.labels[idx].astype(np.int32))


def make_dataset(split, hps, max_seq_len, training, seed, shuffle=None,
                 drop_remainder=None, first_epoch=0):
  """A ``tf.data.Dataset`` of ``(strokes5, seq_len, images, labels)`` batches.

  ``training``: augmentation on, and by default shuffled per epoch with
  ``drop_remainder=True`` (static batch size).  Otherwise in order, no
  augmentation, the last partial batch kept.  One iteration = one epoch.
  """
  shuffle = training if shuffle is None else shuffle
  drop_remainder = training if drop_remainder is None else drop_remainder
  buckets = hps.length_buckets if training and drop_remainder else 0
  maker = BatchMaker(split, hps, max_seq_len, training, seed, shuffle, buckets)
  n_batches = num_batches(len(split), hps.batch_size, drop_remainder)
  if n_batches == 0 and len(split):
    raise UserError(f"batch_size={hps.batch_size} is larger than the split "
                    f"({len(split)} sketches): no complete batch")
  bsz = hps.batch_size if drop_remainder else None
  w, t = hps.png_width, int(max_seq_len) + 1
  if maker.bounds is not None:
    t = None   # the batch's bucket

  def build(epoch, index):
    out = tf.numpy_function(maker.batch, [epoch, index],
                            [tf.float32, tf.int32, tf.float32, tf.int32],
                            stateful=False)
    shapes = [(bsz, t, 5), (bsz,), (bsz, w, w, 1), (bsz,)]
    for x, shape in zip(out, shapes):
      x.set_shape(shape)
    return tuple(out)

  epochs = tf.data.Dataset.from_generator(
      _EpochCounter(first_epoch), output_signature=tf.TensorSpec((), tf.int64))
  ds = epochs.flat_map(lambda e: tf.data.Dataset.range(n_batches).map(
      lambda b: (e, b)))
  ds = ds.map(build, num_parallel_calls=PARALLEL_CALLS, deterministic=True)
  ds = ds.prefetch(tf.data.AUTOTUNE)
  opts = tf.data.Options()
  opts.deterministic = True
  return ds.with_options(opts)


def semi_mask(labels, percent, balanced, rng):
  """Which training examples count as labelled (method.md §5) -> bool (N,).

  ``balanced=False``: ``round(percent * N)`` examples chosen uniformly;
  ``balanced=True``: ``round(percent * N_c)`` chosen within every category c.
  """
  labels = np.asarray(labels)
  mask = np.zeros(len(labels), bool)
  groups = ([np.flatnonzero(labels == c) for c in np.unique(labels)]
            if balanced else [np.arange(len(labels))])
  for members in groups:
    k = int(round(percent * len(members)))
    mask[rng.choice(members, size=k, replace=False)] = True
  return mask
