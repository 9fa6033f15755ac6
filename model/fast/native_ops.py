"""The project's C++ kernels (model/fast/kernels/*.cc): build on first use,
load, and the rule for when a traced function may use them.

All sources (``*.cc``, with their ``*.h``) are compiled together, with the
C++ compiler and the headers that ship with the TensorFlow wheel
(``tf.sysconfig``), into one library in ``model/fast/kernels/build/`` (or, if
that is not writable, a per-user folder in the temp directory), named by a
hash of the sources, TensorFlow's version and flags and the CPU, so a stale
build is never loaded.  Each kernel family (``GATES``: the HyperLSTM step,
model/fast/fused_gates.py; ``NORM``: the encoder's and image decoder's
instance norms, model/fast/fused_norm.py) can be switched off for A/B runs.
Without a compiler, on a failed build, on a GPU, under XLA (jit_compile), for
other dtypes than float32, or with ``RPCL_CPU_KERNELS=0`` the callers run the
same math as TensorFlow ops; ``RPCL_CPU_KERNELS=gates`` (a comma list of
families) keeps only those.
"""
import contextlib
import glob
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile

import tensorflow as tf

from utils.errors import UserError

try:   # TensorFlow's private API: no public way asks whether XLA traces
  from tensorflow.python.ops.control_flow_util import (
      GraphOrParentsInXlaContext as _in_xla_context)
except ImportError:   # moved in another TensorFlow: assume no XLA
  _in_xla_context = None

_HERE = os.path.dirname(os.path.abspath(__file__))
SOURCES = sorted(glob.glob(os.path.join(_HERE, "kernels", "*.cc")))
HEADERS = sorted(glob.glob(os.path.join(_HERE, "kernels", "*.h")))
GATES, NORM = "gates", "norm"
_state = {"module": None, "tried": False, "error": None}
_enabled = {GATES: True, NORM: True}
_env = {"read": False}
_CXXFLAGS = ["-shared", "-fPIC", "-O3", "-march=native", "-DNDEBUG", "-w"]
# Off when the compiler knows them: the Eigen headers of the TensorFlow wheel
# do not compile with AVX512-FP16 on (g++ 12, Sapphire Rapids); the kernels
# use no half-precision code.
_OPTIONAL_OFF = ["-mno-avx512fp16"]


def _apply_env():
  """RPCL_CPU_KERNELS: unset or 1 (all families), 0 (none) or a comma list."""
  if _env["read"]:
    return
  _env["read"] = True
  value = os.environ.get("RPCL_CPU_KERNELS", "1").strip()
  if value in ("0", "1", ""):
    return
  names = {name.strip() for name in value.split(",") if name.strip()}
  unknown = names - set(_enabled)
  if unknown:
    raise UserError(f"RPCL_CPU_KERNELS={value!r}: unknown kernel famil"
                    f"{'ies' if len(unknown) > 1 else 'y'} "
                    f"{', '.join(sorted(unknown))}; expected 0, 1 or a comma "
                    f"list of {', '.join(sorted(_enabled))}")
  for family in _enabled:
    _enabled[family] = family in names


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


def _compiler():
  """The C++ compiler (``$CXX``, default g++), or None."""
  cxx = os.environ.get("CXX", "g++")
  return cxx if shutil.which(cxx) else None


def _accepts(cxx, flag):
  """Whether ``cxx`` knows the command-line option ``flag``."""
  proc = subprocess.run([cxx, flag, "-x", "c++", "-E", "-o", os.devnull,
                         os.devnull], capture_output=True)
  return proc.returncode == 0


def compile_flags():
  """The flags the kernels are built with here: _CXXFLAGS, the _OPTIONAL_OFF
  options the compiler knows (one preprocessor run each, so only when
  building), and TensorFlow's own."""
  cxx = _compiler()
  optional = [f for f in _OPTIONAL_OFF if cxx and _accepts(cxx, f)]
  return _CXXFLAGS + optional + tf.sysconfig.get_compile_flags()


def _compile(target):
  """g++ into a temporary name beside ``target``, then an atomic rename."""
  cxx = _compiler()
  if cxx is None:
    raise RuntimeError(f"no C++ compiler ({os.environ.get('CXX', 'g++')})")
  tmp = f"{target}.tmp{os.getpid()}"
  cmd = ([cxx, *compile_flags(), *SOURCES, "-o", tmp]
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
  digest = hashlib.sha256()
  for source in SOURCES + HEADERS:
    with open(source, "rb") as f:
      digest.update(f.read())
  # The flag lists, not the probe's outcome: loading an existing build runs
  # no compiler.
  digest.update(tf.__version__.encode() + " ".join(
      _CXXFLAGS + _OPTIONAL_OFF + tf.sysconfig.get_compile_flags()).encode()
                + _cpu_id().encode())
  name = f"rpcl_kernels-{digest.hexdigest()[:16]}.so"
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
  """The loaded op module, or None (then TensorFlow ops are used)."""
  if not _state["tried"]:
    _state["tried"] = True
    if os.environ.get("RPCL_CPU_KERNELS", "1") == "0":
      _state["error"] = "disabled by RPCL_CPU_KERNELS=0"
    else:
      try:
        _state["module"] = tf.load_op_library(library_path())
      except (RuntimeError, OSError, tf.errors.NotFoundError) as exc:
        _state["error"] = str(exc)
        logging.warning("C++ kernels unavailable (%s); using TensorFlow ops",
                        exc)
  return _state["module"]


def unavailable_reason():
  """Why ``kernels()`` is None (for test skips)."""
  kernels()
  return _state["error"]


@contextlib.contextmanager
def disabled(*families):
  """Within the block, functions are traced without these kernel families
  (all of them when none is named): the benchmarks' and tests' A/B.
  Functions traced before keep their path."""
  _apply_env()
  families = families or tuple(_enabled)
  before = dict(_enabled)
  for family in families:
    _enabled[family] = False
  try:
    yield
  finally:
    _enabled.update(before)


def _tracing_for_xla():
  """Whether the function being traced is XLA-compiled (jit_compile=True):
  XLA cannot compile a custom op."""
  if _in_xla_context is None:
    return False
  return _in_xla_context(tf.compat.v1.get_default_graph())


def usable(family, dtype):
  """Whether code computing in ``dtype`` takes a kernel of ``family`` here:
  switched on, float32, CPU, not under XLA, kernels built."""
  _apply_env()
  if not _enabled[family] or tf.as_dtype(dtype) != tf.float32:
    return False
  if _tracing_for_xla():
    return False
  if tf.config.list_logical_devices("GPU"):
    return False
  return kernels() is not None
