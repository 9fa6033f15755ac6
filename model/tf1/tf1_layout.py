"""The released TF1 code's variables and how they map onto this model.

The release (CMACH508/RPCL-pix2seqH: model.py, Cnn.py, rnn.py) builds its graph
under ``tf.variable_scope('RPCL-pix2seq')`` and saves ``tf.global_variables()``.
:func:`release_shapes` lists every variable its model creates, with the names
and shapes TF1 gives them:

* ``Cnn.ConvNet`` / ``DilatedConv``: ``<scope>/conv<i>/filter`` (kh, kw, in, out),
  deconvs ``deconv<i>/filter`` (kh, kw, out, in), each followed by
  ``tf.contrib.layers.instance_norm``: ``.../InstanceNorm/beta|gamma`` (C,).
* ``Cnn.FcNet``: ``<scope>/linear/fc_w`` (in, out), ``fc_b`` (out,).
* ``rnn.py`` cells under ``decoder/rnn/<class name>/`` (tf.nn.dynamic_rnn):
  ``W_xh`` (in, 4H), ``W_hh`` (H, 4H), ``bias`` (4H,), layer norms
  ``ln_all/ln_gamma|ln_beta`` (4H,) and ``ln_c/...`` (H,); the HyperLSTM's
  inner ``LayerNormLSTMCell/`` reads [x, h] and its ``hyper_<gate>/zw``,
  ``zb``, ``alpha``, ``beta`` ``super_linear_w|b`` give the per-gate factors.
* the GMM state ``latent_mu`` (K, D), ``latent_sigma2`` (K, D), ``latent_i``
  (L, 1), ``latent_ij`` (K, L), and ``num_of_steps`` (a fed scalar, always 1).

Layouts that differ from ours (:func:`weight_map`): the cell states are flat
(LSTM [c | h], layer norm [h | c], HyperLSTM [h | hyper_h | c | hyper_c]) where
ours are [h, c(, hyper_h, hyper_c)], so the initial-state layer's columns are
permuted; our HyperLSTM fuses W_xh with the rows of the inner cell's W_xh that
read x (and W_hh with those that read h), and stacks the 12 embeddings and
the 8 + 4 factor maps.  Every mapping only rearranges elements, so it applies
unchanged to the optimiser's Adam slots.
"""
import collections

import numpy as np

from utils.errors import UserError

SCOPE = "RPCL-pix2seq"
CELL_CLASS = {"lstm": "LSTMCell", "layer_norm": "LayerNormLSTMCell",
              "hyper": "HyperLSTMCell"}
GATES_X, GATES_H = ("ix", "jx", "fx", "ox"), ("ih", "jh", "fh", "oh")
ENC_BLOCKS = ((1, 1, 32), (2, 32, 64))         # (layer_b, in, depth)
ENC_CONVS = ((64, 128), (128, 256))            # encoder/conv0, conv1 (in, out)
DECONVS = ((256, 128), (128, 64), (64, 32), (32, 1))   # (in, out)
NON_WEIGHTS = (f"{SCOPE}/num_of_steps",)       # consumed, carries nothing

Assignment = collections.namedtuple("Assignment", "variable sources combine")
Assignment.__doc__ = """``variable`` (ours) = ``combine([arrays of sources])``."""


def n(name):
  return f"{SCOPE}/{name}"


def cell_prefix(dec_model):
  return n(f"decoder/rnn/{CELL_CLASS[dec_model]}/")


def state_layout(hps):
  """[(part, size)] of the release's flat cell state, in its order."""
  h, nh = hps.dec_rnn_size, hps.hyper_num_units
  if hps.dec_model == "lstm":
    return [("c", h), ("h", h)]
  if hps.dec_model == "layer_norm":
    return [("h", h), ("c", h)]
  return [("h", h), ("hyper_h", nh), ("c", h), ("hyper_c", nh)]


def our_state_parts(hps):
  return ["h", "c"] + (["hyper_h", "hyper_c"] if hps.dec_model == "hyper" else [])


def _cell_shapes(hps):
  h, n_in = hps.dec_rnn_size, 5 + hps.z_size
  c = cell_prefix(hps.dec_model)
  out = {c + "W_xh": (n_in, 4 * h), c + "W_hh": (h, 4 * h)}
  if hps.dec_model != "layer_norm":
    out[c + "bias"] = (4 * h,)
  if hps.dec_model != "lstm":
    out.update(_layer_norm_shapes(c, h))
  if hps.dec_model == "hyper":
    nh, emb = hps.hyper_num_units, hps.hyper_embedding_size
    inner = c + "LayerNormLSTMCell/"
    out.update({inner + "W_xh": (n_in + h, 4 * nh), inner + "W_hh": (nh, 4 * nh)})
    out.update(_layer_norm_shapes(inner, nh))
    for gate in GATES_X + GATES_H:
      g = f"{c}hyper_{gate}/"
      out.update({g + "zw/super_linear_w": (nh, emb),
                  g + "zw/super_linear_b": (emb,),
                  g + "alpha/super_linear_w": (emb, h)})
      if gate in GATES_H:
        out.update({g + "zb/super_linear_w": (nh, emb),
                    g + "beta/super_linear_w": (emb, h)})
  return out


def _layer_norm_shapes(prefix, units):
  return {prefix + "ln_all/ln_gamma": (4 * units,),
          prefix + "ln_all/ln_beta": (4 * units,),
          prefix + "ln_c/ln_gamma": (units,), prefix + "ln_c/ln_beta": (units,)}


def release_shapes(hps):
  """{TF1 name: shape} of every variable the release's model creates for
  ``hps`` (not the optimiser's): the trainable weights, the GMM state and
  ``num_of_steps``."""
  d, k, l = hps.z_size, hps.num_components, hps.num_units
  flat = (hps.png_width // 16) ** 2 * 256
  out = {n("num_of_steps"): (), n("latent_mu"): (k, d),
         n("latent_sigma2"): (k, d), n("latent_i"): (l, 1),
         n("latent_ij"): (k, l)}

  def conv(scope, shape, channels):
    out[n(scope + "/filter")] = shape
    out[n(scope + "/InstanceNorm/beta")] = (channels,)
    out[n(scope + "/InstanceNorm/gamma")] = (channels,)

  def dense(scope, fan_in, fan_out):
    out[n(scope + "/linear/fc_w")] = (fan_in, fan_out)
    out[n(scope + "/linear/fc_b")] = (fan_out,)

  for b, cin, depth in ENC_BLOCKS:
    for i in (1, 2, 3):
      conv(f"encoder/layer_{b}/dcn{i}/conv0", (3, 3, cin, depth), depth)
    conv(f"encoder/layer_{b}/combine/conv0", (3, 3, depth, depth), depth)
  for i, (cin, cout) in enumerate(ENC_CONVS):
    conv(f"encoder/conv{i}", (3, 3, cin, cout), cout)
  dense("encoder/fc_mu", flat, d)
  dense("encoder/fc_sigma2", flat, d)
  dense("deconv/fc1", d, flat)
  for i, (cin, cout) in enumerate(DECONVS):
    conv(f"deconv/deconv{i}", (3, 3, cout, cin), cout)
  dense("init_state", d, sum(size for _, size in state_layout(hps)))
  dense("decoder/fc", hps.dec_rnn_size, 3 + 6 * hps.num_output_mixture)
  out.update(_cell_shapes(hps))
  return out


def trainable_names(hps):
  """The release's trainable variables (those with Adam slots)."""
  gmm = {n(x) for x in ("latent_mu", "latent_sigma2", "latent_i", "latent_ij")}
  return sorted(set(release_shapes(hps)) - gmm - set(NON_WEIGHTS))


# --- the mapping onto our variables -----------------------------------------

def _first(arrays):
  return arrays[0]


def _reshaped(shape):
  return lambda arrays: np.reshape(arrays[0], shape)


def _stack(arrays):
  return np.stack(arrays)


def _permuted_columns(hps):
  """Initial-state layer: the release's state columns -> ours (see module doc)."""
  spans, start = {}, 0
  for part, size in state_layout(hps):
    spans[part] = (start, start + size)
    start += size
  order = our_state_parts(hps)
  return lambda arrays: np.concatenate(
      [arrays[0][..., slice(*spans[p])] for p in order], axis=-1)


def _conv_pairs(model):
  """[(our conv layer, our norm layer, TF1 scope)] of encoder and decoder."""
  pairs = []
  for (b, _, _), block in zip(ENC_BLOCKS, model.encoder.blocks):
    for i, (conv, norm) in enumerate(block.branches, start=1):
      pairs.append((conv, norm, f"encoder/layer_{b}/dcn{i}/conv0"))
    pairs.append((block.down, block.down_norm, f"encoder/layer_{b}/combine/conv0"))
  for i, (conv, norm) in enumerate(model.encoder.convs):
    pairs.append((conv, norm, f"encoder/conv{i}"))
  for i, (conv, norm) in enumerate(model.image_decoder.deconvs):
    pairs.append((conv, norm, f"deconv/deconv{i}"))
  return pairs


def _dense(layer, scope, combine=_first):
  w, b = n(scope + "/linear/fc_w"), n(scope + "/linear/fc_b")
  return [Assignment(layer.kernel, [w], combine),
          Assignment(layer.bias, [b], combine)]


def _cell_map(cell, hps):
  h, n_in = hps.dec_rnn_size, 5 + hps.z_size
  c = cell_prefix(hps.dec_model)
  gates = _reshaped((4, h))
  if hps.dec_model == "lstm":
    return [Assignment(cell.w_in, [c + "W_xh"], _first),
            Assignment(cell.w_rec, [c + "W_hh"], _first),
            Assignment(cell.bias, [c + "bias"], _first)]
  out = [Assignment(cell.ln_gates_gamma, [c + "ln_all/ln_gamma"], gates),
         Assignment(cell.ln_gates_beta, [c + "ln_all/ln_beta"], gates),
         Assignment(cell.ln_c_gamma, [c + "ln_c/ln_gamma"], _first),
         Assignment(cell.ln_c_beta, [c + "ln_c/ln_beta"], _first)]
  if hps.dec_model == "layer_norm":
    return out + [Assignment(cell.w_in, [c + "W_xh"], _first),
                  Assignment(cell.w_rec, [c + "W_hh"], _first)]
  nh = hps.hyper_num_units
  inner = c + "LayerNormLSTMCell/"
  hyper_gates = _reshaped((4, nh))
  zw = [f"{c}hyper_{g}/zw/super_linear_w" for g in GATES_X + GATES_H]
  zb = [f"{c}hyper_{g}/zb/super_linear_w" for g in GATES_H]
  return out + [
      # x rows of the inner cell's W_xh join the main input weights, h rows
      # the main recurrent weights (the hyper cell reads [x, h]).
      Assignment(cell.w_in, [c + "W_xh", inner + "W_xh"], lambda a: np.concatenate(
          [a[0], a[1][:n_in]], axis=1)),
      Assignment(cell.w_rec, [c + "W_hh", inner + "W_xh"], lambda a: np.concatenate(
          [a[0], a[1][n_in:]], axis=1)),
      Assignment(cell.bias, [c + "bias"], gates),
      Assignment(cell.hyper_w_rec, [inner + "W_hh"], _first),
      Assignment(cell.hyper_ln_gates_gamma, [inner + "ln_all/ln_gamma"], hyper_gates),
      Assignment(cell.hyper_ln_gates_beta, [inner + "ln_all/ln_beta"], hyper_gates),
      Assignment(cell.hyper_ln_c_gamma, [inner + "ln_c/ln_gamma"], _first),
      Assignment(cell.hyper_ln_c_beta, [inner + "ln_c/ln_beta"], _first),
      Assignment(cell.w_embed, zw + zb, _stack),
      Assignment(cell.b_embed, [f"{c}hyper_{g}/zw/super_linear_b"
                                for g in GATES_X + GATES_H],
                 lambda a: np.stack(a)[:, None, :]),
      Assignment(cell.w_alpha, [f"{c}hyper_{g}/alpha/super_linear_w"
                                for g in GATES_X + GATES_H], _stack),
      Assignment(cell.w_beta, [f"{c}hyper_{g}/beta/super_linear_w"
                               for g in GATES_H], _stack)]


def weight_map(model):
  """[Assignment] covering every trainable weight of ``model`` (a built
  RPCLPix2SeqH) and its hierarchy state, from the release's variables."""
  hps = model.hps
  out = []
  for conv, norm, scope in _conv_pairs(model):
    out += [Assignment(conv.kernel, [n(scope + "/filter")], _first),
            Assignment(norm.gamma, [n(scope + "/InstanceNorm/gamma")], _first),
            Assignment(norm.beta, [n(scope + "/InstanceNorm/beta")], _first)]
  out += _dense(model.encoder.mean_head, "encoder/fc_mu")
  out += _dense(model.encoder.var_head, "encoder/fc_sigma2")
  out += _dense(model.image_decoder.dense, "deconv/fc1")
  dec = model.stroke_decoder
  out += _dense(dec.init_dense, "init_state", _permuted_columns(hps))
  out += _dense(dec.out_dense, "decoder/fc")
  out += _cell_map(dec.cell, hps)
  hier = model.hierarchy
  out += [Assignment(hier.mu, [n("latent_mu")], _first),
          Assignment(hier.sigma2, [n("latent_sigma2")], _first),
          Assignment(hier.pi_l, [n("latent_i")], _reshaped((hps.num_units,))),
          Assignment(hier.q_kl, [n("latent_ij")], _first)]
  return out


# --- reading the configuration off the shapes ---------------------------------

def infer_architecture(shapes):
  """{hparam: (value, evidence)} read off a release checkpoint's shapes:
  dec_model, dec_rnn_size, z_size, num_mixture, num_sub, png_width,
  num_output_mixture and, for the HyperLSTM, hyper_num_units and
  hyper_embedding_size.  ``evidence`` names the variable and its shape.
  Raises UserError when a variable needed for it is missing or odd."""
  def get(name):
    if name not in shapes:
      raise UserError(f"the checkpoint lacks variable {name}, which the "
                      f"release's model.py creates")
    shape = tuple(shapes[name])
    return shape, f"{name} {shape}"

  out = {}
  (k, d), ev = get(n("latent_mu"))
  out["z_size"] = (d, ev)
  (k2, l), ev_q = get(n("latent_ij"))
  if k2 != k or l < 1 or k % l:
    raise UserError(f"the checkpoint's {ev_q} does not fit {ev}: expected "
                    f"(K, L) with K = {k} a multiple of L")
  out["num_mixture"] = (l, ev_q)
  out["num_sub"] = (k // l, ev_q)
  found = [m for m in ("hyper", "layer_norm", "lstm")
           if cell_prefix(m) + "W_hh" in shapes]
  if not found:
    raise UserError(f"the checkpoint has no decoder cell: none of "
                    f"{', '.join(cell_prefix(m) + 'W_hh' for m in CELL_CLASS)}")
  model = found[0]
  (h, _), ev = get(cell_prefix(model) + "W_hh")
  out["dec_model"] = (model, ev)
  out["dec_rnn_size"] = (h, ev)
  if model == "hyper":
    (nh, _), ev = get(cell_prefix(model) + "LayerNormLSTMCell/W_hh")
    out["hyper_num_units"] = (nh, ev)
    (_, emb), ev = get(cell_prefix(model) + "hyper_ix/zw/super_linear_w")
    out["hyper_embedding_size"] = (emb, ev)
  (outs,), ev = get(n("decoder/fc/linear/fc_b"))
  if outs < 9 or (outs - 3) % 6:
    raise UserError(f"the checkpoint's {ev} is not 3 + 6 M outputs")
  out["num_output_mixture"] = ((outs - 3) // 6, ev)
  (flat, _), ev = get(n("encoder/fc_mu/linear/fc_w"))
  side = int(round((flat / 256) ** 0.5))
  if side * side * 256 != flat:
    raise UserError(f"the checkpoint's {ev} is not (side^2 * 256, D)")
  out["png_width"] = (16 * side, ev)
  return out
