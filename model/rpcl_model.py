"""RPCL-pix2seqH: networks + latent hierarchy + the train / eval steps.

method.md §2 (networks), §3 (hierarchy, closed-form and non-trainable) and §4
(losses, schedules, optimiser).  ``train_step`` and ``eval_step`` are plain
methods; callers compile them with :meth:`RPCLPix2SeqH.compiled_train_step` /
:meth:`compiled_eval_step` (``tf.function``, fixed input signature,
``jit_compile=hps.jit_compile``).

A training step is three phases, the same on one device and under
tf.distribute (model/training/distribute.py), where every replica runs it on its rows
of the global batch:

1. compute (:meth:`RPCLPix2SeqH.losses_and_gradients`): the losses, their
   gradients and the tentative new hierarchy state of the local batch;
2. reduce: the losses and gradients summed over the replicas by the step's
   reduction object (model/reduction.py: the identity on one device, the
   all-reduce of the replicas' global-batch-normalised sums otherwise; the
   hierarchy's batch sums go through it inside phase 1);
3. apply if finite (:meth:`RPCLPix2SeqH.apply_if_finite`): when the losses,
   the gradients and the new hierarchy state are all finite, Adam steps on
   the clipped gradients and the new state is kept; otherwise nothing
   changes (the hierarchy is put back, the step counter does not advance)
   and the returned ``nonfinite`` flag is True.  Every replica takes the same
   decision on the same global values and updates its own copies.
"""
import keras
import tensorflow as tf

from model import losses, precision
from model.networks.encoder import Encoder, reparameterize
from model.hierarchy import Hierarchy
from model.networks.image_decoder import ImageDecoder
from model.reduction import LOCAL
from model.networks.stroke_decoder import StrokeDecoder

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
  """method.md (46): each gradient element clipped to [-clip, clip].

  grads: a list of tensors; clip: a float -> the list, shapes unchanged."""
  return [tf.clip_by_value(g, -clip, clip) for g in grads]


def all_finite(tensors):
  """One boolean scalar: every element of every tensor of ``tensors`` is finite."""
  flags = [tf.reduce_all(tf.math.is_finite(tf.cast(t, tf.float32)))
           for t in tensors]
  return tf.reduce_all(tf.stack(flags))


def pen_loss(params, target5, training, global_batch_size=None):
  """The pen cross-entropy part of L_lil (method.md (41)), batch mean (for
  reporting): all steps when training, non-padding steps otherwise.

  params: MixtureParams with pen_logits (B, T, 3); target5 (B, T, 5) ->
  float32 scalar."""
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
    # Stepped by apply_if_finite (update_step on the clipped gradients).
    self.optimizer = keras.optimizers.Adam(
        learning_rate=hps.learning_rate, beta_1=0.5, epsilon=1e-8)
    # float16: keras' LossScaleOptimizer around the Adam holds the dynamic
    # loss scale (None otherwise); apply_if_finite unscales and updates it.
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
    """Keras entry point: the encoder mean m of method.md (7) (the code used
    for synthesis); images (B, w, w, 1) in [-1, 1] -> (B, D) float32."""
    m, _ = precision.encoder_outputs_f32(*self.encoder(images, training=training))
    return m

  def encode(self, images):
    """Encoder mean and variance, method.md (7): images (B, w, w, 1) in [-1, 1]
    -> (m (B, D), s (B, D)) float32, no dropout."""
    return precision.encoder_outputs_f32(*self.encoder(images, training=False))

  # --- shared forward pass ------------------------------------------------
  def _stroke_params(self, strokes5, z, training):
    """The mixture parameters of every target row of ``strokes5`` given the
    code z (teacher forcing: rows [0, N) in, rows [1, N + 1) predicted)."""
    raw = self.stroke_decoder(strokes5[:, :-1], z, training=training)
    return self.stroke_decoder.split_params(raw)

  def _decode_losses(self, strokes5, images, z, training, gbs=None):
    """Stroke (lil, pen) and image (de) losses given the code z (batch means,
    over ``gbs`` = the global batch size under tf.distribute)."""
    params = self._stroke_params(strokes5, z, training)
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
      lil, pen, de = self._decode_losses(strokes5, images, z, True, gbs)
      if stroke_grads:
        return lil, pen, tf.stop_gradient(de)
      return tf.stop_gradient(lil), tf.stop_gradient(pen), de

    return tf.cond(use_stroke, lambda: decode(True), lambda: decode(False))

  def _latent_losses(self, m, s, outs, gbs=None):
    """L_gau and L_ij, method.md (39)-(40); GMM state as constants."""
    h = self.hierarchy
    gau = losses.gaussian_kl_loss(m, s, h.mu, h.sigma2, outs.post_k, gbs)
    ij = losses.ij_loss(outs.post_k, outs.p_l_given_yk, h.pi_l, h.q_kl, gbs)
    return gau, ij

  # --- training -----------------------------------------------------------
  def losses_and_gradients(self, batch, step, reduction=LOCAL):
    """Phase 1: the forward pass of a training step at ``step`` on the local
    batch (method.md (7)-(8), the hierarchy update (23)-(36), the losses
    (38)-(44)) and the gradients of its total (times the loss scale under
    float16) for every trainable variable (zeros where unused).  Assigns the
    hierarchy's tentative update (``apply_if_finite`` keeps it or puts the
    old state back).

    Args: batch, ``(strokes5 (B, T + 1, 5), seq_len (B,), images (B, w, w, 1),
    labels (B,))`` (batch_signature; data/pipeline.py); step: the
    step counter (int64 scalar); reduction: model/reduction.py's LOCAL or a
    ReplicaReduction.
    Returns ({LOSS_KEYS: float32 scalar}, grads: a list in the order of
    trainable_variables, each of its variable's shape)."""
    strokes5, _, images, _ = batch
    gbs = reduction.global_batch_size
    with tf.GradientTape() as tape:
      m, s = precision.encoder_outputs_f32(*self.encoder(images, training=True))
      z = reparameterize(m, s, reduction.code_noise(tf.shape(m),
                                                    self.noise_seed))
      outs = self.hierarchy.update(z, m, s, step, batch_sum=reduction.sum)
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
    scalars = dict(total=total, lil=lil, pen=pen, de=de, gau=gau, ij=ij)
    return scalars, grads

  def apply_if_finite(self, scalars, grads, lr, old_state):
    """Phase 3: the update of the step from the global ``scalars`` (losses)
    and ``grads`` (scaled under float16) at learning rate ``lr`` (method.md
    (45)), given the hierarchy state before the step (the tentative new one is
    assigned).

    ``sane``: every logged loss (also the one this step does not descend
    on: a non-finite value there means a bad batch) and the new hierarchy
    state are finite.  Only when those and the gradients are finite does
    Adam step on the clipped (method.md (46)), unscaled gradients, is the new
    hierarchy state kept and does the step counter advance.  Returns
    ``nonfinite`` (a boolean scalar): not applied; under float16 loss scaling
    not ``sane``, since a gradient overflow alone is a normal skipped step
    (the scale halves) and not a divergence (the scale is left alone on one
    that is not ``sane``)."""
    new_state = self.hierarchy.state()
    sane = all_finite(list(scalars.values()) + list(new_state))
    grads_finite = all_finite(grads)
    ok = tf.logical_and(sane, grads_finite)
    lso = self.loss_scale
    if lso is not None:
      inv = 1.0 / tf.convert_to_tensor(lso.dynamic_scale)
      grads = [g * inv for g in grads]
    self._adam_step(ok, clip_gradients(grads, self.hps.grad_clip), lr)
    if lso is not None:
      precision.update_loss_scale(lso, grads_finite, sane)
    self.hierarchy.assign_state([tf.where(ok, new, old) for new, old in
                                 zip(new_state, old_state)])
    self.global_step.assign_add(tf.cast(ok, tf.int64))
    return tf.logical_not(sane if lso is not None else ok)

  def _adam_step(self, ok, grads, lr):
    """Adam's update of every trainable variable by ``grads`` at learning
    rate ``lr`` if ``ok`` (a ``tf.cond``), else nothing.

    Adam's ``update_step`` per variable rather than ``apply_gradients``: the
    gradients are already global, and under tf.distribute each replica
    updates its own copies (apply_gradients would all-reduce again, with a
    merge_call that cannot run inside the cond).  The learning-rate and
    iteration variables are assigned outside the cond, unchanged when not
    ``ok``."""
    opt = self.optimizer

    def apply():
      for g, v in zip(grads, self.trainable_variables):
        opt.update_step(g, v, lr)
      return tf.constant(True)

    opt.learning_rate.assign(tf.where(ok, lr, opt.learning_rate))
    tf.cond(ok, apply, lambda: tf.constant(False))
    opt.iterations.assign_add(tf.cast(ok, opt.iterations.dtype))

  def train_step(self, batch, reduction=LOCAL):
    """One optimisation step, method.md (38)-(46) with the hierarchy update
    (23)-(36): compute, reduce, apply.

    Args: batch, ``(strokes5 (B, T + 1, 5), seq_len (B,), images (B, w, w, 1),
    labels (B,))`` (batch_signature; data/pipeline.py);
    reduction: model/reduction.py's LOCAL on one device, a ReplicaReduction
    inside a tf.distribute replica (the returned scalars are then the
    global-batch values, identical on every replica).
    Returns a dict of float32 scalars (TRAIN_KEYS) and ``pi_l`` (L,)."""
    hps = self.hps
    step = self.global_step.read_value()
    old_state = self.hierarchy.state()
    # 1. compute on the local batch; 2. reduce over the replicas; 3. apply.
    scalars, grads = self.losses_and_gradients(batch, step, reduction)
    scalars, grads = reduction.sum((scalars, grads))
    lr = losses.learning_rate(step, hps)
    nonfinite = self.apply_if_finite(scalars, grads, lr, old_state)
    return dict(
        **scalars, kl_weight=losses.kl_weight(step), lr=lr,
        is_rpcl=tf.cast(self.hierarchy.is_rpcl_step(step), tf.float32),
        use_stroke=tf.cast(losses.use_stroke_loss(step, hps), tf.float32),
        num_live_k=tf.cast(self.hierarchy.num_live(), tf.float32),
        nonfinite=nonfinite, pi_l=tf.cast(self.hierarchy.pi_l, tf.float32))

  # --- evaluation ---------------------------------------------------------
  def eval_step(self, batch):
    """Losses with z = m, no dropout, masked pen loss (method.md (41) at
    evaluation); changes no state.

    Args: batch, ``(strokes5 (B, T + 1, 5), seq_len (B,), images (B, w, w, 1),
    labels (B,))`` (batch_signature; data/pipeline.py).
    Returns float32 scalars: batch means of LOSS_KEYS (``total`` with the
    stroke loss and the current kl_weight) and ``count`` (the batch size, for
    weighted averages)."""
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

  def stroke_nll(self, strokes5, z):
    """Each sketch's stroke loss given the codes z: lil_b(z) of the code's
    worth, method.md (55).

    The lil of :meth:`eval_step` before its batch mean (no dropout, pen
    loss on the sketch's own rows, method.md (41)): the summed negative
    log-likelihood of a sketch's points, offsets and pen states.  With
    z = m its mean is eval_step's lil; model/inference/code_worth.py passes
    other sketches' codes.  strokes5 (B, T + 1, 5), z (B, D) -> (B,) nats."""
    params = self._stroke_params(strokes5, z, training=False)
    return losses.mdn_loss(params, strokes5[:, 1:], training=False)

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

  def compiled_stroke_nll(self):
    """``stroke_nll`` as a tf.function (free batch dimension)."""
    if getattr(self, "_stroke_nll_fn", None) is None:
      hps = self.hps
      self._stroke_nll_fn = tf.function(
          self.stroke_nll, reduce_retracing=True, autograph=False,
          input_signature=[batch_signature(hps)[0],
                           tf.TensorSpec([None, hps.z_size], tf.float32)])
    return self._stroke_nll_fn

  def compiled_encode(self):
    """``encode`` as a tf.function (free batch dimension)."""
    if getattr(self, "_encode_fn", None) is None:
      self._encode_fn = tf.function(
          self.encode, reduce_retracing=True, autograph=False,
          input_signature=[batch_signature(self.hps)[2]])
    return self._encode_fn
