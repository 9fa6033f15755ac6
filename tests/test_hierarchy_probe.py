"""experiments/hierarchy_probe.py: the truth it draws, that its compiled
chunks run Hierarchy.update with the train step's step counter, and the shape
and invariants of its results (not their values)."""
import numpy as np
import pytest
import tensorflow as tf

from experiments import hierarchy_probe as P
from model.hierarchy import Hierarchy
from utils.errors import UserError

DIM = 8


def test_truth_matches_the_synthetic_styles():
  truth = P.make_truth(DIM, seed=3)
  assert truth["means"].shape == (13, DIM)
  assert np.bincount(truth["style_cat"]).tolist() == [3, 3, 3, 2, 2]
  assert truth["names"][0] == "house/door" and truth["names"][-1] == "flower/tulip"
  again = P.make_truth(DIM, seed=3)
  np.testing.assert_array_equal(truth["means"], again["means"])


def test_draw_codes_shapes_labels_and_scale():
  truth = P.make_truth(DIM, seed=0, noise_std=0.0, enc_var=0.04)
  rng = np.random.default_rng(0)
  m, s, y, style, cat = P.draw_codes(rng, truth, 40, [0.5, 1.0, 1.0])
  assert m.shape == s.shape == y.shape == (3, 40, DIM)
  assert m.dtype == np.float32
  np.testing.assert_array_equal(cat, truth["style_cat"][style])
  np.testing.assert_allclose(s, 0.04)
  # Without mean noise m is exactly the scaled style mean.
  np.testing.assert_allclose(m[0], 0.5 * truth["means"][style[0]], rtol=1e-6)
  np.testing.assert_allclose(m[1], truth["means"][style[1]], rtol=1e-6)
  assert P.mean_scale(0, 100, 0.1) == pytest.approx(0.1)
  assert P.mean_scale(50, 100, 0.1) == pytest.approx(0.55)
  assert P.mean_scale(500, 100, 0.1) == P.mean_scale(7, 0, 0.1) == 1.0
  assert P.encoder_variance(0, 100, 0.5, 0.005) == pytest.approx(0.5)
  assert P.encoder_variance(50, 100, 0.5, 0.005) == pytest.approx(0.05)
  assert P.encoder_variance(10, 100, None, 0.005) == 0.005
  _, s2, _, _, _ = P.draw_codes(rng, truth, 4, [1.0, 1.0], [0.5, 0.25])
  np.testing.assert_allclose(s2[:, 0, 0], [0.5, 0.25])


def test_chunks_use_the_train_steps_counter():
  """Two compiled chunks (steps 0-5, 6-11) equal eager updates at steps 0..11
  across the EM -> RPCL switch of the schedule (em_steps=3, rpcl_every=2)."""
  hps = P.make_hps(2, 2, "anchor", True, f"z_size={DIM},batch_size=8,"
                   "em_steps=3,rpcl_every=2,gamma=0.05")
  truth = P.make_truth(DIM, seed=1)
  m, s, y, _, _ = P.draw_codes(np.random.default_rng(1), truth, 8, [1.0] * 12)
  chunked, eager = Hierarchy(hps, seed=2), Hierarchy(hps, seed=2)
  run = P._chunk_fn(chunked)
  for start in (0, 6):
    run(tf.constant(y[start:start + 6]), tf.constant(m[start:start + 6]),
        tf.constant(s[start:start + 6]), tf.constant(start, tf.int64))
  for i in range(12):
    eager.update(y[i], m[i], s[i], tf.constant(i, tf.int64))
  for a, b in zip(chunked.state(), eager.state()):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-9, atol=1e-12)


def test_run_probe_result_shapes_and_invariants():
  hps = P.make_hps(3, 2, "block", True, f"z_size={DIM},batch_size=16")
  truth = P.make_truth(DIM, seed=0)
  r = P.run_probe(hps, truth, num_steps=45, seed=0, grow_steps=30,
                  var0=0.3, pull=0.5, num_test=5, log_every=20)
  assert r["curve"]["step"] == [0, 20, 40, 45]
  assert r["last_switch_step"] in r["curve"]["step"]
  assert len(r["curve"]["live_k"]) == len(r["curve"]["live_l"]) == 4
  assert all(0 <= v <= 6 for v in r["curve"]["live_k"])
  q = np.array(r["q_kl"])
  assert q.shape == (6, 3)
  np.testing.assert_allclose(q.sum(axis=0), 1.0, atol=1e-3)   # 4-digit rounding
  assert 0 <= r["live_l"] <= 3 and 0 <= r["live_k"] <= 6
  for key in ("k_vs_style", "l_vs_category"):
    assert set(r[key]) == {"nmi", "purity"}
    assert 0.0 <= r[key]["nmi"] <= 1.0 and 0.0 < r[key]["purity"] <= 1.0
  assert len(r["units"]) == r["live_l"]
  for u in r["units"]:
    assert all(q[k, u["unit"]] > P.MEMBER_Q - 1e-4 for k in u["members"])
  assert isinstance(P.meets_targets(r), bool)


def test_members_and_targets():
  q = np.array([[0.5, 0.05], [0.45, 0.05], [0.05, 0.9]])
  assert P.members(q) == [(0, 1), (2,)]
  good = dict(k_vs_style=dict(nmi=0.95), live_l=7, live_k=13,
              l_vs_category=dict(nmi=0.85, purity=0.95))
  assert P.meets_targets(good)
  assert not P.meets_targets(dict(good, live_l=13))


def test_bad_cli_entries_are_user_errors():
  assert P.parse_shape("8x3") == (8, 3)
  for bad in ("8", "ax3", "0x2"):
    with pytest.raises(UserError, match="--shapes"):
      P.parse_shape(bad)
  with pytest.raises(UserError, match="--rpcl"):
    P.parse_bool("yes")


def test_summarise_groups_seeds():
  def run(seed, nmi):
    return dict(config=dict(shape="2x1", q_init="anchor", rpcl=True,
                            grow_steps=0, seed=seed, hparams="", seconds=1.0),
                result=dict(live_k=4, live_l=2, units_changed=1,
                            k_vs_style=dict(nmi=nmi),
                            l_vs_category=dict(nmi=0.9, purity=0.95)))
  (cfg, mean, met, runs), = P.summarise([run(0, 0.8), run(1, 1.0)])
  assert cfg["shape"] == "2x1" and "seed" not in cfg and runs == 2
  assert mean["k_style_nmi"] == pytest.approx(0.9) and mean["changed"] == 0.5
  assert met == 1
  assert P.summary_row(cfg, mean, met, runs).count("|") == 12
