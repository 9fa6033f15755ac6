"""RPCL-pix2seqH: networks + latent hierarchy + the train / eval steps.

REFERENCE §2 (networks), §3 (hierarchy, closed-form and non-trainable) and §4
(losses, schedules, optimiser).  ``train_step`` and ``eval_step`` are plain
methods; callers compile them with :meth:`RPCLPix2SeqH.compiled_train_step` /
:meth:`compiled_eval_step` (``tf.function``, fixed input signature,
``jit_compile=hps.jit_compile``).

A training step never lets a non-finite value reach the state: the new
hierarchy state, the loss and every gradient are checked inside the compiled
step; when any is NaN/inf the optimiser update is skipped (``tf.cond``), the
hierarchy variables are put back to their values before the step, the step
counter does not advance, and the returned ``nonfinite`` flag is True.

The step structure is kept strategy-friendly (issue 12): the hierarchy update
takes a ``batch_sum`` callable, and everything else is per-replica math
followed by one ``apply_gradients``.
"""
import keras
import tensorflow as tf

from model import losses
from model.encoder import Encoder, reparameterize
from model.hierarchy import Hierarchy
from model.image_decoder import ImageDecoder
from model.stroke_decoder import StrokeDecoder

# Scalar entries of the dicts returned by train_step / eval_step.
LOSS_KEYS = ("total", "lil", "pen", "de", "gau", "ij")
TRAIN_KEYS = LOSS_KEYS + ("kl_weight", "lr", "is_rpcl", "use_stroke",
                          "num_live_k", "nonfinite")


def batch_signature(hps, batch_size=None):
  """TensorSpecs of a ``(strokes5, seq_len, images, labels)`` batch.

  ``batch_size=None`` leaves the batch dimension free (evaluation batches keep
  their remainder); training batches are drop_remainder, so fully static.
  """
  if hps.max_seq_len < 1:
    raise ValueError("hps.max_seq_len must be computed from the data first")
  w = hps.png_width
  return (tf.TensorSpec([batch_size, hps.max_seq_len + 1, 5], tf.float32),
          tf.TensorSpec([batch_size], tf.int32),
          tf.TensorSpec([batch_size, w, w, 1], tf.float32),
          tf.TensorSpec([batch_size], tf.int32))


def clip_gradients(grads, clip):
  """Each gradient element clipped to [-clip, clip] (REFERENCE §4)."""
  return [tf.clip_by_value(g, -clip, clip) for g in grads]


def all_finite(tensors):
  """One boolean: every element of every tensor is finite."""
  flags = [tf.reduce_all(tf.math.is_finite(tf.cast(t, tf.float32)))
           for t in tensors]
  return tf.reduce_all(tf.stack(flags))


def pen_loss(params, target5, training):
  """The pen cross-entropy part of lil_loss, batch mean (for reporting):
  all steps when training, non-padding steps otherwise (REFERENCE §4)."""
  target5 = tf.cast(target5, tf.float32)
  log_pen = tf.nn.log_softmax(tf.cast(params.pen_logits, tf.float32), axis=-1)
  nll = -tf.reduce_sum(target5[..., 2:5] * log_pen, axis=-1)
  if not training:
    nll = nll * (1.0 - target5[..., 4])
  return tf.reduce_mean(tf.reduce_sum(nll, axis=1))


class RPCLPix2SeqH(keras.Model):
  """The encoder, the two decoders, the hierarchy, the optimiser and the step."""

  def __init__(self, hps, seed=None, **kwargs):
    super().__init__(name="rpcl_pix2seqh", **kwargs)
    self.hps = hps
    self.encoder = Encoder(hps)
    self.image_decoder = ImageDecoder(hps)
    self.stroke_decoder = StrokeDecoder(hps)
    self.hierarchy = Hierarchy(hps, seed=seed or 0)
    # Applied (finite) training steps; drives every schedule.  Saved.
    self.global_step = tf.Variable(0, dtype=tf.int64, trainable=False,
                                   name="global_step")
    self.optimizer = keras.optimizers.Adam(
        learning_rate=hps.learning_rate, beta_1=0.5, epsilon=1e-8)
    self.noise_seed = keras.random.SeedGenerator(seed, name="noise_seed")

  # --- building -----------------------------------------------------------
  def build_all(self):
    """Creates every variable (networks, hierarchy, optimiser slots) eagerly."""
    hps = self.hps
    strokes, _, images, _ = [tf.zeros([2] + s.shape[1:], s.dtype)
                             for s in batch_signature(hps, 2)]
    m, _ = self.encoder(images, training=False)
    self.hierarchy.posteriors(m)
    self.image_decoder(m)
    self.stroke_decoder(strokes[:, :-1], m, training=False)
    self.optimizer.build(self.trainable_variables)
    self.built = True
    return self

  def call(self, images, training=False):
    """Keras entry point: the encoder mean (the code used for synthesis)."""
    m, _ = self.encoder(images, training=training)
    return m

  def encode(self, images):
    """(m, s): encoder mean and variance of ``images`` (B, w, w, 1) in [-1, 1]."""
    return self.encoder(images, training=False)

  # --- shared forward pass ------------------------------------------------
  def _decode_losses(self, strokes5, images, z, training):
    """Stroke (lil, pen) and image (de) losses given the code z."""
    raw = self.stroke_decoder(strokes5[:, :-1], z, training=training)
    params = self.stroke_decoder.split_params(raw)
    target = strokes5[:, 1:]
    lil = tf.reduce_mean(losses.mdn_loss(params, target, training=training))
    pen = pen_loss(params, target, training)
    de = losses.image_l1_loss(images, self.image_decoder(z, training=training))
    return lil, pen, de

  def _latent_losses(self, m, s, outs):
    """Gaussian and hierarchy KL (REFERENCE §4); GMM state as constants."""
    h = self.hierarchy
    gau = losses.gaussian_kl_loss(m, s, h.mu, h.sigma2, outs.p_k)
    ij = losses.ij_loss(outs.p_k, outs.p_l_given_yk, h.pi_l, h.q_kl)
    return gau, ij

  # --- training -----------------------------------------------------------
  def train_step(self, batch, batch_sum=None):
    """One optimisation step on a ``(strokes5, seq_len, images, labels)`` batch.

    Returns a dict of scalars (TRAIN_KEYS) and ``pi_l`` (L,).
    """
    hps = self.hps
    strokes5, _, images, _ = batch
    step = self.global_step.read_value()
    old_state = self.hierarchy.state()
    with tf.GradientTape() as tape:
      m, s = self.encoder(images, training=True)
      eps = keras.random.normal(tf.shape(m), seed=self.noise_seed)
      z = reparameterize(m, s, eps)
      outs = self.hierarchy.update(z, m, s, step, batch_sum=batch_sum)
      gau, ij = self._latent_losses(m, s, outs)
      lil, pen, de = self._decode_losses(strokes5, images, z, training=True)
      total = losses.total_loss(gau, ij, lil, de, step, hps)
    variables = self.trainable_variables
    grads = tape.gradient(total, variables)
    grads = [tf.zeros_like(v) if g is None else g
             for g, v in zip(grads, variables)]
    ok = all_finite([total] + grads + list(self.hierarchy.state()))
    lr = losses.learning_rate(step, hps)

    def apply():
      self.optimizer.learning_rate.assign(lr)
      self.optimizer.apply_gradients(
          zip(clip_gradients(grads, hps.grad_clip), variables))
      return tf.constant(True)

    tf.cond(ok, apply, lambda: tf.constant(False))
    # Commit the closed-form hierarchy update only when everything is finite.
    self.hierarchy.assign_state([tf.where(ok, new, old) for new, old in
                                 zip(self.hierarchy.state(), old_state)])
    self.global_step.assign_add(tf.cast(ok, tf.int64))
    return dict(
        total=total, lil=lil, pen=pen, de=de, gau=gau, ij=ij,
        kl_weight=losses.kl_weight(step), lr=lr,
        is_rpcl=tf.cast(self.hierarchy.is_rpcl_step(step), tf.float32),
        use_stroke=tf.cast(losses.use_stroke_loss(step, hps), tf.float32),
        num_live_k=tf.cast(self.hierarchy.num_live(), tf.float32),
        nonfinite=tf.logical_not(ok), pi_l=tf.cast(self.hierarchy.pi_l,
                                                   tf.float32))

  # --- evaluation ---------------------------------------------------------
  def eval_step(self, batch):
    """Losses with z = m, no dropout, masked pen loss; changes no state.

    Returns batch means of LOSS_KEYS (``total`` with the stroke loss and the
    current kl_weight) and ``count`` (the batch size, for weighted averages).
    """
    strokes5, _, images, _ = batch
    m, s = self.encoder(images, training=False)
    outs = self.hierarchy.posteriors(m)
    gau, ij = self._latent_losses(m, s, outs)
    lil, pen, de = self._decode_losses(strokes5, images, m, training=False)
    # The total as on a stroke step (warm-up over) at the current kl_weight.
    hps = self.hps.replace(warmup_steps=0)
    total = losses.total_loss(gau, ij, lil, de, self.global_step, hps)
    return dict(total=total, lil=lil, pen=pen, de=de, gau=gau, ij=ij,
                count=tf.cast(tf.shape(m)[0], tf.float32))

  # --- compiled versions --------------------------------------------------
  def compiled_train_step(self):
    """``train_step`` as a tf.function with the static training signature."""
    if getattr(self, "_train_fn", None) is None:
      self._train_fn = tf.function(
          self.train_step, jit_compile=self.hps.jit_compile,
          reduce_retracing=True, autograph=False,
          input_signature=[batch_signature(self.hps, self.hps.batch_size)])
    return self._train_fn

  def compiled_eval_step(self):
    """``eval_step`` as a tf.function (free batch dimension)."""
    if getattr(self, "_eval_fn", None) is None:
      self._eval_fn = tf.function(
          self.eval_step, reduce_retracing=True, autograph=False,
          input_signature=[batch_signature(self.hps)])
    return self._eval_fn
