"""Running a decoder cell over a whole sequence, fast.

``run_cell(cell, xw, states, training)`` loops ``cell.step_from_hw`` over the
projected inputs xw (B, T, F) with a ``tf.while_loop``; per step the only matmuls
are the recurrent ones.

Deferred recurrent-weight gradient (``defer_rec_grad=True``, a switch, off by
default): inside the loop the big recurrent matrix is read through
``stop_gradient`` and, in a ``tf.custom_gradient``, its gradient is formed after the
backward loop as ONE matmul  dW = sum_t h_{t-1}^T dL/d(hw_t)  over all B*T rows,
instead of T small matmuls each followed by an (H, F) accumulator add inside the
backward loop.  For LSTM / layer norm cells dL/d(hw_t) = dL/d(xw_t), which autodiff
returns anyway; the HyperLSTM scales its x and h parts differently, so it gets a
zero loop input e (T, B, F) added to hw whose gradient is dL/d(hw) (T*B*F floats
twice).  It is off: it was slower and used more memory wherever it was measured
(benchmarks/README.md).
Gradients are identical to the plain path (tests/test_cells.py).
"""
import tensorflow as tf
from keras import ops


def _step_fn(cell, training, jit_body):
  """``cell.step_from_hw`` (optionally XLA-compiled: the elementwise body only,
  the big matmuls stay outside)."""
  def step(xw, hw, states, seed):
    return cell.step_from_hw(xw, hw, list(states), training=training, seed=seed)
  if not jit_body:
    return step
  compiled = tf.function(step, jit_compile=True, autograph=False)
  return lambda xw, hw, states, seed: compiled(xw, hw, tuple(states), seed)


def _loop(cell, xw, states, training, w_rec, base_seed, extra=None,
          jit_body=False):
  """The tf.while_loop; ``extra`` (T-major, optional) is added to h @ w_rec."""
  step_fn = _step_fn(cell, training, jit_body)
  xw_t = ops.transpose(xw, (1, 0, 2))
  steps = tf.shape(xw_t)[0]
  inputs = tf.TensorArray(xw.dtype, size=steps).unstack(xw_t)
  extras = None if extra is None else \
      tf.TensorArray(xw.dtype, size=steps).unstack(extra)
  outputs = tf.TensorArray(xw.dtype, size=steps)

  def body(t, outputs, states):
    seed = None if base_seed is None else base_seed + tf.stack([0, t])
    hw = ops.matmul(states[0], w_rec)
    if extras is not None:
      hw = hw + extras.read(t)
    h, new_states = step_fn(inputs.read(t), hw, list(states), seed)
    return t + 1, outputs.write(t, h), tuple(new_states)

  _, outputs, final = tf.while_loop(
      lambda t, *_: t < steps, body, (tf.constant(0), outputs, tuple(states)),
      maximum_iterations=steps)
  return ops.transpose(outputs.stack(), (1, 0, 2)), list(final)


def _deferred(cell, xw, states, training, base_seed, jit_body=False):
  """``_loop`` with the w_rec gradient formed as one big matmul (module doc)."""
  w_var = cell.w_rec
  need_e = not cell.rec_grad_is_input_grad
  num_states = len(states)

  @tf.custom_gradient
  def run(xw, *states):
    w_rec = tf.stop_gradient(ops.cast(w_var, xw.dtype))
    sources = [xw] + list(states)
    with tf.GradientTape() as tape:
      tape.watch(sources)
      extra = None
      if need_e:
        extra = tf.zeros(tf.concat([[tf.shape(xw)[1]], tf.shape(xw)[:1],
                                    tf.shape(xw)[2:]], 0), xw.dtype)
        tape.watch(extra)
      out, final = _loop(cell, xw, list(states), training, w_rec, base_seed,
                         extra, jit_body)

    def grad(d_out, *d_final, variables=None):
      variables = list(variables or [])
      targets = [out] + final
      upstream = [tf.zeros_like(t) if g is None else g
                  for t, g in zip(targets, (d_out,) + d_final)]
      wrt = sources + ([extra] if need_e else []) + variables
      grads = tape.gradient(targets, wrt, output_gradients=upstream,
                            unconnected_gradients=tf.UnconnectedGradients.ZERO)
      d_hw = grads[num_states + 1] if need_e else grads[0]   # (T,B,F) | (B,T,F)
      h_prev = ops.concatenate([ops.expand_dims(states[0], 1), out[:, :-1]], 1)
      rows = ops.shape(h_prev)[-1]
      if need_e:   # e is time-major
        h_prev = ops.transpose(h_prev, (1, 0, 2))
      d_w = ops.matmul(ops.transpose(ops.reshape(h_prev, (-1, rows))),
                       ops.reshape(d_hw, (-1, ops.shape(d_hw)[-1])))
      var_grads = grads[len(wrt) - len(variables):]
      var_grads = [ops.cast(d_w, v.dtype) if _same_variable(v, w_var) else g
                   for v, g in zip(variables, var_grads)]
      return grads[:num_states + 1], var_grads

    return (out,) + tuple(final), grad

  result = run(xw, *states)
  return result[0], list(result[1:])


def _same_variable(v, keras_var):
  inner = getattr(keras_var, "value", keras_var)
  return v is keras_var or v is inner or \
      getattr(v, "handle", None) is getattr(inner, "handle", False)


def run_cell(cell, xw, states, training=False, defer_rec_grad=False,
             jit_body=False):
  """Runs ``cell`` over projected inputs ``xw`` (B, T, F) from ``states``.

  Recurrent dropout (training) draws one seed from the cell's SeedGenerator per
  call and a stateless mask per step from (seed, t).
  Returns (outputs (B, T, H), final states).
  """
  xw = ops.convert_to_tensor(xw)
  states = [ops.convert_to_tensor(s, dtype=xw.dtype) for s in states]
  base_seed = None
  if cell.uses_dropout(training):
    base_seed = tf.cast(cell.seed_generator.next(), tf.int32)
  if defer_rec_grad:
    return _deferred(cell, xw, list(states), bool(training), base_seed,
                     jit_body)
  return _loop(cell, xw, list(states), bool(training),
               ops.cast(cell.w_rec, xw.dtype), base_seed, jit_body=jit_body)
