"""Evaluation metrics of the papers (method.md §8), pure NumPy / scikit-learn.

- clustering of codes against ground-truth labels: :func:`purity`,
  :func:`nmi`, :func:`ari` (:func:`clustering_scores` gives all three);
- retrieval (Ret@k): :func:`retrieval_ranks`, :func:`retrieval_at_k`;
- live components of the hierarchy: :func:`live_mask`.
"""
import numpy as np
from sklearn import metrics as sk_metrics
from sklearn.metrics.cluster import contingency_matrix

DEFAULT_KS = (1, 10, 50)


def _as_labels(labels, name):
  labels = np.asarray(labels)
  if labels.ndim != 1:
    raise ValueError(f"{name} must be a 1-D label vector, got shape {labels.shape}")
  return labels


def _check_pair(pred, true):
  pred = _as_labels(pred, "pred")
  true = _as_labels(true, "true")
  if pred.shape != true.shape:
    raise ValueError(f"pred and true differ in length: {pred.shape} vs {true.shape}")
  if pred.size == 0:
    raise ValueError("cannot score an empty labelling")
  return pred, true


def purity(pred, true):
  """Purity, method.md (54): sum over clusters of the largest true class, / N."""
  pred, true = _check_pair(pred, true)
  table = contingency_matrix(true, pred)   # (classes, clusters) counts
  return float(table.max(axis=0).sum() / table.sum())


def nmi(pred, true):
  """Normalised mutual information (method.md (54); arithmetic mean
  normalisation, sklearn)."""
  pred, true = _check_pair(pred, true)
  return float(sk_metrics.normalized_mutual_info_score(true, pred))


def ari(pred, true):
  """Adjusted Rand index (method.md (54); sklearn)."""
  pred, true = _check_pair(pred, true)
  return float(sk_metrics.adjusted_rand_score(true, pred))


def clustering_scores(pred, true):
  """{"purity", "nmi", "ari", "clusters"} of a labelling against the truth."""
  return {"purity": purity(pred, true), "nmi": nmi(pred, true),
          "ari": ari(pred, true), "clusters": int(np.unique(pred).size)}


def squared_distances(query, gallery):
  """(Q, G) squared Euclidean distances, float64 (method.md §8 ranking)."""
  q = np.asarray(query, np.float64)
  g = np.asarray(gallery, np.float64)
  d = (np.sum(q * q, 1)[:, None] + np.sum(g * g, 1)[None, :] - 2.0 * q @ g.T)
  return np.maximum(d, 0.0)


def retrieval_ranks(query, gallery, true_index, chunk=1024):
  """0-based rank of each query's own gallery item under squared distance,
  rank_n of method.md (53).

  The rank counts the gallery items strictly closer than the true one, so
  ties are resolved in the query's favour (an exact match has rank 0).
  Computed in chunks of queries to bound memory for full test splits."""
  query = np.asarray(query)
  gallery = np.asarray(gallery)
  true_index = np.asarray(true_index, np.int64)
  if query.ndim != 2 or gallery.ndim != 2 or query.shape[1] != gallery.shape[1]:
    raise ValueError(f"query {query.shape} and gallery {gallery.shape} must be "
                     "(Q, D) and (G, D)")
  if true_index.shape != (query.shape[0],):
    raise ValueError(f"true_index must have shape ({query.shape[0]},), got "
                     f"{true_index.shape}")
  if true_index.size and (true_index.min() < 0
                          or true_index.max() >= gallery.shape[0]):
    raise ValueError(f"true_index must lie in [0, {gallery.shape[0]})")
  ranks = np.empty(query.shape[0], np.int64)
  for start in range(0, query.shape[0], chunk):
    stop = start + chunk
    d = squared_distances(query[start:stop], gallery)
    own = d[np.arange(d.shape[0]), true_index[start:stop]]
    ranks[start:stop] = np.sum(d < own[:, None], axis=1)
  return ranks


def retrieval_at_k(query, gallery, true_index, ks=DEFAULT_KS):
  """Ret@k, method.md (53): {k: fraction of queries whose own item is in the
  top k}."""
  ranks = retrieval_ranks(query, gallery, true_index)
  return {int(k): float(np.mean(ranks < k)) for k in ks}


def accuracy(pred, true):
  """Rec, method.md (52): the fraction of predictions equal to the labels."""
  pred, true = _check_pair(pred, true)
  return float(np.mean(pred == true))


def live_mask(weights, threshold=None):
  """Which mixture weights are alive, method.md (37) (dead ones decay toward 0).

  The default threshold is a tenth of the uniform share, 0.1 / len(weights):
  RPCL drives a loser's weight geometrically to the 1e-10 floor, far below it."""
  weights = np.asarray(weights, np.float64)
  if threshold is None:
    threshold = 0.1 / max(1, weights.size)
  return weights > threshold
