"""A HyperLSTM step's elementwise work as C++ kernels (model/fast/kernels/hyper_gates.cc).

Per time step, everything between the matmuls -- the main cell's
embedding-scaled gate pre-activations, the four layer norms and sigmoids of
each cell, the cell updates, their layer norms and tanh -- is ~110
TensorFlow ops in the forward and backward, each a pass over memory and a
scheduling round.  On CPU that, not the matmuls, set the recurrence's speed;
one kernel per cell and direction makes each a single pass.

The kernels are built and loaded by model/fast/native_ops.py.  Without a compiler,
on a failed build, on a GPU, under XLA (jit_compile), for other dtypes, or with
``RPCL_CPU_KERNELS=0`` the recurrence uses its TensorFlow-op path
(model/fast/hyper_recurrence.py), the same math; tests/test_fused_gates.py checks
the two agree.
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


def forward(ab, xm, hw, c_prev, mask, bias, gain, offset, c_gain, c_offset,
            epsilon):
  """-> (h, c, saved (B, 10H + 5)); ``mask`` (B, H) or None."""
  return kernels().rpcl_gates_forward(ab, xm, hw, c_prev, _mask(mask), bias,
                                      gain, offset, c_gain, c_offset,
                                      epsilon=epsilon)


def backward(ab, xm, hw, c_prev, mask, saved, dh, d_out, dc, gain, c_gain):
  """-> (d_ab (12, B, H), d_hwm (B, 4H), d_xm (B, 4H), dc_prev (B, H),
  pgrad (B, 14H))."""
  return kernels().rpcl_gates_backward(ab, xm, hw, c_prev, _mask(mask), saved,
                                       dh, d_out, dc, gain, c_gain)


def ln_cell_forward(xh, hw, hw_offset, hhw, c_prev, gain, offset, c_gain,
                    c_offset, epsilon):
  """The hyper cell's step from pre = xh + hw[:, hw_offset:][:, :4n] + hhw
  -> (h, c, saved (B, 10n + 5))."""
  return kernels().rpcl_ln_cell_forward(xh, hw, hhw, c_prev, gain, offset,
                                        c_gain, c_offset, epsilon=epsilon,
                                        hw_offset=hw_offset)


def ln_cell_backward(saved, dh_a, dh_b, dc, c_prev, gain, c_gain):
  """Given dL/dh = dh_a + dh_b and the carried dc -> (d_pre (B, 4n),
  dc_prev (B, n), pgrad (B, 10n))."""
  return kernels().rpcl_ln_cell_backward(saved, dh_a, dh_b, dc, c_prev, gain,
                                         c_gain)
