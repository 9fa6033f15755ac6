"""Atomic file writing: nothing half-written is ever left under a final name.

Every output of the project is written to a temporary file in the same
folder and renamed into place (``os.replace`` is atomic on POSIX), so an
interrupted run leaves either the old file, the new file, or a stray
``.tmp-*`` file that no reader takes as complete.
"""
import contextlib
import errno
import os
import tempfile

import numpy as np

from utils.errors import UserError

DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS)


def ensure_dir(path, what="output directory"):
  """Creates ``path`` if needed and checks it is writable; UserError otherwise."""
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise UserError(f"cannot create {what} {path!r}: {e.strerror}") from None
  if not os.access(path, os.W_OK | os.X_OK):
    raise UserError(f"{what} {path!r} is not writable")
  return path


def check_writable(path, what="output"):
  """UserError unless ``path`` can be created or replaced, without creating
  anything yet: its nearest existing ancestor must be a writable folder."""
  path = os.path.abspath(path)
  parent = os.path.dirname(path)
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    raise UserError(f"{what} {path!r} cannot be created: {parent!r} is a file, "
                    f"not a folder")
  if not os.access(parent, os.W_OK | os.X_OK):
    raise UserError(f"{what} {path!r} cannot be created: folder {parent!r} is "
                    f"not writable")
  return path


def is_disk_error(err):
  """True for OSErrors that mean "cannot write here" (full disk, quota,
  permission, read-only file system): reported as a UserError, not a bug."""
  return isinstance(err, OSError) and err.errno in DISK_ERRNOS


@contextlib.contextmanager
def atomic_path(path):
  """Yields a temporary path next to ``path``; renames it to ``path`` on success.

  On any exception the temporary file is removed and ``path`` is untouched.
  A full disk or unwritable folder becomes a UserError naming ``path``.
  """
  folder = os.path.dirname(os.path.abspath(path)) or "."
  ensure_dir(folder)
  base = os.path.basename(path)
  # Keep the real suffix so libraries that add extensions (np.savez) do not.
  suffix = "".join(os.path.splitext(base)[1:]) or ".tmp"
  fd, tmp = tempfile.mkstemp(prefix=f".tmp-{base}-", suffix=suffix, dir=folder)
  os.close(fd)
  try:
    yield tmp
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; files are shared
    os.replace(tmp, path)
  except OSError as e:
    _remove_quietly(tmp)
    if is_disk_error(e):
      raise UserError(f"cannot write {path!r}: {e.strerror}") from None
    raise
  except BaseException:
    _remove_quietly(tmp)
    raise


@contextlib.contextmanager
def atomic_open(path, mode="wb"):
  """Opens a temporary file for writing; it becomes ``path`` only on success."""
  with atomic_path(path) as tmp:
    with open(tmp, mode) as f:
      yield f


def atomic_savez(path, compressed=True, **arrays):
  """``np.savez[_compressed]`` to ``path`` atomically."""
  with atomic_open(path, "wb") as f:
    (np.savez_compressed if compressed else np.savez)(f, **arrays)


def atomic_write_text(path, text):
  with atomic_open(path, "w") as f:
    f.write(text)


def _umask():
  mask = os.umask(0)
  os.umask(mask)
  return mask


def _remove_quietly(path):
  try:
    os.remove(path)
  except OSError:
    pass
