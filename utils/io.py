"""Atomic file writing: nothing half-written is ever left under a final name.

Every output of the project is written to a temporary file in the same
folder and renamed into place (``os.replace`` is atomic on POSIX), so an
interrupted run leaves either the old file, the new file, or a stray
``.tmp-*`` file that no reader takes as complete (and that the next write
to the same folder removes: see utils/ownership.py).

Each write is recorded in the folder's manifest under the writer's ``role``,
and a write never replaces a file that this program did not write under the
same role (utils/ownership.py): a typo in an output path cannot clobber a
user's file, a dataset or a checkpoint.
"""
import contextlib
import errno
import os
import shutil
import tempfile

import numpy as np

from utils import ownership
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
def atomic_path(path, role="output"):
  """Yields a temporary path next to ``path``; renames it to ``path`` on success.

  On any exception the temporary file is removed and ``path`` is untouched.
  A full disk or unwritable folder becomes a UserError naming ``path``; so
  does an existing ``path`` that ``role`` did not write (checked first).
  """
  folder = os.path.dirname(os.path.abspath(path)) or "."
  ensure_dir(folder)
  ownership.remove_leftovers(folder)
  ownership.check_replaceable(path, role)
  base = os.path.basename(path)
  # Keep the real suffix so libraries that add extensions (np.savez) do not.
  suffix = "".join(os.path.splitext(base)[1:]) or ".tmp"
  fd, tmp = tempfile.mkstemp(prefix=ownership.temp_prefix(base), suffix=suffix,
                             dir=folder)
  os.close(fd)
  try:
    yield tmp
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; files are shared
    os.replace(tmp, path)
    ownership.record(folder, [base], role)
  except OSError as e:
    _remove_quietly(tmp)
    if is_disk_error(e):
      raise UserError(f"cannot write {path!r}: {e.strerror}") from None
    raise
  except BaseException:
    _remove_quietly(tmp)
    raise


@contextlib.contextmanager
def atomic_open(path, mode="wb", role="output"):
  """Opens a temporary file for writing; it becomes ``path`` only on success."""
  with atomic_path(path, role) as tmp:
    with open(tmp, mode) as f:
      yield f


def atomic_savez(path, compressed=True, role="output", **arrays):
  """``np.savez[_compressed]`` to ``path`` atomically."""
  with atomic_open(path, "wb", role) as f:
    (np.savez_compressed if compressed else np.savez)(f, **arrays)


def atomic_write_text(path, text, role="output"):
  with atomic_open(path, "w", role) as f:
    f.write(text)


def publish_dir(output_dir, fill, role, flag="--output_dir"):
  """Calls fill(tmp) on a fresh folder next to ``output_dir``, records what it
  wrote, then renames it to ``output_dir``: readers never see a mixed folder.

  An existing ``output_dir`` is replaced only if every file in it is one this
  program wrote under ``role`` (utils/ownership.py); it is checked again just
  before the swap, and the old folder is deleted only after the new one is in
  place."""
  roles = (role,) if isinstance(role, str) else tuple(role)
  output_dir = os.path.abspath(output_dir)
  parent = os.path.dirname(output_dir)
  os.makedirs(parent, exist_ok=True)
  ownership.remove_leftovers(parent)
  ownership.check_replaceable_dir(output_dir, roles, flag)
  base = os.path.basename(output_dir)
  tmp = tempfile.mkdtemp(prefix=ownership.temp_prefix(base), dir=parent)
  old = None
  try:
    fill(tmp)
    ownership.record_tree(tmp, roles[0])
    if os.path.lexists(output_dir):
      ownership.check_replaceable_dir(output_dir, roles, flag)
      old = tmp + ".old"
      os.rename(output_dir, old)
      os.rename(tmp, output_dir)
    else:
      os.rename(tmp, output_dir)
  except BaseException as e:
    if old is not None and not os.path.lexists(output_dir):
      os.rename(old, output_dir)   # the swap failed half-way: put it back
    shutil.rmtree(tmp, ignore_errors=True)
    if is_disk_error(e):   # full disk, quota, read-only: one line, no traceback
      raise UserError(f"cannot write {flag}={output_dir!r}: "
                      f"{e.strerror}") from None
    raise
  if old is not None:
    shutil.rmtree(old, ignore_errors=True)


def _umask():
  mask = os.umask(0)
  os.umask(mask)
  return mask


def _remove_quietly(path):
  try:
    os.remove(path)
  except OSError:
    pass
