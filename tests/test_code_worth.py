"""model/inference/code_worth.py: the shuffle is a seeded derangement; the metric equals
an independent NumPy computation of the stroke NLL (from the decoder's raw
outputs) with own and other sketches' codes; a decoder cut off from its code
scores exactly 0; the validation writes valid/code_worth_* (not with an
injected validate_fn)."""
import dataclasses
import math
import os
import types

import numpy as np
import pytest
import tensorflow as tf

from data.dataset import load_dataset
from data.images import to_unit_range
from data.strokes import to_stroke5
from experiments.report import read_scalars
from model.inference import code_worth
from model.storage.checkpoint import build_model
from model.training import loop as training
from model.training.loop import evaluate_split
from model.training.run_config import RunConfig
from tests.conftest import tiny_hps


@pytest.fixture(scope="module")
def setup(tiny_data):
  """(hps, SketchData, an untrained tiny model)."""
  hps = tiny_hps()
  data = load_dataset(tiny_data, hps)
  hps = hps.replace(max_seq_len=data.max_seq_len, scale_factor=data.scale_factor)
  return hps, data, build_model(hps, seed=0)


def test_derangement_is_a_seeded_permutation_without_fixed_points():
  for n in (2, 3, 5, 16, 101):
    for seed in range(4):
      donor = code_worth.derangement(n, seed)
      assert sorted(donor.tolist()) == list(range(n))
      assert np.all(donor != np.arange(n)), (n, seed)
      np.testing.assert_array_equal(donor, code_worth.derangement(n, seed))
  assert code_worth.derangement(2).tolist() == [1, 0]
  assert not np.array_equal(code_worth.derangement(50, 0),
                            code_worth.derangement(50, 1))
  # one cycle through all sketches: every code travels
  donor, seen, i = code_worth.derangement(30, 3), set(), 0
  while i not in seen:
    seen.add(i)
    i = donor[i]
  assert len(seen) == 30
  for n in (0, 1):
    with pytest.raises(ValueError, match="at least 2"):
      code_worth.derangement(n)


def test_worth_from_nll_units():
  r = code_worth.worth_from_nll([10.0, 20.0], [13.0, 29.0], [4, 8])
  assert r["lil_own"] == 15.0 and r["lil_shuffled"] == 21.0
  assert r["nats_per_sketch"] == 6.0                  # (3 + 9) / 2 sketches
  assert r["nats_per_point"] == pytest.approx(1.0)    # (3 + 9) / 12 points
  assert r["num_sketches"] == 2 and r["num_points"] == 12


def _log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def numpy_sketch_nll(raw, stroke3):
  """-log p of one sketch's n points from the decoder's raw outputs (T, 3+6M):
  mixture density of each offset (+1e-6) and the pen state, rows 0..n-1."""
  raw = np.asarray(raw, np.float64)
  n, m = len(stroke3), (raw.shape[-1] - 3) // 6
  total = 0.0
  for t in range(n):
    dx, dy, lifted = (float(v) for v in stroke3[t])
    r = raw[t]
    pen = _log_softmax(r[:3])
    pi = np.exp(_log_softmax(r[3:3 + m]))
    mx, my, lsx, lsy, rho = (r[3 + k * m:3 + (k + 1) * m] for k in range(1, 6))
    sx, sy, rho = np.exp(lsx), np.exp(lsy), np.tanh(rho)
    zx, zy = (dx - mx) / sx, (dy - my) / sy
    one = np.maximum(1 - rho ** 2, 1e-6)
    dens = np.exp(-(zx ** 2 + zy ** 2 - 2 * rho * zx * zy) / (2 * one)) / (
        2 * math.pi * sx * sy * np.sqrt(one))
    total += -math.log(float(np.sum(pi * dens)) + 1e-6)
    total += -pen[1 if lifted else 0]
  return total


def test_matches_an_independent_numpy_computation(setup):
  hps, data, model = setup
  split = data.splits["test"]
  n = len(split)
  r = code_worth.code_worth(model, split, seed=5)
  # Independently: the whole split in one batch, the encoder means, the
  # documented shuffle (seeded order, each takes the next one's code).
  strokes5 = tf.constant(to_stroke5(split.strokes, hps.max_seq_len))
  m, _ = model.encode(to_unit_range(split.images)[..., None])
  m = m.numpy()
  order = np.random.default_rng(5).permutation(n)
  donor = np.empty(n, int)
  for i in range(n):
    donor[order[i]] = order[(i + 1) % n]
  nll = {}
  for name, z in (("own", m), ("shuffled", m[donor])):
    raw = model.stroke_decoder(strokes5[:, :-1], tf.constant(z), training=False)
    nll[name] = np.array([numpy_sketch_nll(raw[b], split.strokes[b])
                          for b in range(n)])
  lengths = np.array([len(s) for s in split.strokes])
  assert r["num_sketches"] == n and r["num_points"] == lengths.sum()
  assert r["lil_own"] == pytest.approx(nll["own"].mean(), rel=1e-5)
  assert r["lil_shuffled"] == pytest.approx(nll["shuffled"].mean(), rel=1e-5)
  diff = nll["shuffled"] - nll["own"]
  assert abs(diff.mean()) > 1e-3        # the codes matter to this decoder
  assert r["nats_per_sketch"] == pytest.approx(diff.mean(), rel=1e-3, abs=1e-3)
  assert r["nats_per_point"] == pytest.approx(diff.sum() / lengths.sum(),
                                              rel=1e-3, abs=1e-4)
  # lil_own is the validation criterion (eval_step's lil over the split).
  assert r["lil_own"] == pytest.approx(evaluate_split(model, split, hps)["lil"],
                                       rel=1e-5)


def test_a_decoder_blind_to_its_code_is_worth_exactly_zero(setup):
  hps, data, _ = setup
  model = build_model(hps, seed=1)
  split = data.splits["valid"]
  assert code_worth.code_worth(model, split)["nats_per_sketch"] != 0.0
  dec = model.stroke_decoder
  # z reaches the decoder through the initial state and the input rows 5:.
  dec.init_dense.kernel.assign(tf.zeros_like(dec.init_dense.kernel))
  w_in = dec.cell.w_in.numpy()
  w_in[5:] = 0.0
  dec.cell.w_in.assign(w_in)
  r = code_worth.code_worth(model, split)
  assert r["lil_own"] == r["lil_shuffled"]
  assert r["nats_per_sketch"] == 0.0 and r["nats_per_point"] == 0.0


def test_subset_and_small_splits(setup):
  hps, data, model = setup
  split = data.splits["test"]
  sub = split.subset(5, seed=2)
  assert len(sub) == 5 and sub is not split
  idx = [next(i for i, s in enumerate(split.strokes) if s is t)
         for t in sub.strokes]
  assert idx == sorted(idx)
  np.testing.assert_array_equal(sub.images, split.images[idx])
  assert split.subset(0) is split
  assert code_worth.num_batches(split, hps, 5) == 2
  one = split.subset(1)
  assert code_worth.code_worth(model, one) is None
  assert code_worth.validation_scalars(model, one) == {}
  values = code_worth.validation_scalars(model, split, max_sketches=7)
  full = code_worth.code_worth(model, split, max_sketches=7)
  assert values == {"code_worth_per_sketch": full["nats_per_sketch"],
                    "code_worth_per_point": full["nats_per_point"]}
  assert full["num_sketches"] == 7


class _FakeState:
  def __init__(self):
    self.best_loss, self.epoch = tf.Variable(1e9), tf.Variable(0)

  def save(self):
    return "ckpt-1"


def _loop(setup, monkeypatch, validate_fn, is_chief=True):
  """A _Loop around the tiny model with fake state / distribution whose
  code_worth calls are recorded."""
  hps, data, model = setup
  calls = []
  monkeypatch.setattr(code_worth, "validation_scalars",
                      lambda m, split: calls.append(len(split)) or
                      {"code_worth_per_sketch": 1.5})
  monkeypatch.setattr(training, "evaluate_split",
                      lambda *args: {"lil": 3.0})
  dist = types.SimpleNamespace(is_chief=is_chief, eval_fn=lambda m: None,
                               dataset=None)
  config = dataclasses.replace(RunConfig(), validate_fn=validate_fn,
                               verbose=False)
  writer = tf.summary.create_noop_writer()
  return training._Loop(model, _FakeState(), data, hps, dist, config,
                        writer), calls


def test_validation_adds_the_scalars_unless_validate_fn_is_injected(
    setup, monkeypatch):
  loop, calls = _loop(setup, monkeypatch, None)
  loop.validate()
  assert calls == [len(setup[1].splits["valid"])]
  loop, calls = _loop(setup, monkeypatch, lambda m, name: {"lil": 2.0})
  loop.validate()
  assert calls == []
  loop, calls = _loop(setup, monkeypatch, None, is_chief=False)
  loop.validate()
  assert calls == []


def test_the_tiny_run_logged_the_scalars(tiny_model):
  logged = read_scalars(os.path.join(tiny_model[1], "tb"), "valid/code_worth")
  assert set(logged) == {"valid/code_worth_per_sketch",
                         "valid/code_worth_per_point"}
  for values in logged.values():
    assert sorted(values) == [3, 6]
    assert all(np.isfinite(v) for v in values.values())
  assert not read_scalars(os.path.join(tiny_model[1], "tb"), "test/code_worth")
