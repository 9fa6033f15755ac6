"""A HyperLSTM step's elementwise work as C++ kernels (model/kernels/hyper_gates.cc).

Per time step, everything between the matmuls -- the main cell's
embedding-scaled gate pre-activations, the four layer norms and sigmoids of
each cell, the cell updates, their layer norms and tanh -- is ~110
TensorFlow ops in the forward and backward, each a pass over memory and a
scheduling round.  On CPU that, not the matmuls, set the recurrence's speed;
one kernel per cell and direction makes each a single pass.

The kernels are compiled on first use with the C++ compiler and the headers
that ship with the TensorFlow wheel (``tf.sysconfig``), into
``model/kernels/build/`` (or, if that is not writable, a per-user folder in
the temp directory), named by a hash of the source, TensorFlow's version and
flags and the CPU, so a stale build is never loaded.  Without a compiler, on
a failed build, on a GPU, under XLA (jit_compile), for other dtypes, or with
``RPCL_FUSED_GATES=0`` the recurrence uses its TensorFlow-op path
(model/hyper_recurrence.py), the same math; tests/test_fused_gates.py checks
the two agree.
"""
import contextlib
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile

import tensorflow as tf

_HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(_HERE, "kernels", "hyper_gates.cc")
_state = {"module": None, "tried": False, "error": None}
_CXXFLAGS = ["-shared", "-fPIC", "-O3", "-march=native", "-DNDEBUG", "-w"]


def _cpu_id():
  """The CPU flags line (-march=native code must not run on another CPU)."""
  try:
    with open("/proc/cpuinfo") as f:
      return next((line for line in f if line.startswith("flags")), "")
  except OSError:
    return ""


def _build_dirs():
  yield os.path.join(_HERE, "kernels", "build")
  yield os.path.join(tempfile.gettempdir(), f"rpcl-kernels-{os.getuid()}")


def _compile(target):
  """g++ into a temporary name beside ``target``, then an atomic rename."""
  cxx = os.environ.get("CXX", "g++")
  if shutil.which(cxx) is None:
    raise RuntimeError(f"no C++ compiler ({cxx})")
  tmp = f"{target}.tmp{os.getpid()}"
  cmd = ([cxx, *_CXXFLAGS, *tf.sysconfig.get_compile_flags(), SOURCE, "-o",
          tmp]
         + tf.sysconfig.get_link_flags())
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
      raise RuntimeError("compile failed: " + proc.stderr.strip()[-500:])
    os.replace(tmp, target)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def library_path():
  """Where the built kernels are (building them if absent)."""
  with open(SOURCE, "rb") as f:
    key = hashlib.sha256(f.read() + tf.__version__.encode() + " ".join(
        _CXXFLAGS + tf.sysconfig.get_compile_flags()).encode()
                         + _cpu_id().encode()).hexdigest()[:16]
  name = f"hyper_gates-{key}.so"
  errors = []
  for folder in _build_dirs():
    target = os.path.join(folder, name)
    if os.path.exists(target):
      return target
    try:
      os.makedirs(folder, exist_ok=True)
      _compile(target)
      return target
    except (OSError, RuntimeError) as exc:
      errors.append(str(exc))
  raise RuntimeError("; ".join(errors))


def kernels():
  """The loaded op module, or None (then the TensorFlow-op path is used)."""
  if not _state["tried"]:
    _state["tried"] = True
    if os.environ.get("RPCL_FUSED_GATES", "1") == "0":
      _state["error"] = "disabled by RPCL_FUSED_GATES=0"
    else:
      try:
        _state["module"] = tf.load_op_library(library_path())
      except (RuntimeError, OSError, tf.errors.NotFoundError) as exc:
        _state["error"] = str(exc)
        logging.warning("fused HyperLSTM kernels unavailable (%s); using "
                        "TensorFlow ops", exc)
  return _state["module"]


_enabled = {"on": True}


def set_enabled(on):
  """Switch the fused path on / off for recurrences traced from now on (the
  benchmarks' and tests' A/B; already-traced functions keep their path)."""
  _enabled["on"] = bool(on)


@contextlib.contextmanager
def disabled():
  """Within the block, recurrences are traced with the TensorFlow-op path."""
  before = _enabled["on"]
  set_enabled(False)
  try:
    yield
  finally:
    set_enabled(before)


def _tracing_for_xla():
  """Whether the function being traced is XLA-compiled (jit_compile=True):
  XLA cannot compile a custom op."""
  try:
    from tensorflow.python.framework import ops
    from tensorflow.python.ops import control_flow_util
    return control_flow_util.GraphOrParentsInXlaContext(ops.get_default_graph())
  except (ImportError, AttributeError):
    return False


def usable(dtype):
  """Whether a recurrence computing in ``dtype`` takes the fused path here:
  float32, CPU, not under XLA, kernels built."""
  if not _enabled["on"] or tf.as_dtype(dtype) != tf.float32:
    return False
  if _tracing_for_xla():
    return False
  if tf.config.list_logical_devices("GPU"):
    return False
  return kernels() is not None


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
