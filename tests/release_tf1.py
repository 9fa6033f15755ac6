"""Writes checkpoints the way the released TF1 code names its variables.

The variables are created with ``tf.compat.v1`` in graph mode through the
release's own nesting of variable scopes (model.py's ``RPCL-pix2seq``,
``encoder/layer_<b>/dcn<i>``, Cnn.py's ``conv<i>/filter``, ``<scope>/linear/fc_w``,
``tf.contrib.layers.instance_norm``'s default-named ``InstanceNorm``, rnn.py's
cell-class scopes under dynamic_rnn's ``rnn``), its GMM state, and a real
``tf.compat.v1.train.AdamOptimizer(beta1=0.5)`` for the slots and powers; a
``tf.compat.v1.train.Saver`` writes ``vector-N`` + ``checkpoint`` as train.py
does.  Only the names and shapes are the release's; the values are random.
"""
import json
import os

import numpy as np
import tensorflow as tf

v1 = tf.compat.v1
GATES_X, GATES_H = ("ix", "jx", "fx", "ox"), ("ih", "jh", "fh", "oh")
CELL = {"lstm": "LSTMCell", "layer_norm": "LayerNormLSTMCell",
        "hyper": "HyperLSTMCell"}


class _Maker:
  """get_variable with random values (or shapes only), dropping / reshaping
  chosen variables by full name (for the bad-checkpoint cases)."""

  def __init__(self, seed, values, drop=(), reshape=None):
    self.rng = np.random.default_rng(seed)
    self.values, self.drop, self.reshape = values, set(drop), reshape or {}

  def __call__(self, name, shape, trainable=True, value=None):
    scope = v1.get_variable_scope().name
    full = f"{scope}/{name}" if scope else name
    if full in self.drop:
      return None
    shape = list(self.reshape.get(full, shape))
    if not self.values:
      return v1.get_variable(name, shape, trainable=trainable,
                             initializer=v1.zeros_initializer())
    if value is None:
      value = self.rng.normal(1.0 if "gamma" in name else 0.0, 0.3, shape)
    return v1.get_variable(name, initializer=np.asarray(value, np.float32),
                           trainable=trainable)


def _build(var, hps):
  d, k, l = hps.z_size, hps.num_components, hps.num_units
  h, nh, emb = hps.dec_rnn_size, hps.hyper_num_units, hps.hyper_embedding_size
  flat = (hps.png_width // 16) ** 2 * 256
  rng = np.random.default_rng(1)
  scope = v1.variable_scope

  def norm(c):   # tf.contrib.layers.instance_norm(x): scope InstanceNorm
    with scope(None, default_name="InstanceNorm"):
      var("beta", [c])
      var("gamma", [c])

  def conv(name, shape, channels):
    with scope(name):
      var("filter", shape)
      norm(channels)

  def fc(name, fan_in, fan_out):
    with scope(name), scope("linear"):
      var("fc_w", [fan_in, fan_out])
      var("fc_b", [fan_out])

  def ln(name, units):
    with scope(name):
      var("ln_gamma", [units])
      var("ln_beta", [units])

  if True:   # called inside model.py's variable scope RPCL-pix2seq
    var("num_of_steps", [], False, 1.0)
    var("latent_mu", [k, d], False, rng.uniform(-1, 1, (k, d)))
    var("latent_sigma2", [k, d], False, rng.uniform(0.5, 2, (k, d)))
    pi = rng.uniform(0.5, 1, (l, 1))
    var("latent_i", [l, 1], False, pi / pi.sum())
    q = rng.uniform(0.1, 1, (k, l))
    var("latent_ij", [k, l], False, q / q.sum(0))
    with scope("encoder"):
      for b, cin, depth in ((1, 1, 32), (2, 32, 64)):
        with scope(f"layer_{b}"):
          for i in (1, 2, 3):
            with scope(f"dcn{i}"):
              conv("conv0", [3, 3, cin, depth], depth)
          with scope("combine"):
            conv("conv0", [3, 3, depth, depth], depth)
      conv("conv0", [3, 3, 64, 128], 128)
      conv("conv1", [3, 3, 128, 256], 256)
      fc("fc_mu", flat, d)
      fc("fc_sigma2", flat, d)
    with scope("deconv"):
      fc("fc1", d, flat)
      for i, (cin, cout) in enumerate(((256, 128), (128, 64), (64, 32), (32, 1))):
        conv(f"deconv{i}", [3, 3, cout, cin], cout)
    hyper = hps.dec_model == "hyper"
    fc("init_state", d, 2 * (h + (nh if hyper else 0)))
    with scope("decoder"):
      with scope("rnn"), scope(CELL[hps.dec_model]):
        var("W_xh", [5 + d, 4 * h])
        var("W_hh", [h, 4 * h])
        if hps.dec_model != "layer_norm":
          var("bias", [4 * h])
        if hyper:
          with scope("LayerNormLSTMCell"):
            var("W_xh", [5 + d + h, 4 * nh])
            var("W_hh", [nh, 4 * nh])
            ln("ln_all", 4 * nh)
            ln("ln_c", nh)
          for gate in GATES_X + GATES_H:
            with scope(f"hyper_{gate}"):
              with scope("zw"):
                var("super_linear_w", [nh, emb])
                var("super_linear_b", [emb])
              with scope("alpha"):
                var("super_linear_w", [emb, h])
              if gate in GATES_H:
                with scope("zb"):
                  var("super_linear_w", [nh, emb])
                with scope("beta"):
                  var("super_linear_w", [emb, h])
        if hps.dec_model != "lstm":
          ln("ln_all", 4 * h)
          ln("ln_c", h)
      fc("fc", h, 3 + 6 * hps.num_output_mixture)


def release_graph(hps, seed=0, values=True, adam=True, eval_copy=True,
                  drop=(), reshape=None, extra=()):
  """(graph, train_op or None) with the release's variables for ``hps``."""
  graph = tf.Graph()
  with graph.as_default():
    var = _Maker(seed, values, drop, reshape)
    train_op = None
    with v1.variable_scope("RPCL-pix2seq"):   # as model.py: graph + optimiser
      _build(var, hps)
      if adam:   # random gradients (no loss graph to differentiate)
        pairs = [(tf.random.stateless_normal(w.shape, [seed, i]), w)
                 for i, w in enumerate(v1.trainable_variables())]
        train_op = v1.train.AdamOptimizer(0.001, beta1=0.5).apply_gradients(pairs)
    for name in extra:
      v1.get_variable(name, [2], initializer=v1.zeros_initializer())
    if adam:
      if eval_copy:   # train.py's eval model builds a second optimiser
        with v1.variable_scope("RPCL-pix2seq", reuse=True):
          v1.train.AdamOptimizer(0.001, beta1=0.5).apply_gradients(pairs)
  return graph, train_op


def write_release_checkpoint(folder, hps, steps=3, config=True, para=True,
                             config_changes=None, **graph_kwargs):
  """Saves a release-style checkpoint of ``hps`` to ``folder`` (vector-N, the
  checkpoint file, and as train.py model_config.json and para.npz).
  Returns {TF1 name: value} of everything saved."""
  os.makedirs(folder, exist_ok=True)
  graph, train_op = release_graph(hps, **graph_kwargs)
  with graph.as_default(), v1.Session(graph=graph) as sess:
    sess.run(v1.global_variables_initializer())
    for _ in range(steps if train_op is not None else 0):
      sess.run(train_op)
    v1.train.Saver(v1.global_variables()).save(
        sess, os.path.join(folder, "vector"), global_step=7)
    values = sess.run({v.op.name: v for v in v1.global_variables()})
  if config:
    cfg = dict(categories=list(hps.categories), num_steps=1000001, save_every=1,
               dec_rnn_size=hps.dec_rnn_size, dec_model=hps.dec_model,
               max_seq_len=hps.max_seq_len, z_size=hps.z_size,
               batch_size=hps.batch_size, num_layer_j=hps.num_components,
               num_layer_i=hps.num_units, learning_rate=0.001,
               decay_rate=0.9999, min_learning_rate=0.00001, grad_clip=1.0,
               de_weight=0.5, use_recurrent_dropout=True,
               recurrent_dropout_prob=0.9, use_input_dropout=False,
               input_dropout_prob=0.9, use_output_dropout=False,
               output_dropout_prob=0.9, random_scale_factor=0.1,
               augment_stroke_prob=0.1, png_scale_ratio=0.98,
               png_rotate_angle=0, png_translate_dist=0, is_training=True,
               png_width=hps.png_width, semi_percent=0.0, semi_balanced=False,
               num_per_category=hps.num_per_category)
    cfg.update(config_changes or {})
    with open(os.path.join(folder, "model_config.json"), "w") as f:
      json.dump(cfg, f, indent=True)
  if para:
    np.savez(os.path.join(folder, "para"), train_label_mask=np.zeros([6]),
             best_valid_loss=12.5, epoch=2, count=steps)
  return values
