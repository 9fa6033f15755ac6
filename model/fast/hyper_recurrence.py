"""The HyperLSTM recurrence with a hand-written backward pass.

``run_hyper(cell, xw, states, base_seed)`` computes what looping
``cell.step_from_hw`` over the projected inputs computes (model/networks/cells.py,
method.md §2), to float rounding, as two ``tf.while_loop``s of few ops inside
one ``tf.custom_gradient``:

* Layout: batch-major; one (B, H) @ (H, 4H + 4Nh) matmul per step gives the
  main gates' recurrent part and the hyper LSTM's; the gates are (B, 4, H) for
  their layer norms; the 12 embedding factors (B, 12H): alpha_x, alpha_h,
  beta + bias.  (A gate-major (4, B, H) layout with broadcast batched matmuls
  measured slower: batched matmuls run at half the rate at these shapes.)
* One sigmoid for all four gates: tanh(j) = 2 sigmoid(2j) - 1, and the factor 2
  and the forget bias are folded into the gates' layer-norm gain and offset.
* Embeddings: hyper_h -> (B, 12E) in one matmul, then (12, B, E) -> (12, B, H)
  in one batched matmul.  (Multiplying hyper_h by the products W_embed W_alpha,
  (Nh, 12H), is one matmul but 3x the FLOPs; it measured slower at the small
  preset and much slower at the paper's.)
* The forward stores every activation the backward needs (no recomputation);
  the backward applies the chain rule by hand.  The weight gradients of the
  recurrent matrices and embeddings and the layer-norm gain/offset sums are
  formed after the loop over all T*B rows at once.

Recurrent dropout: the same stateless mask per step as ``step_from_hw`` (seed
``base_seed + [0, t]``), stored for the backward.  Mixed precision: matmuls in
the inputs' dtype, everything elementwise and the states between steps in
float32.  Memory kept for the backward: ~T*B*(27H + 14Nh) floats.
"""
import tensorflow as tf


# model/networks/recurrence.cell_digest of the HyperLSTMCell this path
# computes: when cells.py's code changes, the model stops using this path
# (recurrence.fused_matches) until it is checked and this digest renewed.
VERIFIED_CELL_DIGEST = ("79bacc294885d34405dbece5370fe2bd"
                        "61c5d60c7d58a37fe7070af618fe4918")

_LOW = (tf.float16, tf.bfloat16)
GATE_SCALE = (1.0, 2.0, 1.0, 1.0)   # sigmoid(2j) gives tanh(j) = 2 s - 1
GATE_SHIFT = (0.0, 0.0, 1.0, 0.0)   # forget bias 1 (sketch-rnn's)


def elementwise_dtype(mm_dtype):
  """float32 for 16-bit matmuls, else the matmuls' own dtype."""
  mm_dtype = tf.as_dtype(mm_dtype)
  return tf.float32 if mm_dtype in _LOW else mm_dtype


def _norm(x, epsilon):
  """Layer-norm statistics over the last axis: (x_hat, 1/sqrt(var + eps))."""
  centred = x - tf.reduce_mean(x, -1, keepdims=True)
  rs = tf.math.rsqrt(tf.reduce_mean(tf.square(centred), -1, keepdims=True)
                     + epsilon)
  return centred * rs, rs


def _norm_grad(g, x_hat, rs):
  """dL/d(input) of ``_norm`` given g = dL/d(x_hat)."""
  return rs * (g - tf.reduce_mean(g, -1, keepdims=True)
               - x_hat * tf.reduce_mean(g * x_hat, -1, keepdims=True))


def _gain_offset(gamma, beta):
  """Layer-norm gain / offset (4, n) of the 4 gates with GATE_SCALE and
  GATE_SHIFT folded in: the sigmoid's argument is x_hat * gain + offset."""
  scale = tf.constant(GATE_SCALE, gamma.dtype)[:, None]
  shift = tf.constant(GATE_SHIFT, gamma.dtype)[:, None]
  return gamma * scale, beta * scale + shift


class _Cell:
  """The cell's weights as loop tensors, and the per-step arithmetic.

  Layout: batch-major, (B, 4, H) for the gates (one (B, H) @ (H, 4H + 4Nh)
  matmul per step, the fastest form on CPU); embedding factors (B, 12H) =
  [alpha_x | alpha_h | beta + bias]."""

  def __init__(self, cell, mm_dtype):
    self.units, self.nh, self.emb = (cell.units, cell.hyper_units,
                                     cell.hyper_embedding)
    self.mm, self.ew = tf.as_dtype(mm_dtype), elementwise_dtype(mm_dtype)
    self.epsilon = cell.ln_epsilon

  def inputs(self, cell):
    """The weight tensors passed through the custom gradient (autodiff maps
    their gradients back to the variables)."""
    units, nh, emb = self.units, self.nh, self.emb
    mm = lambda v: tf.cast(v, self.mm)
    ew = lambda v: tf.cast(v, self.ew)
    ln_g, ln_b = _gain_offset(ew(cell.ln_gates_gamma), ew(cell.ln_gates_beta))
    h_ln_g, h_ln_b = _gain_offset(ew(cell.hyper_ln_gates_gamma),
                                  ew(cell.hyper_ln_gates_beta))
    w_ab = ew(tf.concat([cell.w_alpha, cell.w_beta], 0))        # (12, E, H)
    b_ab = tf.concat([tf.zeros([8 * units], self.ew),
                      tf.reshape(ew(cell.bias), [4 * units])], 0)
    w_e = ew(cell.w_embed)                                      # (12, Nh, E)
    b_e = tf.concat([ew(cell.b_embed), tf.zeros([4, 1, emb], self.ew)], 0)
    embed = [mm(tf.reshape(tf.transpose(w_e, (1, 0, 2)), [nh, 12 * emb])),
             tf.reshape(b_e, [12 * emb]), mm(w_ab), b_ab]
    return [mm(cell.w_rec), mm(cell.hyper_w_rec), ln_g, ln_b,
            ew(cell.ln_c_gamma), ew(cell.ln_c_beta), h_ln_g, h_ln_b,
            ew(cell.hyper_ln_c_gamma), ew(cell.hyper_ln_c_beta)] + embed

  def bind(self, weights):
    (self.w_rec, self.w_hh, self.ln_g, self.ln_b, self.ln_cg, self.ln_cb,
     self.h_ln_g, self.h_ln_b, self.h_ln_cg, self.h_ln_cb) = weights[:10]
    self.embed = weights[10:]
    return self

  def to_mm(self, x):
    return x if x.dtype == self.mm else tf.cast(x, self.mm)

  def to_ew(self, x):
    return x if x.dtype == self.ew else tf.cast(x, self.ew)

  def matmul(self, a, b, **kwargs):
    return self.to_ew(tf.matmul(self.to_mm(a), self.to_mm(b), **kwargs))

  # --- embeddings: hyper h (B, Nh) -> (B, 12H) -------------------------------
  def embeddings(self, hh):
    """The 12 embeddings of hyper h (B, Nh), gate-major: (12, B, E)."""
    w_e2, b_e = self.embed[:2]
    return tf.transpose(tf.reshape(self.matmul(hh, w_e2) + b_e,
                                   [-1, 12, self.emb]), (1, 0, 2))

  def embed_forward(self, hh):
    """-> (factors (B, 12H), e (12, B, E))."""
    w_ab, b_ab = self.embed[2:]
    e3 = self.embeddings(hh)
    ab = tf.transpose(self.matmul(e3, w_ab), (1, 0, 2))
    return tf.reshape(ab, [-1, 12 * self.units]) + b_ab, e3

  def transposed(self):
    """The weights the backward multiplies by on the right, transposed once
    per call (a plain matmul is up to 3x faster than one with transpose_b)."""
    self.w_rec_t, self.w_hh_t = tf.transpose(self.w_rec), tf.transpose(self.w_hh)
    self.embed_t = [tf.transpose(self.embed[0]),
                    tf.transpose(self.embed[2], (0, 2, 1))]

  def embed_backward(self, d_ab, e3, d_w_ab):
    """-> (dL/d hyper_h, dL/de (B, 12E), updated d_w_ab)."""
    d_ab3 = tf.transpose(tf.reshape(d_ab, [-1, 12, self.units]), (1, 0, 2))
    return self.embed_backward_gm(d_ab3, e3, d_w_ab)

  def embed_backward_gm(self, d_ab3, e3, d_w_ab):
    """``embed_backward`` from the factors' gradient gate-major (12, B, H)."""
    w_e2_t, w_ab_t = self.embed_t
    d_e = tf.reshape(tf.transpose(self.matmul(d_ab3, w_ab_t), (1, 0, 2)),
                     [-1, 12 * self.emb])
    d_w_ab = d_w_ab + self.matmul(e3, d_ab3, adjoint_a=True)
    return self.matmul(d_e, w_e2_t), d_e, d_w_ab


def hyper_cell_forward(cl, hp, hc, out):
  """The hyper layer-norm LSTM's elementwise step from its gate
  pre-activations hp (B, 4Nh); stores what the backward needs in ``out``.
  -> (hyper h, hyper c)."""
  out["h_hat"], out["h_rs"] = _norm(tf.reshape(hp, [-1, 4, cl.nh]), cl.epsilon)
  h_act = tf.sigmoid(out["h_hat"] * cl.h_ln_g + cl.h_ln_b)
  out["h_d_act"] = h_act * (1.0 - h_act)         # the sigmoids' derivative
  hsi, hsj, hsf, hso = tf.unstack(h_act, axis=1)
  htj = 2.0 * hsj - 1.0
  out.update(hsi=hsi, htj=htj, hsf=hsf, hso=hso)
  hc = hc * hsf + hsi * htj
  out["hc_hat"], out["hc_rs"] = _norm(hc, cl.epsilon)
  out["hct"] = tf.tanh(out["hc_hat"] * cl.h_ln_cg + cl.h_ln_cb)
  return out["hct"] * hso, hc


def hyper_cell_backward(cl, s, dhh, dhc, hc_prev, out):
  """The chain rule through ``hyper_cell_forward`` (``s``: what it stored)
  given dL/d hyper h and the carried dL/d hyper c; the per-step factors of the
  weight gradients go to ``out``.  -> (dL/dhp (B, 4Nh), dL/d hyper c)."""
  out["d_hcy"] = dhh * s["hso"] * (1.0 - tf.square(s["hct"]))
  dhc = dhc + _norm_grad(out["d_hcy"] * cl.h_ln_cg, s["hc_hat"], s["hc_rs"])
  out["d_hu"] = tf.stack([dhc * s["htj"], 2.0 * dhc * s["hsi"], dhc * hc_prev,
                          dhh * s["hct"]], 1) * s["h_d_act"]
  d_hp = tf.reshape(_norm_grad(out["d_hu"] * cl.h_ln_g, s["h_hat"],
                               s["h_rs"]), [-1, 4 * cl.nh])
  return d_hp, dhc


def dropout_mask(cl, base_seed, t, keep_prob, shape):
  """Step t's recurrent-dropout mask (0 or 1/keep_prob), stateless from
  (base_seed, t) exactly as ``cell.step_from_hw`` draws it."""
  uniform = tf.random.stateless_uniform(shape, base_seed + tf.stack([0, t]),
                                        dtype=cl.mm)
  return tf.where(uniform < keep_prob, tf.constant(1.0 / keep_prob, cl.ew),
                  tf.constant(0.0, cl.ew))


STATES = ("h", "c", "hh", "hc")


def forward_loop(cl, xm, xh, states, names, step):
  """The forward ``tf.while_loop`` both paths share.  TensorArrays: the
  inputs per step, the states (T + 1 entries, the initial ones first) and one
  per stored name; ``step(t, inputs, (h, c, hh, hc))`` -> ({name: tensor to
  store}, new states).  -> (final states, saved, inputs)."""
  steps = tf.shape(xm)[0]
  ta = lambda dt, n=steps: tf.TensorArray(dt, size=n, clear_after_read=False)
  inputs = dict(xm=ta(xm.dtype).unstack(xm), xh=ta(xh.dtype).unstack(xh))
  saved = {name: ta(cl.ew, steps + 1).write(0, s)
           for name, s in zip(STATES, states)}
  saved.update({name: ta(cl.ew) for name in names})

  def body(t, h, c, hh, hc, saved):
    out, new_states = step(t, inputs, (h, c, hh, hc))
    new = {k: saved[k].write(t, v) for k, v in out.items()}
    new.update({k: saved[k].write(t + 1, v)
                for k, v in zip(STATES, new_states)})
    return (t + 1,) + tuple(new_states) + (new,)

  result = tf.while_loop(lambda t, *_: t < steps, body,
                         (tf.constant(0),) + tuple(states) + (saved,),
                         maximum_iterations=steps)
  return list(result[1:5]), result[5], inputs


def _forward(cl, xm, xh, states, base_seed, keep_prob):
  """The forward loop -> (final states, {name: TensorArray} for the backward,
  inputs)."""
  units, nh = cl.units, cl.nh
  names = ["hm", "ax", "ah", "e3", "g_hat", "g_rs", "d_act", "si", "g", "sf",
           "so", "c_hat", "c_rs", "ct", "h_hat", "h_rs", "h_d_act", "hsi",
           "htj", "hsf", "hso", "hc_hat", "hc_rs", "hct"]
  names += [] if base_seed is None else ["mask"]

  def step(t, inputs, states):
    h, c, hh, hc = states
    out = {}
    hm, hwh = tf.split(cl.matmul(h, cl.w_rec), [4 * units, 4 * nh], 1)
    hp = tf.add_n([cl.to_ew(inputs["xh"].read(t)), hwh,
                   cl.matmul(hh, cl.w_hh)])                     # (B, 4Nh)
    hh, hc = hyper_cell_forward(cl, hp, hc, out)
    ab, out["e3"] = cl.embed_forward(hh)
    out["ax"], out["ah"], bh = tf.split(ab, 3, axis=1)
    out["hm"] = hm
    pre = out["ax"] * cl.to_ew(inputs["xm"].read(t)) + out["ah"] * hm + bh
    out["g_hat"], out["g_rs"] = _norm(tf.reshape(pre, [-1, 4, units]), cl.epsilon)
    act = tf.sigmoid(out["g_hat"] * cl.ln_g + cl.ln_b)
    out["d_act"] = act * (1.0 - act)
    si, sj, sf, so = tf.unstack(act, axis=1)
    g = 2.0 * sj - 1.0
    if base_seed is not None:
      out["mask"] = dropout_mask(cl, base_seed, t, keep_prob, tf.shape(g))
      g = g * out["mask"]
    out.update(si=si, g=g, sf=sf, so=so)
    c = c * sf + si * g
    out["c_hat"], out["c_rs"] = _norm(c, cl.epsilon)
    out["ct"] = tf.tanh(out["c_hat"] * cl.ln_cg + cl.ln_cb)
    h = out["ct"] * so
    return out, (h, c, hh, hc)

  return forward_loop(cl, xm, xh, states, names, step)


def backward_loop(cl, d_out, d_final, names, accs, step):
  """The backward ``tf.while_loop`` both paths share, from the last step to
  the first: ``step(t, d_out_t, (dh, dc, dhh, dhc), accs)`` -> ({name:
  per-step factor}, the state gradients carried to step t - 1, accs).
  -> ({name: stacked factors}, d_states, accs)."""
  steps = tf.shape(d_out)[0]
  d_outs = tf.TensorArray(cl.ew, size=steps).unstack(d_out)
  cl.transposed()
  grads = {name: tf.TensorArray(cl.ew, size=steps) for name in names}
  n = len(accs)

  def body(t, *args):
    out, carry, acc = step(t, d_outs.read(t), args[:4], args[4:4 + n])
    grads = {k: args[-1][k].write(t, v) for k, v in out.items()}
    return (t - 1,) + tuple(carry) + tuple(acc) + (grads,)

  init = (steps - 1,) + tuple(d_final) + tuple(accs) + (grads,)
  result = tf.while_loop(lambda t, *_: t >= 0, body, init,
                         maximum_iterations=steps)
  stacked = {k: v.stack() for k, v in result[-1].items()}
  return stacked, list(result[1:5]), list(result[5:5 + n])


def _backward(cl, saved, inputs, d_out, d_final):
  """The backward loop -> ({name: stacked per-step gradient}, d_states,
  d_w_ab)."""
  units = cl.units
  names = ["d_pre", "d_hw", "d_u", "d_cy", "d_hu", "d_hcy", "d_e"]

  def step(t, d_out_t, carry, accs):
    dh, dc, dhh, dhc = carry
    (d_w_ab,) = accs
    s = {k: v.read(t) for k, v in saved.items()
         if k not in ("h", "c", "hc", "hh", "ax")}
    c_prev, hc_prev = saved["c"].read(t), saved["hc"].read(t)
    si, g, sf, so = s["si"], s["g"], s["sf"], s["so"]
    mask = s.get("mask")
    out = {}
    # --- main layer-norm LSTM ------------------------------------------------
    dh = dh + d_out_t
    out["d_cy"] = dh * so * (1.0 - tf.square(s["ct"]))
    dc = dc + _norm_grad(out["d_cy"] * cl.ln_cg, s["c_hat"], s["c_rs"])
    d_sj = 2.0 * dc * si if mask is None else 2.0 * dc * si * mask
    out["d_u"] = tf.stack([dc * g, d_sj, dc * c_prev, dh * s["ct"]], 1) \
        * s["d_act"]
    d_pre = tf.reshape(_norm_grad(out["d_u"] * cl.ln_g, s["g_hat"], s["g_rs"]),
                       [-1, 4 * units])
    out["d_pre"] = d_pre
    d_ab = tf.concat([d_pre * cl.to_ew(inputs["xm"].read(t)), d_pre * s["hm"],
                      d_pre], 1)                                # (B, 12H)
    # --- embeddings and the hyper layer-norm LSTM ----------------------------
    d_hh, out["d_e"], d_w_ab = cl.embed_backward(d_ab, s["e3"], d_w_ab)
    d_hp, dhc = hyper_cell_backward(cl, s, dhh + d_hh, dhc, hc_prev, out)
    # --- the recurrent matmuls ------------------------------------------------
    out["d_hw"] = tf.concat([d_pre * s["ah"], d_hp], 1)
    carry = (cl.matmul(out["d_hw"], cl.w_rec_t), dc * sf,
             cl.matmul(d_hp, cl.w_hh_t), dhc * s["hsf"])
    return out, carry, (d_w_ab,)

  stacked, d_states, (d_w_ab,) = backward_loop(
      cl, d_out, d_final, names, [tf.zeros(tf.shape(cl.embed[2]), cl.ew)],
      step)
  return stacked, d_states, d_w_ab


def _colsum(x, shape):
  """Sum of ``x`` over all but its trailing ``len(shape)`` axes, reshaped to
  ``shape`` (a ones-vector matmul: 2x faster than reduce_sum here)."""
  width = int(tf.TensorShape(shape).num_elements())
  rows = tf.reshape(x, [-1, width])
  ones = tf.ones([1, tf.shape(rows)[0]], x.dtype)
  return tf.reshape(tf.matmul(ones, rows), shape)


def _weight_grads(cl, saved, g, d_w_ab):
  """Gradients of the weight tensors of ``_Cell.inputs``, from all steps."""
  rows = lambda x: tf.reshape(x, [-1, x.shape[-1]])
  h, hh = saved["h"].stack(), saved["hh"].stack()
  h_prev, hh_prev, hh_new = rows(h[:-1]), rows(hh[:-1]), rows(hh[1:])
  d_hp = rows(g["d_hw"][..., 4 * cl.units:])
  out = [cl.matmul(h_prev, rows(g["d_hw"]), adjoint_a=True),
         cl.matmul(hh_prev, d_hp, adjoint_a=True)]
  for d_name, x_name, gain_w, offset_w in (
      ("d_u", "g_hat", cl.ln_g, cl.ln_b), ("d_cy", "c_hat", cl.ln_cg, cl.ln_cb),
      ("d_hu", "h_hat", cl.h_ln_g, cl.h_ln_b),
      ("d_hcy", "hc_hat", cl.h_ln_cg, cl.h_ln_cb)):
    d = g[d_name]
    out += [_colsum(d * saved[x_name].stack(), gain_w.shape),
            _colsum(d, offset_w.shape)]
  d_e = rows(g["d_e"])
  d_b_ab = tf.concat([tf.zeros([8 * cl.units], cl.ew),
                      _colsum(g["d_pre"], [4 * cl.units])], 0)
  return out + [cl.matmul(hh_new, d_e, adjoint_a=True),
                _colsum(d_e, [d_e.shape[-1]]), d_w_ab, d_b_ab]


def _gradients(cl, saved, inputs, d_outputs, d_finals):
  """The TensorFlow-op path's backward -> (d_xm, d_xh, d_states, d_weights)."""
  g, d_states, d_w_ab = _backward(cl, saved, inputs, d_outputs, d_finals)
  d_xm = g["d_pre"] * saved["ax"].stack()
  return (d_xm, g["d_hw"][..., 4 * cl.units:], d_states,
          _weight_grads(cl, saved, g, d_w_ab))


class Path:
  """One way to run the recurrence: ``forward(cl, xm, xh, states, base_seed,
  keep_prob)`` -> (final states, saved TensorArrays incl. "h", inputs) and
  ``gradients(cl, saved, inputs, d_outputs, d_finals)`` -> (d_xm, d_xh,
  d_states, d_weights in ``_Cell.inputs`` order)."""

  def __init__(self, forward, gradients):
    self.forward, self.gradients = forward, gradients


TF_OPS = Path(_forward, _gradients)


def run_hyper(cell, xw, states, base_seed=None, path=TF_OPS):
  """``cell`` (a built HyperLSTMCell) over projected inputs xw (B, T, F) from
  ``states`` [h, c, hyper_h, hyper_c]; ``base_seed`` (2,) int32 or None (no
  recurrent dropout); ``path``: TF_OPS or the fused kernels'
  (model/fast/hyper_fused.py).  Returns (outputs (B, T, H), final states)."""
  units = cell.units
  cl = _Cell(cell, xw.dtype)
  keep_prob = cell.dropout_keep_prob
  xm, xh = tf.split(tf.transpose(xw, (1, 0, 2)), [4 * units, -1], 2)
  state_dtypes = [s.dtype for s in states]

  @tf.custom_gradient
  def fused(xm, xh, *args):
    cl.bind(args[4:])
    finals, saved, inputs = path.forward(
        cl, xm, xh, [cl.to_ew(s) for s in args[:4]], base_seed, keep_prob)
    outputs = saved["h"].stack()[1:]

    def grad(d_outputs, *d_finals):
      zeros = lambda x: tf.zeros(tf.shape(x), cl.ew)
      d_outputs = zeros(outputs) if d_outputs is None else cl.to_ew(d_outputs)
      d_finals = [zeros(f) if d is None else cl.to_ew(d)
                  for d, f in zip(d_finals, finals)]
      d_xm, d_xh, d_states, d_weights = path.gradients(
          cl, saved, inputs, d_outputs, d_finals)
      return ([tf.cast(d_xm, xm.dtype), tf.cast(d_xh, xh.dtype)]
              + [tf.cast(d, dt) for d, dt in zip(d_states, state_dtypes)]
              + [tf.cast(d, w.dtype) for d, w in zip(d_weights, args[4:])])

    return tuple([tf.cast(outputs, xw.dtype)] + [
        tf.cast(f, dt) for f, dt in zip(finals, state_dtypes)]), grad

  result = fused(xm, xh, *states, *cl.inputs(cell))
  return tf.transpose(result[0], (1, 0, 2)), list(result[1:])
