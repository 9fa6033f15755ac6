"""model/hierarchy.py against an independent NumPy implementation of method.md §3;
the layer, the ablations and numerical safety.  The batch_sum (all-reduce)
contract is in test_hierarchy_distributed.py, the toy pruning problem in
test_hierarchy_pruning.py."""
import numpy as np
import pytest
import tensorflow as tf
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from hparams import get_hparams
from model import hierarchy as H

B, D, K, L, SUB = 16, 8, 6, 3, 2
ETA, GAMMA = 0.05, 1e-4
ANCHORS = [0, 2, 4]          # first component of each unit's block
TOL = dict(rtol=1e-6, atol=1e-12)


# ---------------------------------------------------------------- NumPy §3 ---
def np_winner_rival(x):
  """Row-wise one-hot of the largest and the second largest entry."""
  order = np.argsort(-x, axis=1, kind="stable")
  win, riv = np.zeros_like(x), np.zeros_like(x)
  rows = np.arange(x.shape[0])
  win[rows, order[:, 0]] = 1.0
  riv[rows, order[:, 1]] = 1.0
  return win, riv


def np_log_gauss(y, mu, sigma2):
  return np.array([[multivariate_normal.logpdf(yb, mk, np.diag(sk))
                    for mk, sk in zip(mu, sigma2)] for yb in y])


def np_estep(y, mu, sigma2, pi_k):
  lg = np_log_gauss(y, mu, sigma2)
  a = np.log(pi_k)[None] + lg
  return np.exp(a - logsumexp(a, axis=1, keepdims=True)), lg


def np_weights(r, rpcl):
  if not rpcl:
    return r
  win, riv = np_winner_rival(r)
  return r * (win - GAMMA * riv)


def np_mstep(w, m, s, mu, sigma2, pi_k):
  new_mu, new_s2 = np.zeros_like(mu), np.zeros_like(sigma2)
  for k in range(mu.shape[0]):
    tot = w[:, k].sum()
    den = tot + (1e-10 if tot >= 0 else -1e-10)
    new_mu[k] = (1 - ETA) * mu[k] + ETA * (w[:, k, None] * m).sum(0) / den
    stat = (w[:, k, None] * ((m - new_mu[k]) ** 2 + s)).sum(0) / den
    new_s2[k] = np.clip((1 - ETA) * sigma2[k] + ETA * stat, 1e-10, 1e10)
  pi = np.clip((1 - ETA) * pi_k + ETA * w.mean(0), 0, 1)
  return new_mu, new_s2, pi / pi.sum()


def np_level_l(lg, q):
  """log p(y|l) and p(k|y,l) (B,K,L)."""
  p_y_k = np.exp(lg)                      # fine for the test's moderate data
  p_y_l = p_y_k @ q
  return np.log(p_y_l), p_y_k[:, :, None] * q[None] / p_y_l[:, None, :]


def np_merge(p_k_yl, anchors):
  c = np.zeros((p_k_yl.shape[1], len(anchors)))
  for l, a in enumerate(anchors):
    for k in range(p_k_yl.shape[1]):
      if k != a:
        c[k, l] = np.sum(p_k_yl[:, k, l] * p_k_yl[:, a, l])
  return c


def np_update_q(q, c, anchors, rpcl):
  h = np.zeros_like(q)
  for l, a in enumerate(anchors):
    cand = c[:, l].copy()
    cand[a] = -np.inf
    order = np.argsort(-cand, kind="stable")
    h[order[0], l] += 0.5
    h[a, l] += 0.5
    if rpcl:
      h[order[1], l] -= GAMMA
  new = np.clip((1 - ETA) * q + ETA * h, 1e-10, 1)
  return new / new.sum(0, keepdims=True)


def np_level_l_estep(lg, q, pi_l):
  a = np.log(pi_l)[None] + np.log(np.exp(lg) @ q)
  return np.exp(a - logsumexp(a, axis=1, keepdims=True))


def np_update_pi_l(pi_l, g):
  new = np.clip((1 - ETA) * pi_l + ETA * g.mean(0), 1e-10, 1)
  return new / new.sum()


def np_p_l_given_yk(p_l, p_k_yl, p_k):
  x = p_l[:, None, :] * p_k_yl / p_k[:, :, None]
  return x / x.sum(2, keepdims=True)


def np_update(state, y, m, s, rpcl, anchors=ANCHORS, learn_q=True):
  mu, sigma2, pi_l, q = state
  pi_k = q @ pi_l
  r, _ = np_estep(y, mu, sigma2, pi_k)                                 # 1
  mu, sigma2, pi_p = np_mstep(np_weights(r, rpcl), m, s, mu, sigma2, pi_k)  # 2
  r, lg = np_estep(y, mu, sigma2, pi_p)                                # 3
  _, p_k_yl = np_level_l(lg, q)
  if learn_q:                                                          # 4
    q = np_update_q(q, np_merge(p_k_yl, anchors), anchors, rpcl)
  p_l = np_level_l_estep(lg, q, pi_l)                                  # 5
  pi_l = np_update_pi_l(pi_l, np_weights(p_l, rpcl))
  p_l_yk = np_p_l_given_yk(p_l, p_k_yl, r)
  return (mu, sigma2, pi_l, q), (r, p_l, p_l_yk)


# ------------------------------------------------------------------ helpers ---
def random_problem(seed=0, b=B):
  rng = np.random.RandomState(seed)
  mu = rng.randn(K, D)
  sigma2 = rng.uniform(0.5, 2.0, (K, D))
  pi_l = rng.dirichlet(np.ones(L))
  q = rng.uniform(0.05, 1.0, (K, L))
  q /= q.sum(0, keepdims=True)
  m = rng.randn(b, D)
  s = rng.uniform(0.01, 0.5, (b, D))
  y = m + np.sqrt(s) * rng.randn(b, D)
  return (mu, sigma2, pi_l, q), y, m, s


def cfg(**over):
  base = dict(eta=ETA, gamma=GAMMA, em_steps=100, rpcl_every=3, rpcl=True,
              learn_q=True, anchors=tuple(ANCHORS))
  base.update(over)
  return H.HierarchyConfig(**base)


def tf64(*xs):
  return [tf.constant(x, tf.float64) for x in xs]


RPCL_CASES = [(False, 50), (True, 102)]     # (is RPCL, a step of that kind)


# -------------------------------------------------------------- functions ---
def test_log_gaussian_and_estep():
  (mu, sigma2, pi_l, q), y, _, _ = random_problem()
  pi_k = q @ pi_l
  np.testing.assert_allclose(H.log_gaussian(*tf64(y, mu, sigma2)),
                             np_log_gauss(y, mu, sigma2), **TOL)
  r, lg = H.level_k_estep(*tf64(y, mu, sigma2, np.log(pi_k)))
  r_np, lg_np = np_estep(y, mu, sigma2, pi_k)
  np.testing.assert_allclose(r, r_np, **TOL)
  np.testing.assert_allclose(lg, lg_np, **TOL)


@pytest.mark.parametrize("rpcl,_step", RPCL_CASES)
def test_rpcl_weights_and_mstep(rpcl, _step):
  (mu, sigma2, pi_l, q), y, m, s = random_problem(1)
  pi_k = q @ pi_l
  r, _ = np_estep(y, mu, sigma2, pi_k)
  w = H.rpcl_weights(tf.constant(r), tf.constant(rpcl), GAMMA)
  np.testing.assert_allclose(w, np_weights(r, rpcl), **TOL)
  assert (np.asarray(w) < 0).any() == rpcl      # rivals are penalised
  got = H.level_k_mstep(w, *tf64(m, s, mu, sigma2, pi_k), ETA)
  for a, b in zip(got, np_mstep(np_weights(r, rpcl), m, s, mu, sigma2, pi_k)):
    np.testing.assert_allclose(a, b, **TOL)


@pytest.mark.parametrize("rpcl,_step", RPCL_CASES)
def test_level_l_merge_and_q(rpcl, _step):
  (mu, sigma2, pi_l, q), y, _, _ = random_problem(2)
  lg = np_log_gauss(y, mu, sigma2)
  log_p_y_l = H.level_l_likelihood(*tf64(lg, q))
  log_pkyl = H.posterior_k_given_yl(*tf64(lg, q), log_p_y_l)
  np_lpyl, np_pkyl = np_level_l(lg, q)
  np.testing.assert_allclose(log_p_y_l, np_lpyl, **TOL)
  np.testing.assert_allclose(np.exp(log_pkyl), np_pkyl, **TOL)
  c, amask = H.merge_statistic(log_pkyl, ANCHORS)
  np.testing.assert_allclose(c, np_merge(np_pkyl, ANCHORS), **TOL)
  assert np.all(np.asarray(c)[ANCHORS, range(L)] == 0)
  new_q = H.update_q(tf.constant(q), c, amask, tf.constant(rpcl), ETA, GAMMA)
  np.testing.assert_allclose(new_q, np_update_q(q, np_merge(np_pkyl, ANCHORS),
                                                ANCHORS, rpcl), **TOL)
  np.testing.assert_allclose(np.sum(new_q, 0), 1.0, rtol=1e-12)


@pytest.mark.parametrize("rpcl,_step", RPCL_CASES)
def test_level_l_estep_pi_l_and_p_l_given_yk(rpcl, _step):
  (mu, sigma2, pi_l, q), y, _, _ = random_problem(3)
  r, lg = np_estep(y, mu, sigma2, q @ pi_l)
  p_l, log_p_l = H.level_l_estep(*tf64(lg, q, pi_l))
  np.testing.assert_allclose(p_l, np_level_l_estep(lg, q, pi_l), **TOL)
  g = H.rpcl_weights(p_l, tf.constant(rpcl), GAMMA)
  np.testing.assert_allclose(H.update_pi_l(tf.constant(pi_l), g, ETA),
                             np_update_pi_l(pi_l, np_weights(np.asarray(p_l), rpcl)),
                             **TOL)
  _, pkyl = np_level_l(lg, q)
  got = H.posterior_l_given_yk(log_p_l, tf.math.log(tf.constant(pkyl)))
  np.testing.assert_allclose(got, np_p_l_given_yk(np.asarray(p_l), pkyl, r), **TOL)


@pytest.mark.parametrize("rpcl,step", RPCL_CASES + [(False, 103), (False, 0)])
def test_full_update_matches_numpy(rpcl, step):
  state, y, m, s = random_problem(4)
  new, outs = H.hierarchy_update(H.HierarchyState(*tf64(*state)),
                                 *tf64(y, m, s), tf.constant(step), cfg())
  np_state, np_outs = np_update(state, y, m, s, rpcl)
  for a, b in zip(new, np_state):
    np.testing.assert_allclose(a, b, **TOL)
  for a, b in zip(outs[:3], np_outs):
    np.testing.assert_allclose(a, b, **TOL)
  np.testing.assert_array_equal(outs.label_k, np.argmax(np_outs[0], 1))
  np.testing.assert_array_equal(outs.label_l, np.argmax(np_outs[1], 1))


def test_schedule():
  c = cfg()
  got = [bool(H.is_rpcl_step(tf.constant(t), c)) for t in (0, 99, 100, 101, 102, 103, 105)]
  assert got == [False, False, False, False, True, False, True]
  assert not bool(H.is_rpcl_step(tf.constant(102), cfg(rpcl=False)))


# ------------------------------------------------------- layer, ablations ---
def hps_for(over=""):
  return get_hparams("paper", f"z_size={D},num_mixture={L},num_sub={SUB}" +
                     ("," + over if over else ""))


def test_layer_init_update_posteriors_checkpoint(tmp_path):
  hps = hps_for()
  h1, h2, h3 = H.Hierarchy(hps, seed=7), H.Hierarchy(hps, seed=7), H.Hierarchy(hps, seed=8)
  np.testing.assert_array_equal(h1.mu, h2.mu)
  assert not np.allclose(h1.mu, h3.mu)
  mu0 = np.asarray(h1.mu)
  assert mu0.dtype == np.float64 and mu0.min() >= -1 and mu0.max() <= 1
  np.testing.assert_array_equal(h1.sigma2, np.ones((K, D)))
  np.testing.assert_allclose(h1.pi_l, np.full(L, 1 / L))
  q0 = np.ones((K, L)) + K * np.kron(np.eye(L), np.ones((SUB, 1)))
  np.testing.assert_allclose(h1.q_kl, q0 / q0.sum(0), rtol=1e-12)
  assert all(not w.trainable for w in h1.weights) and len(h1.weights) == 4
  _, y, m, s = random_problem(6)
  state0 = h1.state()
  out = h1.update(tf.constant(y, tf.float32), m.astype(np.float32),
                  s.astype(np.float32), tf.constant(5))
  assert out.post_k.dtype == tf.float32 and out.label_k.dtype == tf.int32
  y32 = y.astype(np.float32).astype(np.float64)   # the layer saw float32 input
  ref_state, ref_out = np_update(tuple(np.asarray(x) for x in state0), y32,
                                 m.astype(np.float32), s.astype(np.float32), False)
  for a, b in zip(h1.state(), ref_state):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-12)
  np.testing.assert_allclose(out.post_k, ref_out[0], rtol=1e-5, atol=1e-7)
  # posteriors: no update; compiled update = eager update.
  before = [np.asarray(x) for x in h1.state()]
  post = h1.posteriors(y)
  assert post.p_l_given_yk.shape == (B, K, L)
  for a, b in zip(before, h1.state()):
    np.testing.assert_array_equal(a, b)
  h2.assign_state(before)
  f = tf.function(lambda a, b, c, t: h2.update(a, b, c, t), jit_compile=True)
  o_jit = f(y, m, s, tf.constant(102))
  o_eager = h1.update(y, m, s, tf.constant(102))
  for a, b in zip(h1.state(), h2.state()):
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-14)
  np.testing.assert_allclose(o_jit.p_l_given_yk, o_eager.p_l_given_yk, atol=1e-6)
  # checkpoint round trip.
  ckpt = tf.train.Checkpoint(h=h1)
  path = ckpt.save(str(tmp_path / "ck"))
  saved = [np.asarray(x) for x in h1.state()]
  h1.update(y, m, s, tf.constant(103))
  ckpt.restore(path)
  for a, b in zip(saved, h1.state()):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_allclose(h1.pi_k(), saved[3] @ saved[2], rtol=1e-12)
  assert int(h1.num_live(0.0)) == K


def test_ablations():
  _, y, m, s = random_problem(7)
  flat = H.Hierarchy(hps_for("hierarchy=flat"), seed=0)
  assert flat.q_kl.shape == (K, K)
  np.testing.assert_array_equal(flat.q_kl, np.eye(K))
  single = H.Hierarchy(hps_for("hierarchy=single"), seed=0)
  assert single.mu.shape == (1, D) and single.q_kl.shape == (1, 1)
  emonly = H.Hierarchy(hps_for("rpcl=False"), seed=0)
  assert not bool(emonly.is_rpcl_step(102)) and bool(flat.is_rpcl_step(102))
  for step in (5, 102):
    with tf.GradientTape() as tape:
      yt = tf.constant(y, tf.float32)
      tape.watch(yt)
      o = flat.update(yt, m, s, tf.constant(step))
      loss = tf.reduce_sum(o.post_k ** 2) + tf.reduce_sum(o.p_l_given_yk ** 2)
    assert np.all(np.isfinite(tape.gradient(loss, yt)))
    np.testing.assert_array_equal(flat.q_kl, np.eye(K))       # never updated
    np.testing.assert_allclose(flat.pi_k(), flat.pi_l, rtol=1e-12)
    np.testing.assert_allclose(o.p_l_given_yk, np.broadcast_to(np.eye(K), (B, K, K)))
    post = flat.posteriors(y)     # same prior pi_k = pi_l at both levels
    np.testing.assert_allclose(post.post_k, post.post_l, rtol=1e-5, atol=1e-7)
    o = single.update(y, m, s, tf.constant(step))
    np.testing.assert_allclose(o.post_k, 1.0)
    np.testing.assert_allclose(single.q_kl, [[1.0]])
    assert np.all(np.isfinite(single.mu)) and np.all(np.isfinite(single.sigma2))
  # EM-only follows the NumPy EM update on an RPCL-scheduled step.
  state0 = tuple(np.asarray(x) for x in emonly.state())
  emonly.update(y, m, s, tf.constant(102))
  ref, _ = np_update(state0, y.astype(np.float32), m.astype(np.float32),
                     s.astype(np.float32), False)
  np.testing.assert_allclose(emonly.mu, ref[0], rtol=1e-6)


# -------------------------------------------------------- numerical safety ---
@pytest.mark.parametrize("case", ["far", "clip_low", "clip_high", "identical"])
def test_numerical_safety(case):
  dim = 128
  hps = get_hparams("paper", f"z_size={dim},num_mixture=3,num_sub=2")
  h = H.Hierarchy(hps, seed=0)
  rng = np.random.RandomState(0)
  y = rng.randn(B, dim)
  s = np.full((B, dim), 1e-3)
  if case == "far":
    y = 1e4 * np.sign(rng.randn(B, dim))
  elif case == "identical":
    y = np.repeat(rng.randn(1, dim), B, axis=0)
  elif case.startswith("clip"):
    st = h.state()
    bound = 1e-10 if case == "clip_low" else 1e10
    h.assign_state(st._replace(sigma2=tf.fill([6, dim], tf.constant(bound, tf.float64))))
  for step in (0, 102, 103, 105):
    with tf.GradientTape() as tape:
      yt = tf.constant(y, tf.float32)
      tape.watch(yt)
      o = h.update(yt, y, s, tf.constant(step))
      loss = tf.reduce_sum(o.post_k * tf.range(6.0)) + tf.reduce_sum(o.p_l_given_yk ** 2)
    for t in list(o[:3]) + list(h.state()) + [tape.gradient(loss, yt)]:
      assert np.all(np.isfinite(t)), case
    np.testing.assert_allclose(np.sum(o.post_k, 1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.sum(o.p_l_given_yk, 2), 1.0, rtol=1e-5)
    assert np.all(np.asarray(h.sigma2) >= 1e-10) and np.all(np.asarray(h.sigma2) <= 1e10)
