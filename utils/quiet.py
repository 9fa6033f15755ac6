"""Quiet TensorFlow start-up for the command-line programs.

Every entry point imports this module first, before anything imports
TensorFlow.  TensorFlow's C++ side prints lines that say nothing about the
user's run: INFO lines written before its logging is initialised (the oneDNN
notice, "Could not find cuda drivers", the CPU-instructions notice), which
``TF_CPP_MIN_LOG_LEVEL`` does not reach, and on a machine without a GPU an
ERROR line "failed call to cuInit".  This module

* sets ``TF_CPP_MIN_LOG_LEVEL=2`` (unless it is set already): C++ INFO and
  WARNING lines after start-up are hidden, errors are shown;
* drops the Python INFO records of TensorFlow and Keras (the ``tensorflow``
  logger set to WARNING, and a filter on the ``absl`` logger for records
  from their files, e.g. the checkpoint saver's "Sharding callback
  duration"), which absl's handler prints under ``app.run``;
* installs an import hook: the first ``import tensorflow`` and TensorFlow's
  device discovery (where cuInit runs) happen with file descriptor 2 sent to
  a temporary file, which is then written back to stderr without the
  start-up lines of :data:`NOISE`.  Anything else (Python warnings, real
  errors) is kept; when the import fails, everything is written back.

``--verbosity=1`` (absl's debug level, also ``-v 1``) on the command line or
``RPCL_TF_LOGS=1`` in the environment turns all of this off, so TensorFlow
logs as it normally does.  Importing this module never imports TensorFlow
(only absl's logging, before any logger is created, so that loggers get
absl's class as they would without it).
"""
import importlib.abc
import importlib.util
import logging
import os
import re
import sys
import tempfile

from absl import logging as absl_logging   # first: it sets the logger class

ENV_VAR = "RPCL_TF_LOGS"
NOISE = re.compile("|".join([
    r"WARNING: All log messages before absl::InitializeLog\(\) is called "
    r"are written to STDERR",
    # C++ INFO / WARNING records: "I0000 00:00:1796.5   11363 port.cc:153] ..."
    r"[IW]\d{4} [\d:.]+ +\d+ [^\]]+\] .*",
    r"E\d{4} [\d:.]+ +\d+ [^\]]+\] (failed call to cuInit|Unable to register "
    r"cu\w+ factory|.*computation placer already registered).*",
    r"To enable the following instructions: .*rebuild TensorFlow with the "
    r"appropriate compiler flags\.",
]))


def verbose(argv=None, environ=None):
  """True when TensorFlow's own logging is wanted: ``RPCL_TF_LOGS`` set to
  anything but ''/'0', or ``--verbosity`` / ``-v`` >= 1 in ``argv``."""
  argv = sys.argv if argv is None else argv
  environ = os.environ if environ is None else environ
  if environ.get(ENV_VAR, "") not in ("", "0"):
    return True
  for i, arg in enumerate(argv[1:], start=1):
    for name in ("--verbosity", "-v", "--v"):
      if arg == name and i + 1 < len(argv):
        value = argv[i + 1]
      elif arg.startswith(name + "="):
        value = arg[len(name) + 1:]
      else:
        continue
      try:
        if int(value) >= 1:
          return True
      except ValueError:
        pass
  return False


def strip_noise(text):
  """``text`` without the lines that :data:`NOISE` matches."""
  kept = [line for line in text.splitlines(keepends=True)
          if not NOISE.fullmatch(line.rstrip("\r\n"))]
  return "".join(kept)


def run_with_stderr_filtered(fn):
  """``fn()`` with file descriptor 2 captured; the captured text goes back to
  stderr through :func:`strip_noise` (unfiltered if ``fn`` raises)."""
  try:
    sys.stderr.flush()
    saved = os.dup(2)
  except (OSError, ValueError, AttributeError):   # no usable fd 2: no capture
    return fn()
  failed = True
  with tempfile.TemporaryFile() as tmp:
    os.dup2(tmp.fileno(), 2)
    try:
      result = fn()
      failed = False
    finally:
      try:
        sys.stderr.flush()
      except (OSError, ValueError):
        pass
      os.dup2(saved, 2)
      os.close(saved)
      tmp.seek(0)
      text = tmp.read().decode("utf-8", "replace")
      text = text if failed else strip_noise(text)
      if text:
        sys.stderr.write(text)
        sys.stderr.flush()
  return result


class _QuietLoader(importlib.abc.Loader):
  """Runs the real loader of ``tensorflow`` under run_with_stderr_filtered."""

  def __init__(self, loader):
    self._loader = loader

  def create_module(self, spec):
    return self._loader.create_module(spec)

  def exec_module(self, module):
    def load():
      self._loader.exec_module(module)
      module.config.list_physical_devices()   # device discovery: cuInit
    run_with_stderr_filtered(load)

  def __getattr__(self, name):   # get_resource_reader, is_package, ...
    return getattr(self._loader, name)


class _TensorFlowFinder(importlib.abc.MetaPathFinder):
  """Meta-path finder that wraps the loader of the first ``tensorflow``."""

  def find_spec(self, name, path=None, target=None):
    if name != "tensorflow":
      return None
    uninstall()
    spec = importlib.util.find_spec(name)
    if spec is not None and spec.loader is not None:
      spec.loader = _QuietLoader(spec.loader)
    return spec


_FINDER = _TensorFlowFinder()
_LIBRARIES = tuple(f"{os.sep}{name}{os.sep}" for name in ("tensorflow", "keras"))


def _drop_library_info(record):
  """logging filter: False for INFO/DEBUG records logged from TensorFlow's
  or Keras's own files (this project logs nothing below WARNING)."""
  return record.levelno >= logging.WARNING or not any(
      lib in record.pathname for lib in _LIBRARIES)


def uninstall():
  """Removes the import hook (it removes itself at the first import)."""
  if _FINDER in sys.meta_path:
    sys.meta_path.remove(_FINDER)


def install():
  """Quiets TensorFlow's start-up unless :func:`verbose`; a no-op once
  TensorFlow is imported."""
  if verbose() or "tensorflow" in sys.modules:
    return
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  logging.getLogger("tensorflow").setLevel(logging.WARNING)
  absl_logger = absl_logging.get_absl_logger()
  if _drop_library_info not in absl_logger.filters:
    absl_logger.addFilter(_drop_library_info)
  if _FINDER not in sys.meta_path:
    sys.meta_path.insert(0, _FINDER)


install()
