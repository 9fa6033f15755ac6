"""The HyperLSTM recurrence with each cell's elementwise step in C++.

The same forward / hand-written backward as model/fast/hyper_recurrence.py (whose
``_Cell`` weights and dropout masks it reuses), except that per time step
everything between the matmuls is one kernel call per cell and direction
(model/fast/fused_gates.py), and the embedding factors stay gate-major, (12, B,
H), as the batched embedding matmul produces and consumes them (the
TensorFlow-op path transposes them to batch-major and back every step).

Stored for the backward per step: the recurrent matmul's output hw (B, 4H +
4Nh), the factors (12, B, H), the embeddings (12, B, E), the kernels'
``saved`` rows (B, 10H + 5) and (B, 10Nh + 5), and the dropout mask.  The
per-step gradient factors of the layer-norm gains / offsets and the gate
bias come out of the backward kernels as (B, 14H) and (B, 10Nh) row blocks,
summed over rows and steps inside the loop (a ones-vector matmul): those
weights' gradients.
"""
import tensorflow as tf

from model.fast import fused_gates
from model.fast.hyper_recurrence import (Path, _colsum, backward_loop, dropout_mask,
                                    forward_loop)


def _forward(cl, xm, xh, states, base_seed, keep_prob):
  """The forward loop -> (final states, {name: TensorArray}, inputs)."""
  units = cl.units
  names = ["hw", "ab", "e3", "main", "hyper"]
  names += [] if base_seed is None else ["mask"]
  bias = tf.reshape(cl.embed[3][8 * units:], [4, units])

  def step(t, inputs, states):
    h, c, hh, hc = states
    out = {}
    out["hw"] = hw = cl.matmul(h, cl.w_rec)                   # (B, 4H + 4Nh)
    hh, hc, out["hyper"] = fused_gates.ln_cell_forward(
        inputs["xh"].read(t), hw, 4 * units, cl.matmul(hh, cl.w_hh), hc,
        cl.h_ln_g, cl.h_ln_b, cl.h_ln_cg, cl.h_ln_cb, cl.epsilon)
    out["e3"] = cl.embeddings(hh)                             # (12, B, E)
    out["ab"] = cl.matmul(out["e3"], cl.embed[2])             # (12, B, H)
    mask = None
    if base_seed is not None:
      mask = out["mask"] = dropout_mask(cl, base_seed, t, keep_prob,
                                        tf.shape(c))
    h, c, out["main"] = fused_gates.forward(
        out["ab"], inputs["xm"].read(t), hw, c, mask, bias, cl.ln_g, cl.ln_b,
        cl.ln_cg, cl.ln_cb, cl.epsilon)
    return out, (h, c, hh, hc)

  return forward_loop(cl, xm, xh, states, names, step)


def _backward(cl, saved, inputs, d_out, d_final):
  """The backward loop -> ({name: stacked per-step factor}, d_states,
  d_w_ab, the column sums of the kernels' (B, 14H + 10Nh) gradient factors)."""
  ones = tf.ones([1, tf.shape(d_out)[1]], cl.ew)
  has_mask = "mask" in saved

  def step(t, d_out_t, carry, accs):
    dh, dc, dhh, dhc = carry
    d_w_ab, p_sum = accs
    s = {k: saved[k].read(t) for k in ("hw", "ab", "e3", "main", "hyper")}
    mask = saved["mask"].read(t) if has_mask else None
    out = {}
    d_ab, d_hwm, out["d_xm"], dc, pgrad = fused_gates.backward(
        s["ab"], inputs["xm"].read(t), s["hw"], saved["c"].read(t), mask,
        s["main"], dh, d_out_t, dc, cl.ln_g, cl.ln_cg)
    d_hh, out["d_e"], d_w_ab = cl.embed_backward_gm(d_ab, s["e3"], d_w_ab)
    d_hp, dhc, h_pgrad = fused_gates.ln_cell_backward(
        s["hyper"], dhh, d_hh, dhc, saved["hc"].read(t), cl.h_ln_g, cl.h_ln_cg)
    p_sum = p_sum + tf.matmul(ones, tf.concat([pgrad, h_pgrad], 1))
    out["d_hw"] = tf.concat([d_hwm, d_hp], 1)
    carry = (cl.matmul(out["d_hw"], cl.w_rec_t), dc,
             cl.matmul(d_hp, cl.w_hh_t), dhc)
    return out, carry, (d_w_ab, p_sum)

  accs = [tf.zeros(tf.shape(cl.embed[2]), cl.ew),
          tf.zeros([1, 14 * cl.units + 10 * cl.nh], cl.ew)]
  stacked, d_states, (d_w_ab, p_sum) = backward_loop(
      cl, d_out, d_final, ["d_hw", "d_xm", "d_e"], accs, step)
  return stacked, d_states, d_w_ab, p_sum


def _gradients(cl, saved, inputs, d_outputs, d_finals):
  """-> (d_xm, d_xh, d_states, d_weights in ``_Cell.inputs`` order)."""
  g, d_states, d_w_ab, p_sum = _backward(cl, saved, inputs, d_outputs,
                                         d_finals)
  units = cl.units
  rows = lambda x: tf.reshape(x, [-1, x.shape[-1]])
  h, hh = saved["h"].stack(), saved["hh"].stack()
  d_hp = rows(g["d_hw"][..., 4 * units:])
  nh = cl.nh
  sums = tf.split(p_sum[0], [4 * units, 4 * units, units, units, 4 * units,
                             4 * nh, 4 * nh, nh, nh])
  d_weights = [cl.matmul(rows(h[:-1]), rows(g["d_hw"]), adjoint_a=True),
               cl.matmul(rows(hh[:-1]), d_hp, adjoint_a=True),
               tf.reshape(sums[0], [4, units]), tf.reshape(sums[1], [4, units]),
               sums[2], sums[3], tf.reshape(sums[5], [4, nh]),
               tf.reshape(sums[6], [4, nh]), sums[7], sums[8]]
  d_e = rows(g["d_e"])
  d_weights += [cl.matmul(rows(hh[1:]), d_e, adjoint_a=True),
                _colsum(d_e, [d_e.shape[-1]]), d_w_ab,
                tf.concat([tf.zeros([8 * units], cl.ew), sums[4]], 0)]
  return g["d_xm"], g["d_hw"][..., 4 * units:], d_states, d_weights


FUSED = Path(_forward, _gradients)
