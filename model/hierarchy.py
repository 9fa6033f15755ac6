"""The self-organising two-level latent hierarchy (method.md §3).

Level-k: K diagonal Gaussians N(mu_k, diag sigma2_k).  Level-l: L units with
prior pi_l, each a mixture of level-k components with weights q(k|l) (columns
sum to 1).  The level-k prior is derived: pi_k = sum_l q(k|l) pi_l.  The
parameters are not trained by gradients; every training step updates them in
closed form (EM, or RPCL: rival penalised competitive learning).

Everything below is a pure function of tensors, in float64, free of Python
branches on tensor values (the EM/RPCL choice is a boolean tensor), so it runs
inside ``tf.function`` and with ``jit_compile``.

Distribution: every sum over the batch dimension goes through
``batch_sum``, a callable mapping a nest of per-replica partial sums to the
global sums (identity on one device; ``replica_context.all_reduce(SUM, .)``
under tf.distribute).  The batch count used for means is reduced the same way,
the merge statistic's winner/rival is chosen on the reduced C, and the
sigma2 statistic is a second reduction taken around the already global new
mu_k, so the result equals the single-device update on the global batch.
Only the per-sample winners of steps 2 and 5 are local.

Choices where the specification is silent (documented once here):
- anchors: with K = L * num_sub, unit l owns components [l*num_sub,
  (l+1)*num_sub); the merge anchor a_l is the first of the block, l*num_sub.
  ``q_init=block`` gives all of the block the initial q(k|l) bonus,
  ``q_init=anchor`` only a_l (the release's 1 + K I, generalised to K > L: the
  merge statistic then picks each unit's other components).  The anchor is
  excluded from the winner/rival selection of step 4 (its C is 0 by definition).
- weighted means divide by sum_b w_bk + 1e-10 * sign (as the reference release,
  which adds 1e-10); the sign keeps the RPCL case, where a component that is
  only a rival has a tiny negative sum, from dividing by ~0.  A component with
  no weight in the batch thus moves its statistic to 0, as in the release.
- with one component (or one non-anchor candidate) there is no rival.
- p(l|y,k) uses p(k|y,l) of step 3 (computed under the q(k|l) before this
  step's update, the only place the specification defines it); the division
  by p(k|y) is constant in l and cancels in the normalisation over l.
- zero probabilities (flat ablation's fixed identity q, a pi'_k clipped to 0)
  are -inf in log space; every log-sum-exp has at least one finite term.
"""
import collections

import keras
import tensorflow as tf

F64 = tf.float64
SIGMA2_MIN, SIGMA2_MAX = 1e-10, 1e10
Q_MIN = PI_L_MIN = 1e-10
DENOM_EPS = 1e-10

HierarchyState = collections.namedtuple("HierarchyState", "mu sigma2 pi_l q_kl")
HierarchyOutputs = collections.namedtuple(
    "HierarchyOutputs", "post_k post_l p_l_given_yk label_k label_l")
HierarchyConfig = collections.namedtuple(
    "HierarchyConfig",
    "eta gamma em_steps rpcl_every rpcl learn_q anchors")


def identity_sum(nest):
  """The single-device ``batch_sum``: the local sums are the global sums."""
  return nest


def config_from_hps(hps):
  """HierarchyConfig (Python constants) from the hyper-parameters.

  ``hierarchy=flat``: L = K, q(k|l) the fixed identity (never updated);
  ``single``: K = L = 1; ``rpcl=False``: EM on every step."""
  num_k, num_l = hps.num_components, hps.num_units
  block = num_k // num_l
  return HierarchyConfig(
      eta=float(hps.eta), gamma=float(hps.gamma), em_steps=int(hps.em_steps),
      rpcl_every=int(hps.rpcl_every), rpcl=bool(hps.rpcl),
      learn_q=hps.hierarchy == "two_level",
      anchors=tuple(l * block for l in range(num_l)))


def initial_state(num_k, num_l, dim, seed, flat=False, q_init="block"):
  """method.md (21): the initial state, deterministic given ``seed``: a float64
  HierarchyState, mu and sigma2 (K, D), pi_l (L,), q_kl (K, L).

  mu_k ~ U(-1, 1); sigma2_k = 1; pi_l = 1/L; q(k|l) proportional to
  1 + K [k gets unit l's bonus] per column: ``q_init="block"``, the bonus
  goes to all num_sub = K/L components of l's block; ``"anchor"``, to its
  anchor l*num_sub only (with K = L both are the release's 1 + K I).  The
  flat ablation uses the identity."""
  mu = tf.random.stateless_uniform([num_k, dim], seed=[int(seed), 0x5eed],
                                   minval=-1.0, maxval=1.0, dtype=F64)
  sigma2 = tf.ones([num_k, dim], F64)
  pi_l = tf.fill([num_l], tf.constant(1.0 / num_l, F64))
  block = num_k // num_l
  owner = tf.range(num_k) // block
  own = tf.cast(tf.equal(owner[:, None], tf.range(num_l)[None, :]), F64)
  if q_init == "anchor":
    bonus = tf.transpose(tf.one_hot(tf.range(num_l) * block, num_k, dtype=F64))
  elif q_init == "block":
    bonus = own
  else:
    raise ValueError(f"unknown q_init {q_init!r}")
  q = own if flat else 1.0 + num_k * bonus
  return HierarchyState(mu, sigma2, pi_l, q / tf.reduce_sum(q, 0, keepdims=True))


def _log(x):
  """Natural log; 0 maps to -inf (handled by the log-sum-exps)."""
  return tf.math.log(x)


def _normalise_log(logits, axis):
  """exp(logits - logsumexp(logits)) along ``axis``, with its log."""
  log_p = logits - tf.reduce_logsumexp(logits, axis=axis, keepdims=True)
  return tf.exp(log_p), log_p


def _winner_rival(scores, axis, exclude=None):
  """One-hot masks of the largest and second largest entry along ``axis``.

  ``exclude`` (0/1, same shape) removes candidates.  No rival exists when
  fewer than two candidates remain (static shapes)."""
  neg_inf = tf.constant(-float("inf"), scores.dtype)
  n = scores.shape[axis]
  cand = scores if exclude is None else tf.where(exclude > 0, neg_inf, scores)
  n_cand = n - (0 if exclude is None else 1)
  win = tf.one_hot(tf.argmax(cand, axis=axis), n, axis=axis, dtype=scores.dtype)
  rest = tf.where(win > 0, neg_inf, cand)
  rival = tf.one_hot(tf.argmax(rest, axis=axis), n, axis=axis, dtype=scores.dtype)
  return win, rival * float(n_cand >= 2)


def _safe_denominator(total):
  """total + 1e-10 * sign(total) (sign(0) = +1): never ~0 (see module doc)."""
  eps = tf.constant(DENOM_EPS, total.dtype)
  return total + tf.where(total < 0, -eps, eps)


def pi_k_from(q_kl, pi_l):
  """method.md (20): pi_k (K,) = sum_l q(k|l) pi_l of q_kl (K, L), pi_l (L,)."""
  return tf.linalg.matvec(q_kl, pi_l)


def is_rpcl_step(step, cfg):
  """method.md (22), a boolean scalar: steps 0..em_steps are EM, afterwards
  every step % rpcl_every == 0 is RPCL; never RPCL when cfg.rpcl is False."""
  step = tf.cast(step, tf.int64)
  rpcl = tf.logical_and(step > cfg.em_steps,
                        tf.equal(step % cfg.rpcl_every, 0))
  return tf.logical_and(rpcl, tf.constant(cfg.rpcl))


def log_gaussian(y, mu, sigma2):
  """log p(y|k) of method.md (19): log N(y_b; mu_k, diag sigma2_k), in log space.

  y (B, D), mu and sigma2 (K, D) -> (B, K).  Computed on the (B, K, D)
  differences (no expansion of the square), so far away codes and tiny
  variances lose no precision."""
  diff = y[:, None, :] - mu[None, :, :]
  quad = tf.reduce_sum(tf.square(diff) / sigma2[None], axis=-1)
  log_det = tf.reduce_sum(tf.math.log(sigma2), axis=-1)
  dim = tf.cast(tf.shape(y)[-1], y.dtype)
  return -0.5 * (quad + log_det[None, :] + dim * tf.math.log(
      tf.constant(2.0 * 3.141592653589793, y.dtype)))


def level_k_estep(y, mu, sigma2, log_pi_k):
  """Level-k E-step, method.md (23) (step 1) and (28) (step 3):
  r_bk = pi_k p(y_b|k) / sum_k' pi_k' p(y_b|k'), normalised by log-sum-exp.

  y (B, D), mu and sigma2 (K, D), log_pi_k (K,) -> (r (B, K), log p(y|k) (B, K))."""
  log_p_y_k = log_gaussian(y, mu, sigma2)
  r, _ = _normalise_log(log_pi_k[None, :] + log_p_y_k, axis=1)
  return r, log_p_y_k


def rpcl_weights(r, is_rpcl, gamma):
  """RPCL weights, method.md (24) (level k) and (34) (level l): w = r on
  EM steps; on RPCL steps w = r * ([winner] - gamma [rival]) with the per-row
  largest / second largest r.  r (B, K) or (B, L) -> w of r's shape."""
  win, rival = _winner_rival(r, axis=1)
  return tf.where(is_rpcl, r * (win - gamma * rival), r)


def level_k_mstep(w, m, s, mu, sigma2, pi_k, eta, batch_sum=identity_sum):
  """Level-k M-step, method.md (25)-(27), with weights w.

  mu_k <- (1-eta) mu_k + eta sum_b w m_b / sum_b w;
  sigma2_k <- clip((1-eta) sigma2_k + eta sum_b w ((m_b - mu_k)^2 + s_b) / sum_b w)
  with the new mu_k; transient pi'_k = (1-eta) pi_k + eta mean_b w, clipped to
  [0, 1] and normalised.
  w (B, K); m, s (B, D); mu, sigma2 (K, D); pi_k (K,); eta: float ->
  (mu (K, D), sigma2 (K, D), pi'_k (K,))."""
  count = tf.cast(tf.shape(w)[0], F64)
  count, w_sum, wm_sum = batch_sum([count, tf.reduce_sum(w, 0),
                                    tf.linalg.matmul(w, m, transpose_a=True)])
  denom = _safe_denominator(w_sum)[:, None]
  new_mu = (1.0 - eta) * mu + eta * wm_sum / denom
  dev = tf.square(m[:, None, :] - new_mu[None]) + s[:, None, :]
  dev_sum = batch_sum(tf.einsum("bk,bkd->kd", w, dev))
  new_sigma2 = tf.clip_by_value((1.0 - eta) * sigma2 + eta * dev_sum / denom,
                                SIGMA2_MIN, SIGMA2_MAX)
  pi_prime = tf.clip_by_value((1.0 - eta) * pi_k + eta * w_sum / count, 0.0, 1.0)
  return new_mu, new_sigma2, pi_prime / tf.reduce_sum(pi_prime)


def level_l_likelihood(log_p_y_k, q_kl):
  """log p(y|l) (B, L) of method.md (19), as (29) and (33) use it:
  log sum_k p(y|k) q(k|l) of log_p_y_k (B, K) and q_kl (K, L)."""
  return tf.reduce_logsumexp(log_p_y_k[:, :, None] + _log(q_kl)[None], axis=1)


def posterior_k_given_yl(log_p_y_k, q_kl, log_p_y_l):
  """method.md (29): log p(k|y,l) = log [p(y|k) q(k|l) / p(y|l)], (B, K, L),
  of log_p_y_k (B, K), q_kl (K, L) and log_p_y_l (B, L)."""
  return log_p_y_k[:, :, None] + _log(q_kl)[None] - log_p_y_l[:, None, :]


def merge_statistic(log_p_k_yl, anchors, batch_sum=identity_sum):
  """method.md (30): C[k,l] = sum_b p(k|y_b,l) p(a_l|y_b,l) for
  k != a_l, 0 at a_l.

  log_p_k_yl (B, K, L); anchors: L component indices a_l ->
  (C (K, L), globally reduced, and the anchor mask A (K, L), A[k,l] = [k = a_l])."""
  num_k = log_p_k_yl.shape[1]
  anchor_mask = tf.transpose(tf.one_hot(list(anchors), num_k, dtype=F64))
  p = tf.exp(log_p_k_yl)
  p_anchor = tf.reduce_sum(p * anchor_mask[None], axis=1, keepdims=True)
  c = batch_sum(tf.reduce_sum(p * p_anchor, axis=0)) * (1.0 - anchor_mask)
  return c, anchor_mask


def update_q(q_kl, c, anchor_mask, is_rpcl, eta, gamma):
  """method.md (31)-(32): q(k|l) <- clip((1-eta) q + eta h, 1e-10, 1),
  normalised per column, h = 0.5([k = w_l] + [k = a_l]) (EM), minus
  gamma [k = v_l] on RPCL steps; w_l, v_l = largest / second largest C[k,l]
  over k != a_l.  q_kl, c, anchor_mask (K, L) -> new q_kl (K, L)."""
  win, rival = _winner_rival(c, axis=0, exclude=anchor_mask)
  h = 0.5 * (win + anchor_mask)
  h = tf.where(is_rpcl, h - gamma * rival, h)
  q = tf.clip_by_value((1.0 - eta) * q_kl + eta * h, Q_MIN, 1.0)
  return q / tf.reduce_sum(q, axis=0, keepdims=True)


def level_l_estep(log_p_y_k, q_kl, pi_l):
  """method.md (33): p(l|y) = pi_l p(y|l) / sum_l' pi_l' p(y|l'), with its log,
  both (B, L), of log_p_y_k (B, K), q_kl (K, L) and pi_l (L,)."""
  return _normalise_log(_log(pi_l)[None] + level_l_likelihood(log_p_y_k, q_kl),
                        axis=1)


def update_pi_l(pi_l, g, eta, batch_sum=identity_sum):
  """method.md (34): pi_l <- clip((1-eta) pi_l + eta mean_b g_bl, 1e-10, 1),
  normalised; pi_l (L,), g (B, L) (rpcl_weights of p(l|y)) -> new pi_l (L,)."""
  count = tf.cast(tf.shape(g)[0], F64)
  count, g_sum = batch_sum([count, tf.reduce_sum(g, 0)])
  new = tf.clip_by_value((1.0 - eta) * pi_l + eta * g_sum / count, PI_L_MIN, 1.0)
  return new / tf.reduce_sum(new)


def posterior_l_given_yk(log_p_l_y, log_p_k_yl):
  """method.md (35): p(l|y,k) = p(l|y) p(k|y,l) / p(k|y), normalised over l,
  (B, K, L), of log_p_l_y (B, L) and log_p_k_yl (B, K, L)."""
  p, _ = _normalise_log(log_p_l_y[:, None, :] + log_p_k_yl, axis=2)
  return p


def _outputs(r, post_l, p_l_yk):
  """Step 6, method.md (36): posteriors and their argmax labels."""
  return HierarchyOutputs(r, post_l, p_l_yk,
                          tf.argmax(r, axis=1, output_type=tf.int32),
                          tf.argmax(post_l, axis=1, output_type=tf.int32))


def hierarchy_update(state, y, m, s, step, cfg, batch_sum=identity_sum):
  """One closed-form update, method.md (23)-(36) (§3 steps 1-6), in float64.

  Args: state, the current HierarchyState; ``y``: sampled codes
  (responsibilities); ``m``, ``s``: encoder means and variances (M-steps),
  all (B, D) float64; ``step``: the step counter (the EM / RPCL choice);
  ``cfg``: HierarchyConfig; ``batch_sum``: the reduction of every batch sum.
  Returns (new HierarchyState, HierarchyOutputs: post_k (B, K), post_l (B, L),
  p_l_given_yk (B, K, L), label_k and label_l (B,) int32).  The new
  parameters carry no gradient; the outputs are differentiable in ``y`` (the
  parameters entering them are constants)."""
  sg = tf.stop_gradient
  y_const, m, s = sg(y), sg(m), sg(s)
  is_rpcl = is_rpcl_step(step, cfg)
  # 1. level-k E-step under the current parameters.
  log_pi_k = _log(pi_k_from(state.q_kl, state.pi_l))
  r, _ = level_k_estep(y_const, state.mu, state.sigma2, log_pi_k)
  # 2. level-k M-step (EM or RPCL weights).
  w = rpcl_weights(r, is_rpcl, cfg.gamma)
  mu, sigma2, pi_prime = level_k_mstep(w, m, s, state.mu, state.sigma2,
                                       tf.exp(log_pi_k), cfg.eta, batch_sum)
  # 3. recompute p(y|k), r under the new mu, sigma2, pi'_k; p(k|y,l) under q.
  r, log_p_y_k = level_k_estep(y, mu, sigma2, _log(pi_prime))
  log_p_k_yl = posterior_k_given_yl(
      log_p_y_k, state.q_kl, level_l_likelihood(log_p_y_k, state.q_kl))
  # 4. merge statistic and q(k|l).
  if cfg.learn_q:
    c, anchor_mask = merge_statistic(log_p_k_yl, cfg.anchors, batch_sum)
    q_kl = update_q(state.q_kl, c, anchor_mask, is_rpcl, cfg.eta, cfg.gamma)
  else:
    q_kl = state.q_kl
  # 5. level-l E-step with the new q, pi_l update, p(l|y,k).
  post_l, log_p_l_y = level_l_estep(log_p_y_k, q_kl, state.pi_l)
  pi_l = update_pi_l(state.pi_l, sg(rpcl_weights(post_l, is_rpcl, cfg.gamma)),
                     cfg.eta, batch_sum)
  p_l_yk = posterior_l_given_yk(log_p_l_y, log_p_k_yl)
  # 6. outputs.
  return HierarchyState(mu, sigma2, pi_l, q_kl), _outputs(r, post_l, p_l_yk)


def hierarchy_posteriors(state, y):
  """The outputs of method.md (36) under the stored state, without updating
  it (for sampling and evaluation): (23), (29), (33) and (35) with the
  stored parameters and the derived pi_k of (20).

  state: HierarchyState; y (B, D) float64 -> HierarchyOutputs (as
  hierarchy_update's)."""
  log_pi_k = _log(pi_k_from(state.q_kl, state.pi_l))
  r, log_p_y_k = level_k_estep(y, state.mu, state.sigma2, log_pi_k)
  log_p_k_yl = posterior_k_given_yl(
      log_p_y_k, state.q_kl, level_l_likelihood(log_p_y_k, state.q_kl))
  post_l, log_p_l_y = level_l_estep(log_p_y_k, state.q_kl, state.pi_l)
  return _outputs(r, post_l, posterior_l_given_yk(log_p_l_y, log_p_k_yl))


def _as_f32(outputs):
  return outputs._replace(post_k=tf.cast(outputs.post_k, tf.float32),
                          post_l=tf.cast(outputs.post_l, tf.float32),
                          p_l_given_yk=tf.cast(outputs.p_l_given_yk, tf.float32))


class Hierarchy(keras.layers.Layer):
  """The hierarchy's state as non-trainable float64 variables (checkpointed
  with the model) and its per-step update (method.md §3).

  Variables: mu (K, D), sigma2 (K, D), pi_l (L,), q_kl (K, L).  Under
  tf.distribute every replica computes the same new state from the reduced
  statistics; the variables use ONLY_FIRST_REPLICA aggregation."""

  def __init__(self, hps, seed=0, **kwargs):
    kwargs.setdefault("dtype", "float64")
    super().__init__(**kwargs)
    self.cfg = config_from_hps(hps)
    self.num_k, self.num_l, self.dim = (hps.num_components, hps.num_units,
                                        hps.z_size)
    init = initial_state(self.num_k, self.num_l, self.dim, seed,
                         flat=hps.hierarchy == "flat", q_init=hps.q_init)
    self.mu, self.sigma2, self.pi_l, self.q_kl = [
        self.add_weight(name=name, shape=tuple(value.shape), dtype="float64",
                        trainable=False, aggregation="only_first_replica",
                        initializer=lambda shape, dtype, v=value: v)
        for name, value in zip(HierarchyState._fields, init)]
    self.built = True

  def state(self):
    """The current HierarchyState (float64 tensors)."""
    return HierarchyState(*[tf.convert_to_tensor(v) for v in
                            (self.mu, self.sigma2, self.pi_l, self.q_kl)])

  def assign_state(self, state):
    """Assigns a HierarchyState (anything convertible to float64 tensors)."""
    for var, value in zip((self.mu, self.sigma2, self.pi_l, self.q_kl), state):
      var.assign(tf.cast(value, F64))

  def update(self, y, m, s, step, batch_sum=None):
    """Runs the update of method.md (23)-(36) on a batch and assigns the new
    state.  y, m, s (B, D) (any float dtype); step: the step counter;
    batch_sum: as hierarchy_update's (None: one device).  Returns
    HierarchyOutputs: float32 post_k (B, K), post_l (B, L), p_l_given_yk
    (B, K, L), int32 labels (B,)."""
    cast = lambda t: tf.cast(t, F64)
    new_state, outputs = hierarchy_update(
        self.state(), cast(y), cast(m), cast(s), step, self.cfg,
        batch_sum or identity_sum)
    self.assign_state(new_state)
    return _as_f32(outputs)

  def posteriors(self, y):
    """HierarchyOutputs of codes ``y`` (B, D) under the current state, no
    update (method.md (36)); float32 probabilities, int32 labels."""
    return _as_f32(hierarchy_posteriors(self.state(), tf.cast(y, F64)))

  def pi_k(self):
    """Level-k prior of method.md (20), pi_k = q(k|l) @ pi_l, (K,) float64."""
    return pi_k_from(tf.convert_to_tensor(self.q_kl),
                     tf.convert_to_tensor(self.pi_l))

  def num_live(self, threshold=None):
    """Number of live level-k components, method.md (37): pi_k > threshold
    (int32 scalar tensor).  The default, 0.1 / K (a tenth of the uniform
    share), is the live threshold shared with sampling, visualisation and
    evaluation (utils.metrics.live_mask)."""
    if threshold is None:
      threshold = 0.1 / self.num_k
    return tf.reduce_sum(tf.cast(self.pi_k() > threshold, tf.int32))

  def is_rpcl_step(self, step):
    """Whether ``step`` is an RPCL step under this configuration."""
    return is_rpcl_step(step, self.cfg)
