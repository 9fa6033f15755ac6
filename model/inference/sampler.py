"""Batched sketch synthesis and latent-code helpers (method.md §6).

All sketches of a call are decoded together in one compiled ``tf.while_loop``
(inside a ``tf.function``, optionally XLA-compiled): start from S0 with the
decoder's initial state from z, feed back the previous output row, apply the
temperature rules of §6, stop each sketch at its first end-of-sketch token.

Randomness is a counter-based hash of (seed, sketch id, step, draw), so a
sketch is the same for a given seed whether it is decoded in a batch of a
thousand or on its own (pass its ``sketch_ids``), and no RNG state is carried.

Output convention: ``strokes5[b, :lengths[b]]`` are the generated points;
every row from ``lengths[b]`` on is the padding (0, 0, 0, 0, 1).  The row that
sampled p3 is not a point (as sketch-rnn's ``to_normal_strokes``).
"""
import weakref

import numpy as np
import tensorflow as tf

from utils.errors import UserError
from utils.metrics import live_mask

S0 = (0.0, 0.0, 1.0, 0.0, 0.0)
PAD = (0.0, 0.0, 0.0, 0.0, 1.0)
_DRAWS = 4  # uniforms per sketch per step: mixture, pen, two for Box-Muller


# ---------------------------------------------------------------------------
# Counter-based random numbers (deterministic per (seed, sketch, step)).

def _fmix32(h):
  """MurmurHash3's 32-bit finaliser (a bijective avalanche mix) on uint32."""
  h = tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, 16))
  h = h * tf.constant(0x85EBCA6B, tf.uint32)
  h = tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, 13))
  h = h * tf.constant(0xC2B2AE35, tf.uint32)
  return tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, 16))


def counter_uniform(seed, sketch_ids, t, num):
  """Uniforms in (0, 1), shape (B, num), a pure function of (seed, id, t, j).

  seed: uint32 scalar; sketch_ids (B,); t: the step (scalar); num: a Python int."""
  seed = tf.cast(seed, tf.uint32)
  ids = tf.cast(sketch_ids, tf.uint32)
  t = tf.cast(t, tf.uint32)
  h = _fmix32(tf.bitwise.bitwise_xor(seed, tf.constant(0x9E3779B9, tf.uint32)))
  h = _fmix32(tf.bitwise.bitwise_xor(h, ids))
  h = _fmix32(tf.bitwise.bitwise_xor(h, t * tf.constant(0x27D4EB2F, tf.uint32)))
  j = tf.constant((np.arange(1, num + 1, dtype=np.uint64) * 0x165667B1)
                  .astype(np.uint32))
  bits = _fmix32(tf.bitwise.bitwise_xor(h[:, None], j[None, :]))
  top24 = tf.cast(tf.bitwise.right_shift(bits, 8), tf.float32)
  return (top24 + 0.5) * (1.0 / (1 << 24))


def _seed_u32(seed):
  return np.uint32(int(seed) & 0xFFFFFFFF)


# ---------------------------------------------------------------------------
# Temperature and one decoding step (method.md §6).

def tempered_probs(log_p, temperature):
  """method.md (50): softmax(log p / tau), the re-weighting of mixture and
  pen probabilities; log_p (B, n) -> (B, n)."""
  return tf.nn.softmax(log_p / temperature, axis=-1)


def sample_categorical(log_p, temperature, u):
  """method.md (50): an inverse-CDF draw from softmax(log p / tau) with one
  uniform per row; log_p (B, n), u (B,) -> index (B,) int32."""
  p = tempered_probs(log_p, temperature)
  cdf = tf.cumsum(p, axis=-1)
  below = tf.cast(cdf < u[:, None] * cdf[:, -1:], tf.int32)
  return tf.minimum(tf.reduce_sum(below, axis=-1), tf.shape(log_p)[-1] - 1)


def sample_bivariate(mu_x, mu_y, sigma_x, sigma_y, rho, temperature, u1, u2):
  """method.md (51): one draw of the chosen 2-D Gaussian with both standard
  deviations multiplied by tau (Box-Muller from the uniforms u1, u2).

  mu_x, mu_y, sigma_x, sigma_y, rho, u1, u2 (B,) -> (dx (B,), dy (B,))."""
  radius = tf.sqrt(-2.0 * tf.math.log(u1))
  n1 = radius * tf.cos(2.0 * np.pi * u2)
  n2 = radius * tf.sin(2.0 * np.pi * u2)
  sx = sigma_x * temperature
  sy = sigma_y * temperature
  dx = mu_x + sx * n1
  dy = mu_y + sy * (rho * n1 + tf.sqrt(tf.maximum(1.0 - rho * rho, 0.0)) * n2)
  return dx, dy


def _log_pen(params):
  log_pen = getattr(params, "log_pen", None)
  if log_pen is None:
    log_pen = tf.nn.log_softmax(params.pen_logits, axis=-1)
  return log_pen


def next_row(params, temperature, u, greedy):
  """The stroke-5 row drawn from the mixture ``params`` (method.md (50)-(51);
  ``greedy``: the most likely component and pen state, the component's mean).

  params: MixtureParams of one step, mixture fields (B, M), pen (B, 3);
  u (B, 4) uniforms -> row (B, 5) float32."""
  f32 = lambda v: tf.cast(v, tf.float32)
  log_pi, log_pen = f32(params.log_pi), f32(_log_pen(params))
  if greedy:
    comp = tf.argmax(log_pi, axis=-1, output_type=tf.int32)
    pen = tf.argmax(log_pen, axis=-1, output_type=tf.int32)
  else:
    comp = sample_categorical(log_pi, temperature, u[:, 0])
    pen = sample_categorical(log_pen, temperature, u[:, 1])
  pick = lambda v: tf.gather(f32(v), comp[:, None], batch_dims=1)[:, 0]
  mu_x, mu_y = pick(params.mu_x), pick(params.mu_y)
  if greedy:
    dx, dy = mu_x, mu_y
  else:
    dx, dy = sample_bivariate(mu_x, mu_y, pick(params.sigma_x),
                              pick(params.sigma_y), pick(params.rho),
                              temperature, u[:, 2], u[:, 3])
  return tf.concat([tf.stack([dx, dy], axis=-1), tf.one_hot(pen, 3)], axis=-1)


# ---------------------------------------------------------------------------
# The batched loop.

def decode_loop(decoder, z, sketch_ids, seed, temperature, max_len, greedy):
  """The batched sampler of method.md (50)-(51) as one graph: a tf.while_loop
  over steps, every sketch advancing together until all end.  sample.py's
  compiled sampler and the SavedModel export (model/inference/export.py)
  both run it, so they draw the same strokes for the same codes and seed.

  z (B, D); sketch_ids (B,) int (each sketch's random stream); ``seed``,
  ``temperature`` scalars; ``max_len`` steps at most; ``greedy``: as in
  :func:`next_row` (the likeliest component's mean, the likeliest pen state).
  Returns (stroke-5 rows (B, max_len, 5), lengths (B,))."""
  batch = tf.shape(z)[0]
  pad = tf.constant(PAD, tf.float32)
  x = tf.tile(tf.constant(S0, tf.float32)[None], [batch, 1])
  states = decoder.initial_state(z)
  done = tf.zeros([batch], tf.bool)
  lengths = tf.fill([batch], tf.constant(max_len, tf.int32))
  out = tf.tile(pad[None, None], [max_len, batch, 1])

  def cond(t, x, states, done, lengths, out):
    return tf.logical_and(t < max_len, tf.logical_not(tf.reduce_all(done)))

  def body(t, x, states, done, lengths, out):
    raw, new_states = decoder.step(x, z, states, training=False)
    u = counter_uniform(seed, sketch_ids, t, _DRAWS)
    row = next_row(decoder.split_params(raw), temperature, u, greedy)
    ended = row[:, 4] > 0.5
    lengths = tf.where(ended & ~done, t, lengths)
    done = done | ended
    row = tf.where(done[:, None], pad[None], row)
    out = tf.tensor_scatter_nd_update(out, [[t]], row[None])
    new_states = tf.nest.map_structure(
        lambda new, old: tf.ensure_shape(new, old.shape), new_states, states)
    return t + 1, row, new_states, done, lengths, out

  _, _, _, _, lengths, out = tf.while_loop(
      cond, body, (tf.constant(0), x, states, done, lengths, out),
      maximum_iterations=max_len)
  return tf.transpose(out, [1, 0, 2]), lengths


_COMPILED = weakref.WeakKeyDictionary()


def _compiled(decoder, greedy, max_len, jit_compile, z_size):
  """One tf.function per (decoder, greedy, max_len, jit, D); any batch size."""
  per_decoder = _COMPILED.setdefault(decoder, {})
  key = (bool(greedy), int(max_len), bool(jit_compile), int(z_size))
  if key not in per_decoder:
    ref = weakref.ref(decoder)  # the cache must not keep the decoder alive

    def fn(z, sketch_ids, seed, temperature):
      return decode_loop(ref(), z, sketch_ids, seed, temperature,
                          key[1], key[0])
    signature = [tf.TensorSpec([None, key[3]], tf.float32),
                 tf.TensorSpec([None], tf.uint32), tf.TensorSpec([], tf.uint32),
                 tf.TensorSpec([], tf.float32)]
    per_decoder[key] = tf.function(fn, input_signature=signature,
                                   jit_compile=key[2])
  return per_decoder[key]


def sample_strokes(decoder, z, max_len, temperature=0.24, greedy=False, seed=0,
                   sketch_ids=None, batch_size=None, jit_compile=False):
  """Decodes every code of ``z`` (B, D) at once (method.md (50)-(51), §6).

  ``sketch_ids`` (B,) key the noise of each sketch (default 0..B-1): decoding
  sketch i alone with ``sketch_ids=[i]`` gives the same sketch as in a batch.
  ``batch_size`` splits very large B into chunks (same result).
  Returns NumPy ``strokes5`` float32 (B, max_len, 5) and ``lengths`` int32 (B,)."""
  z = np.asarray(z, np.float32)
  if z.ndim != 2:
    raise ValueError(f"z must be (B, D), got shape {z.shape}")
  if int(max_len) < 1:
    raise ValueError(f"max_len must be >= 1, got {max_len}")
  if not greedy and not float(temperature) > 0:
    raise ValueError(f"temperature must be > 0, got {temperature}")
  n = z.shape[0]
  ids = np.arange(n) if sketch_ids is None else np.asarray(sketch_ids)
  if ids.shape != (n,):
    raise ValueError(f"sketch_ids must have shape ({n},), got {ids.shape}")
  ids = (ids.astype(np.int64) & 0xFFFFFFFF).astype(np.uint32)
  if n == 0:
    return np.zeros((0, max_len, 5), np.float32), np.zeros((0,), np.int32)
  fn = _compiled(decoder, greedy, max_len, jit_compile, z.shape[1])
  step = n if not batch_size else int(batch_size)
  strokes, lengths = [], []
  for lo in range(0, n, step):
    s, l = fn(tf.constant(z[lo:lo + step]), tf.constant(ids[lo:lo + step]),
              tf.constant(_seed_u32(seed)),
              tf.constant(float(temperature) if not greedy else 1.0, tf.float32))
    strokes.append(s.numpy())
    lengths.append(l.numpy())
  return np.concatenate(strokes), np.concatenate(lengths).astype(np.int32)


def to_stroke3(strokes5, lengths, scale_factor=1.0):
  """List of (n, 3) float32 stroke-3 sketches with dx, dy times ``scale_factor``.

  The pen of the last point is set to 1 (lifted), as in the data files.
  """
  out = []
  for rows, n in zip(np.asarray(strokes5), np.asarray(lengths)):
    rows = rows[:int(n)]
    seq = np.stack([rows[:, 0] * scale_factor, rows[:, 1] * scale_factor,
                    rows[:, 3]], axis=1).astype(np.float32)
    if len(seq):
      seq[-1, 2] = 1.0
    out.append(seq)
  return out


# ---------------------------------------------------------------------------
# Latent codes: controllable synthesis (method.md §3, §6).

def _np(v):
  return np.asarray(v.numpy() if hasattr(v, "numpy") else v, np.float64)


def live_components(hierarchy, threshold=None):
  """Indices k whose prior pi_k = sum_l q(k|l) pi_l is alive (method.md (37)).

  Uses ``utils.metrics.live_mask`` (default threshold 0.1 / K, shared with
  visualisation and evaluation; RPCL drives losers to the 1e-10 floor).
  Returns a list of ints."""
  return [int(k) for k in np.flatnonzero(live_mask(_np(hierarchy.pi_k()), threshold))]


def live_units(hierarchy, threshold=None):
  """Indices l whose prior pi_l is alive (method.md (37), default threshold
  0.1 / L); a list of ints."""
  return [int(l) for l in np.flatnonzero(live_mask(_np(hierarchy.pi_l), threshold))]


def check_index(index, live, count, flag, what):
  """UserError unless ``index`` is in range and live; the message lists the live ones."""
  listing = ", ".join(map(str, live)) or "none"
  if not 0 <= index < count:
    raise UserError(f"{flag}={index} is out of range: the model has {count} "
                    f"{what} (0..{count - 1}); live ones: {listing}")
  if index not in live:
    raise UserError(f"{flag}={index} is a dead {what[:-1]} (prior ~ 0, pruned by "
                    f"RPCL): choose a live one: {listing}")


def _gaussian_codes(hierarchy, ks, rng):
  """z = mu_k + sqrt(sigma2_k) * eps for each k of ``ks``."""
  mu, sigma2 = _np(hierarchy.mu), _np(hierarchy.sigma2)
  eps = rng.standard_normal((len(ks), mu.shape[1]))
  return (mu[ks] + np.sqrt(sigma2[ks]) * eps).astype(np.float32)


def codes_from_level_k(hierarchy, k, n, seed=0):
  """method.md (47): ``n`` codes drawn from the level-k Gaussian
  N(mu_k, diag sigma2_k) -> z (n, D) float32."""
  rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 1, int(k)])
  return _gaussian_codes(hierarchy, np.full(n, int(k)), rng)


def codes_from_level_l(hierarchy, l, n, seed=0):
  """method.md (47) from unit l: ``n`` codes, k ~ q(k|l), then
  z ~ N(mu_k, sigma2_k).

  Returns (z (n, D) float32, ks (n,) int32)."""
  rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 2, int(l)])
  q = _np(hierarchy.q_kl)[:, int(l)]
  ks = rng.choice(len(q), size=n, p=q / q.sum()).astype(np.int32)
  return _gaussian_codes(hierarchy, ks, rng), ks


def analogy(z_a, z_b, z_c):
  """The latent calculator of method.md (48): z_c + (z_b - z_a); each (D,)
  (or broadcastable) -> float32 of their shape."""
  return (np.asarray(z_c, np.float32) + (np.asarray(z_b, np.float32)
                                         - np.asarray(z_a, np.float32)))


def interpolate(z_a, z_b, steps):
  """method.md (49): ``steps`` codes evenly spaced on the line from z_a to z_b
  (both included); z_a, z_b (D,) -> (steps, D) float32."""
  w = np.linspace(0.0, 1.0, int(steps), dtype=np.float32)[:, None]
  return (1.0 - w) * np.asarray(z_a, np.float32) + w * np.asarray(z_b, np.float32)


def normal_codes(n, dim, seed=0):
  """Unconditional codes z ~ N(0, I) (what the reference draws) -> (n, dim)
  float32."""
  rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0])
  return rng.standard_normal((n, dim)).astype(np.float32)
