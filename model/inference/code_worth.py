"""The code's worth: how much a sketch's own code helps the decoder draw it.

With lil(x | z) the stroke loss of sketch x decoded from code z
(:meth:`model.rpcl_model.RPCLPix2SeqH.stroke_nll`, method.md (41) at
evaluation: no dropout, the pen loss on the sketch's own rows) and z_b = m_b
the encoder mean of sketch b (as at validation):

    worth = (1/N) sum_b [ lil(x_b | z_pi(b)) - lil(x_b | z_b) ]

where pi is a derangement of the N sketches (no sketch keeps its own code).
A decoder that ignores its code draws an average sketch and scores ~0; the
larger the worth, the more the code tells the decoder about its sketch.  A
negative value means another sketch's code suits a sketch better than its own.

Units.  lil(x | z) is the summed negative log-likelihood, in nats, of a
sketch's n points (offset density and pen state of each of the n stroke-3
rows; padding rows count nothing): not divided by max_seq_len as sketch-rnn's
L_s is, and averaged over sketches, not points.  So

    nats_per_sketch = lil_shuffled - lil_own   (means over the N sketches)
    nats_per_point  = sum_b [lil(x_b | z_pi(b)) - lil(x_b | z_b)] / sum_b n_b

(the split's points pooled: a long sketch weighs in proportion to its points).

The shuffle is over the whole split (or the subset evaluated), not within
batches: the sketches are put in a seeded random order and each takes the code
of the next one in that order (the last the first's), a derangement for any
N >= 2 that mixes categories as the split does.  Batches are those of
validation (data/pipeline.py, in order, remainder kept).
"""
import numpy as np

from data.pipeline import make_dataset

VALID_SKETCHES = 256   # validation: at most this many valid sketches


def derangement(n, seed=0):
  """pi of method.md (55): ``donor`` (n,) int64, sketch i gets the code of
  sketch donor[i] != i.

  A seeded random order in which each sketch takes the next one's code
  (cyclically); ValueError for n < 2 (no derangement exists)."""
  if n < 2:
    raise ValueError(f"a derangement needs at least 2 sketches, got {n}")
  order = np.random.default_rng(seed).permutation(n)
  donor = np.empty(n, np.int64)
  donor[order] = np.roll(order, -1)
  return donor


def worth_from_nll(nll_own, nll_shuffled, lengths):
  """method.md (55) from per-sketch losses (nats) and point counts (pure NumPy)."""
  own = np.asarray(nll_own, np.float64)
  shuffled = np.asarray(nll_shuffled, np.float64)
  points = float(np.sum(np.asarray(lengths, np.int64)))
  return {"nats_per_sketch": float(np.mean(shuffled) - np.mean(own)),
          "nats_per_point": float(np.sum(shuffled - own) / max(points, 1.0)),
          "lil_own": float(np.mean(own)),
          "lil_shuffled": float(np.mean(shuffled)),
          "num_sketches": int(own.size), "num_points": int(points)}


def num_batches(split, hps, max_sketches=0):
  """How many decoder batches :func:`code_worth` runs (for progress bars)."""
  n = min(len(split), max_sketches) if max_sketches > 0 else len(split)
  return 2 * -(-n // hps.batch_size) if n >= 2 else 0


def code_worth(model, split, max_sketches=0, seed=0, on_batch=None):
  """The code's worth of ``model`` on a data.Split, method.md (55) (module
  docstring), or None when fewer than 2 sketches.

  Returns {"nats_per_sketch", "nats_per_point", "lil_own", "lil_shuffled",
  "num_sketches", "num_points", "shuffle"}.  ``max_sketches``: evaluate a
  seeded subset (0: the whole split); ``seed``: the subset's and the
  derangement's; ``on_batch()``: called after each decoder batch."""
  hps = model.hps
  split = split.subset(max_sketches, seed)
  if len(split) < 2:
    return None
  encode, nll = model.compiled_encode(), model.compiled_stroke_nll()
  dataset = make_dataset(split, hps, hps.max_seq_len, training=False, seed=0)
  codes, own, lengths = [], [], []
  for strokes5, seq_len, images, _ in dataset:
    m, _ = encode(images)
    codes.append(m.numpy())
    own.append(nll(strokes5, m).numpy())
    lengths.append(seq_len.numpy())
    if on_batch:
      on_batch()
  codes = np.concatenate(codes)
  donated = codes[derangement(len(codes), seed)]
  shuffled, start = [], 0
  for strokes5, _, _, _ in dataset:
    stop = start + int(strokes5.shape[0])
    shuffled.append(nll(strokes5, donated[start:stop]).numpy())
    start = stop
    if on_batch:
      on_batch()
  result = worth_from_nll(np.concatenate(own), np.concatenate(shuffled),
                          np.concatenate(lengths))
  result["shuffle"] = f"derangement of the {len(split)} sketches, seed {seed}"
  return result


def validation_scalars(model, split, max_sketches=VALID_SKETCHES):
  """``{"code_worth_per_sketch", "code_worth_per_point"}`` of a seeded subset
  of at most ``max_sketches`` sketches (the same ones at every validation;
  written as valid/... scalars by model/training/loop.py), {} under 2 sketches."""
  result = code_worth(model, split, max_sketches)
  if result is None:
    return {}
  return {"code_worth_per_sketch": result["nats_per_sketch"],
          "code_worth_per_point": result["nats_per_point"]}
