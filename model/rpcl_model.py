"""RPCL-pix2seqH: networks + latent hierarchy + the train / eval steps.

method.md §2 (networks), §3 (hierarchy, closed-form and non-trainable) and §4
(losses, schedules, optimiser).  ``train_step`` and ``eval_step`` are plain
methods; callers compile them with :meth:`RPCLPix2SeqH.compiled_train_step` /
:meth:`compiled_eval_step` (``tf.function``, fixed input signature,
``jit_compile=hps.jit_compile``).

A training step never lets a non-finite value reach the state: the new
hierarchy state, the loss and every gradient are checked inside the compiled
step; when any is NaN/inf the optimiser update is skipped (``tf.cond``), the
hierarchy variables are put back to their values before the step, the step
counter does not advance, and the returned ``nonfinite`` flag is True.

Under tf.distribute (model/distribute.py) the same ``train_step``
runs on every replica with a ``replica`` helper: the losses are scaled by the
global batch size, each replica's code noise is its rows of the global
batch's draw, the hierarchy's batch sums, the losses, the gradients and the
finite flag are all-reduced, and every replica applies the identical update
to its own copies of the variables (no merge_call inside the ``tf.cond``).
"""
import keras
import tensorflow as tf

from model import losses, precision
from model.encoder import Encoder, reparameterize
from model.hierarchy import Hierarchy
from model.image_decoder import ImageDecoder
from model.stroke_decoder import StrokeDecoder

# Scalar entries of the dicts returned by train_step / eval_step.
LOSS_KEYS = ("total", "lil", "pen", "de", "gau", "ij")
TRAIN_KEYS = LOSS_KEYS + ("kl_weight", "lr", "is_rpcl", "use_stroke",
                          "num_live_k", "nonfinite")


def batch_signature(hps, batch_size=None, free_length=False):
  """TensorSpecs of a ``(strokes5, seq_len, images, labels)`` batch.

  ``batch_size=None`` leaves the batch dimension free (evaluation batches keep
  their remainder); training batches are drop_remainder, so static.
  ``free_length``: the time dimension too (length-bucketed training batches:
  one trace for every bucket).
  """
  if hps.max_seq_len < 1:
    raise ValueError("hps.max_seq_len must be computed from the data first")
  w = hps.png_width
  steps = None if free_length else hps.max_seq_len + 1
  return (tf.TensorSpec([batch_size, steps, 5], tf.float32),
          tf.TensorSpec([batch_size], tf.int32),
          tf.TensorSpec([batch_size, w, w, 1], tf.float32),
          tf.TensorSpec([batch_size], tf.int32))


def clip_gradients(grads, clip):
  """Each gradient element clipped to [-clip, clip] (method.md §4)."""
  return [tf.clip_by_value(g, -clip, clip) for g in grads]


def all_finite(tensors):
  """One boolean: every element of every tensor is finite."""
  flags = [tf.reduce_all(tf.math.is_finite(tf.cast(t, tf.float32)))
           for t in tensors]
  return tf.reduce_all(tf.stack(flags))


def pen_loss(params, target5, training, global_batch_size=None):
  """The pen cross-entropy part of lil_loss, batch mean (for reporting):
  all steps when training, non-padding steps otherwise (method.md §4)."""
  target5 = tf.cast(target5, tf.float32)
  log_pen = tf.nn.log_softmax(tf.cast(params.pen_logits, tf.float32), axis=-1)
  nll = -tf.reduce_sum(target5[..., 2:5] * log_pen, axis=-1)
  if not training:
    nll = nll * (1.0 - target5[..., 4])
  return losses.batch_mean(tf.reduce_sum(nll, axis=1), global_batch_size)


class RPCLPix2SeqH(keras.Model):
  """The encoder, the two decoders, the hierarchy, the optimiser and the step."""

  def __init__(self, hps, seed=None, **kwargs):
    super().__init__(name="rpcl_pix2seqh", **kwargs)
    self.hps = hps
    with precision.policy_scope(hps.precision):   # model/precision.py
      self.encoder = Encoder(hps)
      self.image_decoder = ImageDecoder(hps)
      self.stroke_decoder = StrokeDecoder(hps)
    self.hierarchy = Hierarchy(hps, seed=seed or 0)
    # Applied (finite) training steps; drives every schedule.  Saved.
    self.global_step = tf.Variable(0, dtype=tf.int64, trainable=False,
                                   name="global_step")
    # float16: keras' LossScaleOptimizer wraps the Adam (None otherwise); it
    # unscales inside apply(), so the Adam clips (clipvalue) after unscaling.
    float16 = hps.precision == "mixed_float16"
    self.optimizer = keras.optimizers.Adam(
        learning_rate=hps.learning_rate, beta_1=0.5, epsilon=1e-8,
        clipvalue=hps.grad_clip if float16 else None)
    self.loss_scale = precision.loss_scale_optimizer(hps.precision,
                                                     self.optimizer)
    self.noise_seed = keras.random.SeedGenerator(seed, name="noise_seed")

  # --- building -----------------------------------------------------------
  def build_all(self):
    """Creates every variable (networks, hierarchy, optimiser slots) eagerly."""
    hps = self.hps
    strokes, _, images, _ = [tf.zeros([2] + s.shape[1:], s.dtype)
                             for s in batch_signature(hps, 2)]
    m, _ = precision.encoder_outputs_f32(*self.encoder(images, training=False))
    self.hierarchy.posteriors(m)
    self.image_decoder(m)
    self.stroke_decoder(strokes[:, :-1], m, training=False)
    self.optimizer.build(self.trainable_variables)
    if self.loss_scale is not None:
      self.loss_scale.build(self.trainable_variables)
    self.built = True
    return self

  def call(self, images, training=False):
    """Keras entry point: the encoder mean (the code used for synthesis)."""
    m, _ = precision.encoder_outputs_f32(*self.encoder(images, training=training))
    return m

  def encode(self, images):
    """(m, s): encoder mean and variance of ``images`` (B, w, w, 1) in [-1, 1]."""
    return precision.encoder_outputs_f32(*self.encoder(images, training=False))

  # --- shared forward pass ------------------------------------------------
  def _decode_losses(self, strokes5, images, z, training, gbs=None):
    """Stroke (lil, pen) and image (de) losses given the code z (batch means,
    over ``gbs`` = the global batch size under tf.distribute)."""
    raw = self.stroke_decoder(strokes5[:, :-1], z, training=training)
    params = self.stroke_decoder.split_params(raw)
    target = strokes5[:, 1:]
    lil = losses.batch_mean(losses.mdn_loss(params, target, training=training),
                            gbs)
    pen = pen_loss(params, target, training, gbs)
    de = losses.image_l1_loss(images, self.image_decoder(z, training=training),
                              gbs)
    return lil, pen, de

  def _train_decode_losses(self, strokes5, images, z, use_stroke, gbs=None):
    """``_decode_losses`` of a training step, differentiated only through the
    decoder whose loss the step's total uses (``use_stroke``: the stroke
    decoder, else the image decoder).

    As the released TF1 graph: it fetched both losses every step (forward of
    both decoders) and its ``tf.cond`` total back-propagated through one.
    Here a ``tf.cond`` picks the branch whose other loss is a stop-gradient
    constant, so the unused decoder's backward is never run; its weights
    get zero gradients (Adam still steps them), the same values the
    ``tf.where`` of ``losses.total_loss`` gives them.  Under XLA
    (``hps.jit_compile``) both are differentiated: XLA cannot compile the
    gradient of a tf.cond whose branches hold loops (FakeParam)."""
    if self.hps.jit_compile:
      return self._decode_losses(strokes5, images, z, True, gbs)

    def decode(stroke_grads):
      raw = self.stroke_decoder(strokes5[:, :-1], z, training=True)
      params = self.stroke_decoder.split_params(raw)
      target = strokes5[:, 1:]
      lil = losses.batch_mean(losses.mdn_loss(params, target, training=True),
                              gbs)
      pen = pen_loss(params, target, True, gbs)
      de = losses.image_l1_loss(images, self.image_decoder(z, training=True),
                                gbs)
      if stroke_grads:
        return lil, pen, tf.stop_gradient(de)
      return tf.stop_gradient(lil), tf.stop_gradient(pen), de

    return tf.cond(use_stroke, lambda: decode(True), lambda: decode(False))

  def _latent_losses(self, m, s, outs, gbs=None):
    """Gaussian and hierarchy KL (method.md §4); GMM state as constants."""
    h = self.hierarchy
    gau = losses.gaussian_kl_loss(m, s, h.mu, h.sigma2, outs.post_k, gbs)
    ij = losses.ij_loss(outs.post_k, outs.p_l_given_yk, h.pi_l, h.q_kl, gbs)
    return gau, ij

  def _code_noise(self, shape, replica):
    """eps ~ N(0, I) of the reparameterisation; under tf.distribute this
    replica's rows of the global batch's draw (same seed state everywhere),
    so N replicas use exactly the noise one device would."""
    if replica is None:
      return keras.random.normal(shape, seed=self.noise_seed)
    full = keras.random.normal([replica.global_batch_size, shape[1]],
                               seed=self.noise_seed)
    return tf.slice(full, [replica.index * shape[0], 0], shape)

  def _apply_update(self, ok, grads, lr, replicated):
    """Adam on the clipped gradients if ``ok``, else nothing (``tf.cond``).

    ``replicated`` (tf.distribute): the gradients are already all-reduced, so
    each replica runs Adam's ``update_step`` on its own copies (identical
    everywhere); the learning-rate and iteration variables, whose replica
    updates need a merge_call, are assigned outside the cond."""
    variables = self.trainable_variables
    grads = clip_gradients(grads, self.hps.grad_clip)
    opt = self.optimizer

    def apply():
      if replicated:
        for g, v in zip(grads, variables):
          opt.update_step(g, v, lr)
      else:
        opt.learning_rate.assign(lr)
        opt.apply_gradients(zip(grads, variables))
      return tf.constant(True)

    if replicated:   # unchanged on a skipped step, as on one device
      opt.learning_rate.assign(tf.where(ok, lr, opt.learning_rate))
    tf.cond(ok, apply, lambda: tf.constant(False))
    if replicated:
      opt.iterations.assign_add(tf.cast(ok, opt.iterations.dtype))

  def _apply_scaled_update(self, ok, total, grads, lr, replicated):
    """The update under float16 loss scaling, from the scaled ``grads``.

    A gradient overflow while the loss and the new hierarchy state are finite
    is a normal skipped step (the scale halves), not a divergence: the
    returned ``nonfinite`` flag is set only when those are not finite (then
    the scale is left alone too).  One device: LossScaleOptimizer.apply skips
    or unscales and steps.  Replicated: see precision.update_scale_replicated.
    """
    lso = self.loss_scale
    sane = all_finite([total] + list(self.hierarchy.state()))
    if replicated:
      inv = 1.0 / tf.convert_to_tensor(lso.dynamic_scale)
      self._apply_update(ok, [g * inv for g in grads], lr, replicated=True)
      precision.update_scale_replicated(lso, all_finite(grads), sane)
    else:
      def apply():
        lso.learning_rate.assign(lr)
        lso.apply(grads, self.trainable_variables)
        return tf.constant(True)
      tf.cond(sane, apply, lambda: tf.constant(False))
    return tf.logical_not(sane)

  # --- training -----------------------------------------------------------
  def losses_and_gradients(self, batch, step, batch_sum=None, replica=None):
    """The forward pass of a training step at ``step`` and the gradients of
    its total (times the loss scale under float16) for every trainable
    variable (zeros where unused).  Assigns the hierarchy's tentative update
    (``train_step`` puts it back on a non-finite step).
    Returns ((total, lil, pen, de, gau, ij), grads)."""
    strokes5, _, images, _ = batch
    gbs = None if replica is None else replica.global_batch_size
    with tf.GradientTape() as tape:
      m, s = precision.encoder_outputs_f32(*self.encoder(images, training=True))
      z = reparameterize(m, s, self._code_noise(tf.shape(m), replica))
      outs = self.hierarchy.update(z, m, s, step, batch_sum=batch_sum)
      gau, ij = self._latent_losses(m, s, outs, gbs)
      lil, pen, de = self._train_decode_losses(
          strokes5, images, z, losses.use_stroke_loss(step, self.hps), gbs)
      total = losses.total_loss(gau, ij, lil, de, step, self.hps)
      if self.loss_scale is not None:   # float16: gradients times the scale
        total_for_grads = self.loss_scale.scale_loss(total)
      else:
        total_for_grads = total
    variables = self.trainable_variables
    grads = tape.gradient(total_for_grads, variables)
    grads = [tf.zeros_like(v) if g is None else g
             for g, v in zip(grads, variables)]
    return (total, lil, pen, de, gau, ij), grads

  def train_step(self, batch, batch_sum=None, replica=None):
    """One optimisation step on a ``(strokes5, seq_len, images, labels)`` batch.

    ``replica``: under tf.distribute, model/distribute.py's ReplicaInfo
    (``global_batch_size``, ``index``, ``all_reduce``); the returned scalars
    are then the global-batch values, identical on every replica.
    Returns a dict of scalars (TRAIN_KEYS) and ``pi_l`` (L,).
    """
    hps = self.hps
    batch_sum = batch_sum if replica is None else replica.all_reduce
    step = self.global_step.read_value()
    old_state = self.hierarchy.state()
    (total, lil, pen, de, gau, ij), grads = self.losses_and_gradients(
        batch, step, batch_sum, replica)
    scalars = dict(total=total, lil=lil, pen=pen, de=de, gau=gau, ij=ij)
    # Every logged loss counts, also the one this step does not descend on:
    # a non-finite value there means a bad batch, and the step is skipped.
    losses_ = list(scalars.values())
    if replica is None:
      ok = all_finite(losses_ + grads + list(self.hierarchy.state()))
    else:
      # Global losses and gradients (a non-finite local gradient makes the
      # sum non-finite); the hierarchy state is the same on every replica.
      bad, scalars, grads = replica.all_reduce(
          (tf.cast(tf.logical_not(all_finite(losses_)), tf.float32), scalars,
           grads))
      ok = tf.logical_and(bad == 0,
                          all_finite(grads + list(self.hierarchy.state())))
    lr = losses.learning_rate(step, hps)
    if self.loss_scale is None:
      nonfinite = tf.logical_not(ok)
      self._apply_update(ok, grads, lr, replicated=replica is not None)
    else:
      nonfinite = self._apply_scaled_update(ok, total, grads, lr,
                                            replicated=replica is not None)
    # Commit the closed-form hierarchy update only when everything is finite.
    self.hierarchy.assign_state([tf.where(ok, new, old) for new, old in
                                 zip(self.hierarchy.state(), old_state)])
    self.global_step.assign_add(tf.cast(ok, tf.int64))
    return dict(
        **scalars, kl_weight=losses.kl_weight(step), lr=lr,
        is_rpcl=tf.cast(self.hierarchy.is_rpcl_step(step), tf.float32),
        use_stroke=tf.cast(losses.use_stroke_loss(step, hps), tf.float32),
        num_live_k=tf.cast(self.hierarchy.num_live(), tf.float32),
        nonfinite=nonfinite, pi_l=tf.cast(self.hierarchy.pi_l,
                                                   tf.float32))

  # --- evaluation ---------------------------------------------------------
  def eval_step(self, batch):
    """Losses with z = m, no dropout, masked pen loss; changes no state.

    Returns batch means of LOSS_KEYS (``total`` with the stroke loss and the
    current kl_weight) and ``count`` (the batch size, for weighted averages).
    """
    strokes5, _, images, _ = batch
    m, s = precision.encoder_outputs_f32(*self.encoder(images, training=False))
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
    """``train_step`` as a tf.function with the training signature (time
    dimension free with length buckets: still one trace)."""
    if getattr(self, "_train_fn", None) is None:
      hps = self.hps
      self._train_fn = tf.function(
          self.train_step, jit_compile=hps.jit_compile,
          reduce_retracing=True, autograph=False,
          input_signature=[batch_signature(hps, hps.batch_size,
                                           free_length=hps.length_buckets > 0)])
    return self._train_fn

  def compiled_eval_step(self):
    """``eval_step`` as a tf.function (free batch dimension)."""
    if getattr(self, "_eval_fn", None) is None:
      self._eval_fn = tf.function(
          self.eval_step, reduce_retracing=True, autograph=False,
          input_signature=[batch_signature(self.hps)])
    return self._eval_fn
