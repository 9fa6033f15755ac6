"""A HyperLSTM step's elementwise work, (12) and (14)-(15) of docs/method.md,
as C++ kernels (model/fast/kernels/hyper_gates.cc).

Per time step, everything between the matmuls -- the main cell's
embedding-scaled gate pre-activations, the four layer norms and sigmoids of
each cell, the cell updates, their layer norms and tanh -- is ~110
TensorFlow ops in the forward and backward, each a pass over memory and a
scheduling round.  On CPU that, not the matmuls, set the recurrence's speed;
one kernel per cell and direction makes each a single pass.

The kernels are built and loaded by model/fast/native_ops.py.  Without a
compiler, on a failed build, on a GPU, under XLA (jit_compile), for other
dtypes, or with ``RPCL_CPU_KERNELS=0`` the recurrence uses its TensorFlow-op
path (model/fast/hyper_recurrence.py), the same math; tests/test_fused_gates.py
checks the two agree.

The kernels' ``activations`` rows (B, 10n + 5), n = H or Nh, keep what their
backward reads (model/fast/kernels/ln_lstm_row.h); their ``param_factors``
rows are the per-row gradients of the layer norms' parameters:
[gates gain (4n) | gates offset (4n) | c gain (n) | c offset (n)], for the
main cell followed by dL/d pre (4H), the gate bias's.
"""
import tensorflow as tf

from model.fast import native_ops
from model.fast.native_ops import kernels


def usable(dtype):
  """Whether a recurrence computing in ``dtype`` takes the fused path here."""
  return native_ops.usable(native_ops.GATES, dtype)


def disabled():
  """Within the block, recurrences are traced with the TensorFlow-op path."""
  return native_ops.disabled(native_ops.GATES)


def _mask(mask):
  """The kernels take no dropout as an empty mask."""
  return tf.zeros([0], tf.float32) if mask is None else mask


def forward(factors, x_main, hw, c_prev, mask, bias, gain, offset, c_gain,
            c_offset, epsilon):
  """The main cell's (14)-(15) from the factors (12, B, H) of (13), its
  input part x_main (B, 4H) and hw (B, 4H + 4Nh); ``mask`` (B, H) or None.
  -> (h, c, activations (B, 10H + 5))."""
  return kernels().rpcl_gates_forward(factors, x_main, hw, c_prev, _mask(mask),
                                      bias, gain, offset, c_gain, c_offset,
                                      epsilon=epsilon)


def backward(factors, x_main, hw, c_prev, mask, activations, dh, d_out, dc,
             gain, c_gain):
  """The gradient of ``forward`` given dL/dh = dh + d_out and the carried
  dc -> (d_factors (12, B, H), d_hw_main (B, 4H), d_x_main (B, 4H), dc_prev
  (B, H), param_factors (B, 14H))."""
  return kernels().rpcl_gates_backward(factors, x_main, hw, c_prev,
                                       _mask(mask), activations, dh, d_out, dc,
                                       gain, c_gain)


def ln_cell_forward(x_hyper, hw, hw_offset, hyper_hw, c_prev, gain, offset,
                    c_gain, c_offset, epsilon):
  """The hyper cell's (12) from pre = x_hyper + hw[:, hw_offset:][:, :4n] +
  hyper_hw (hyper_h @ hyper_w_rec) -> (h, c, activations (B, 10n + 5))."""
  return kernels().rpcl_ln_cell_forward(x_hyper, hw, hyper_hw, c_prev, gain,
                                        offset, c_gain, c_offset,
                                        epsilon=epsilon, hw_offset=hw_offset)


def ln_cell_backward(activations, dh_a, dh_b, dc, c_prev, gain, c_gain):
  """The gradient of ``ln_cell_forward`` given dL/dh = dh_a + dh_b and the
  carried dc -> (d_pre (B, 4n), dc_prev (B, n), param_factors (B, 10n))."""
  return kernels().rpcl_ln_cell_backward(activations, dh_a, dh_b, dc, c_prev,
                                         gain, c_gain)
