"""utils/metrics: clustering scores against hand-computed values, Ret@k cases."""
import math

import numpy as np
import pytest

from utils import metrics

# true classes and a clustering of six items, worked out by hand below.
TRUE = np.array([0, 0, 0, 1, 1, 1])
PRED = np.array([5, 5, 7, 7, 9, 9])   # arbitrary cluster ids


def test_purity_by_hand():
  # clusters {5: t0,t0}, {7: t0,t1}, {9: t1,t1} -> majorities 2 + 1 + 2 of 6.
  assert metrics.purity(PRED, TRUE) == pytest.approx(5 / 6)
  assert metrics.purity(TRUE, TRUE) == 1.0
  # one cluster holding everything: purity = largest class share.
  assert metrics.purity(np.zeros(6), np.array([0, 0, 0, 0, 1, 2])) == \
      pytest.approx(4 / 6)


def test_ari_by_hand():
  # pair counts: same-cell pairs C(2,2)+C(2,2) = 2; cluster sizes 2,2,2 -> 3
  # pairs; class sizes 3,3 -> 6 pairs; all pairs C(6,2) = 15.
  index, rows, cols, total = 2.0, 3.0, 6.0, 15.0
  expected = rows * cols / total
  want = (index - expected) / (0.5 * (rows + cols) - expected)
  assert want == pytest.approx(0.8 / 3.3)
  assert metrics.ari(PRED, TRUE) == pytest.approx(want)
  assert metrics.ari(TRUE, TRUE) == pytest.approx(1.0)
  assert metrics.ari(PRED[::-1] * 0 + np.arange(6), TRUE) == pytest.approx(0.0)


def test_nmi_by_hand():
  # MI: cells (5,t0) and (9,t1) each p=1/3 with p_c=1/3, p_t=1/2 -> log 2;
  # cells (7,t0), (7,t1) p=1/6 with p_c=1/3, p_t=1/2 -> log 1 = 0.
  mi = 2 * (1 / 3) * math.log(2)
  h_true, h_pred = math.log(2), math.log(3)
  want = mi / (0.5 * (h_true + h_pred))
  assert metrics.nmi(PRED, TRUE) == pytest.approx(want)
  assert metrics.nmi(TRUE + 3, TRUE) == pytest.approx(1.0)


def test_clustering_scores_keys_and_errors():
  s = metrics.clustering_scores(PRED, TRUE)
  assert set(s) == {"purity", "nmi", "ari", "clusters"}
  assert s["clusters"] == 3
  with pytest.raises(ValueError):
    metrics.purity([0, 1], [0, 1, 1])
  with pytest.raises(ValueError):
    metrics.nmi([], [])


def test_retrieval_identical_query_and_gallery_is_perfect():
  rng = np.random.default_rng(0)
  gallery = rng.normal(size=(300, 16))
  r = metrics.retrieval_at_k(gallery, gallery, np.arange(300))
  assert r == {1: 1.0, 10: 1.0, 50: 1.0}


def test_retrieval_random_is_chance():
  rng = np.random.default_rng(1)
  n = 2000
  gallery = rng.normal(size=(n, 8))
  query = rng.normal(size=(n, 8))
  r = metrics.retrieval_at_k(query, gallery, rng.permutation(n))
  for k in (1, 10, 50):
    p = k / n
    assert abs(r[k] - p) < 5 * math.sqrt(p * (1 - p) / n) + 1e-9, (k, r[k])


def test_retrieval_ranks_match_brute_force_and_chunks():
  rng = np.random.default_rng(2)
  gallery = rng.integers(0, 3, size=(40, 2)).astype(float)   # many ties
  query = gallery[rng.permutation(40)[:25]] + rng.normal(0, 0.3, (25, 2))
  true = rng.integers(0, 40, 25)
  ranks = metrics.retrieval_ranks(query, gallery, true, chunk=7)
  for i in range(25):
    d = [((query[i] - g) ** 2).sum() for g in gallery]
    assert ranks[i] == sum(x < d[true[i]] - 1e-9 for x in d)
  # a query whose own item is the 3rd closest counts for k >= 3 only.
  g = np.array([[0.0], [1.0], [2.0], [3.0]])
  r = metrics.retrieval_at_k(np.array([[0.1]]), g, np.array([2]), ks=(1, 2, 3))
  assert r == {1: 0.0, 2: 0.0, 3: 1.0}


def test_retrieval_rejects_bad_shapes():
  with pytest.raises(ValueError):
    metrics.retrieval_ranks(np.zeros((3, 2)), np.zeros((4, 3)), [0, 1, 2])
  with pytest.raises(ValueError):
    metrics.retrieval_ranks(np.zeros((3, 2)), np.zeros((4, 2)), [0, 1, 4])


def test_live_mask_and_accuracy():
  w = np.array([0.5, 0.49, 1e-10, 0.01])
  assert metrics.live_mask(w).tolist() == [True, True, False, False]
  assert metrics.live_mask(w, threshold=1e-3).tolist() == [True, True, False, True]
  assert metrics.accuracy([1, 2, 3, 4], [1, 2, 0, 4]) == 0.75
