"""What this program may delete or replace: only what it can prove it wrote.

Every file written through ``utils.io`` is recorded in a manifest, the hidden
file ``.rpcl-outputs.json`` of its folder, with its SHA-256 and the *role* of
the writer (``train``, ``sample``, ``visualization``, ``evaluate``, ``data``,
...).  A command may replace an existing file only when the manifest records
it under the same role and the file is unchanged since; it may replace a
whole folder only when every file in it is recorded there.  Anything else is
"in the way": the command stops with one line naming it and touches nothing.

Output locations are also checked against the inputs of the same call: an
output that is, contains or lies inside the model folder or the data folder
is refused outright.  Paths are compared after ``realpath``, so relative
paths, trailing slashes and symlinks to the same place are the same place.

Temporary names carry the writer's process id (``.tmp-<name>-rpcl<pid>-*``),
so leftovers of a killed run are provably ours and provably abandoned (no
live process has that id); ``remove_leftovers`` deletes exactly those.
"""
import hashlib
import json
import os
import re
import shutil

from utils.errors import UserError

MANIFEST = ".rpcl-outputs.json"
TEMP_TAG = "rpcl"
# A samples folder holds sample.py's outputs and the figures / evaluation
# written next to them; sample.py --overwrite may replace exactly those.
SAMPLE_ROLES = ("sample", "visualization", "evaluate")


def real(path):
  """The canonical absolute form of ``path`` (symlinks resolved)."""
  return os.path.realpath(os.path.abspath(os.path.expanduser(str(path))))


def relation(path, other):
  """How ``path`` sits relative to ``other``: 'is', 'lies inside',
  'contains' or None (disjoint), after resolving both."""
  a, b = real(path), real(other)
  if a == b:
    return "is"
  if os.path.commonpath([a, b]) == b:
    return "lies inside"
  if os.path.commonpath([a, b]) == a:
    return "contains"
  return None


def refuse_overlap(flag, path, protected):
  """UserError if the output ``path`` (given as ``flag``) is, contains or
  lies inside any folder of ``protected``: pairs (description, folder)."""
  for what, folder in protected:
    if not folder:
      continue
    rel = relation(path, folder)
    if rel is not None:
      raise UserError(f"{flag}={path!r} {rel} {what} {folder!r}: refusing to "
                      f"write there; choose an output folder outside it")


# --- the manifest -------------------------------------------------------------

def sha256(path):
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def load_manifest(folder):
  """{relative path: {"sha256": ..., "role": ...}} recorded in ``folder``."""
  try:
    with open(os.path.join(folder, MANIFEST)) as f:
      files = json.load(f).get("files", {})
    return files if isinstance(files, dict) else {}
  except (OSError, ValueError, AttributeError):
    return {}


def record(folder, relpaths, role):
  """Adds the files ``relpaths`` (relative to ``folder``) to its manifest."""
  files = load_manifest(folder)
  for rel in relpaths:
    files[rel] = {"sha256": sha256(os.path.join(folder, rel)), "role": role}
  _write_manifest(folder, files)


def record_tree(folder, role):
  """Records every file under ``folder`` (a folder this program just filled)."""
  record(folder, [rel for rel in _walk(folder) if rel != MANIFEST], role)


def remove_owned(path, role):
  """Deletes the file ``path`` if ``role`` wrote it (else UserError) and
  drops it from the manifest; the manifest goes when it lists nothing."""
  check_replaceable(path, role)
  if os.path.lexists(path):
    os.remove(path)
  forget(os.path.dirname(os.path.abspath(path)), [os.path.basename(path)])


def forget(folder, relpaths):
  """Drops entries from ``folder``'s manifest (files this program deleted)."""
  files = load_manifest(folder)
  if not any(rel in files for rel in relpaths):
    return
  for rel in relpaths:
    files.pop(rel, None)
  if files:
    _write_manifest(folder, files)
  else:
    os.remove(os.path.join(folder, MANIFEST))


def _write_manifest(folder, files):
  tmp = os.path.join(folder, f".tmp-{MANIFEST}-{TEMP_TAG}{os.getpid()}")
  with open(tmp, "w") as f:
    json.dump({"program": "rpcl-pix2seqh", "files": files}, f, indent=1,
              sort_keys=True)
  os.replace(tmp, os.path.join(folder, MANIFEST))


def owned(path, roles):
  """True if the existing file ``path`` is recorded in its folder's manifest
  under one of ``roles`` (a str or a collection) and is unchanged since."""
  roles = {roles} if isinstance(roles, str) else set(roles)
  folder, name = os.path.split(os.path.abspath(path))
  entry = load_manifest(folder).get(name)
  if (not entry or entry.get("role") not in roles or os.path.islink(path)
      or not os.path.isfile(path)):
    return False
  return entry.get("sha256") == sha256(path)


def check_replaceable(path, role, flag="output"):
  """UserError unless ``path`` is absent or a file ``role`` wrote itself."""
  if not os.path.lexists(path):
    return
  if os.path.isdir(path) and not os.path.islink(path):
    raise UserError(f"{flag}: {path!r} is a folder, expected a file path")
  if not owned(path, role):
    raise UserError(f"{flag}: {path!r} already exists and was not written by "
                    f"this program's {role} step (or was changed since); move "
                    f"it away or choose another path")


def foreign_files(folder, roles):
  """Relative paths under ``folder`` that are not provably ours: not in its
  manifest under ``roles``, changed since, symlinks, or other entries.
  Abandoned temporaries of ours and empty folders do not count."""
  files = load_manifest(folder)
  roles = {roles} if isinstance(roles, str) else set(roles)
  out = []
  for rel in _walk(folder, include_links=True):
    if rel == MANIFEST or is_abandoned_temp(os.path.basename(rel)):
      continue
    path = os.path.join(folder, rel)
    entry = files.get(rel)
    if (os.path.islink(path) or not entry or entry.get("role") not in roles
        or entry.get("sha256") != sha256(path)):
      out.append(rel)
  return out


def check_replaceable_dir(folder, roles, flag):
  """UserError unless ``folder`` is absent, empty, or holds only files this
  program recorded under ``roles`` (then it may be replaced as a whole)."""
  if not os.path.lexists(folder):
    return
  if os.path.islink(folder) or not os.path.isdir(folder):
    raise UserError(f"{flag}={folder!r} is not a folder (a file or a link): "
                    f"refusing to replace it")
  foreign = foreign_files(folder, roles)
  if foreign:
    shown = ", ".join(repr(f) for f in sorted(foreign)[:3])
    more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
    raise UserError(f"{flag}={folder!r} holds files this program did not write "
                    f"({shown}{more}): refusing to replace it; move them away "
                    f"or choose another folder")


def _walk(folder, include_links=False):
  for root, dirs, names in os.walk(folder):
    if include_links:
      names = names + [d for d in dirs if os.path.islink(os.path.join(root, d))]
    for name in names:
      yield os.path.relpath(os.path.join(root, name), folder)


# --- temporaries --------------------------------------------------------------

def temp_prefix(name):
  """Prefix of this process's temporary names for the final name ``name``."""
  return f".tmp-{name}-{TEMP_TAG}{os.getpid()}-"


_TEMP_RE = re.compile(r"^\.tmp-.*-" + TEMP_TAG + r"(\d+)-")


def is_abandoned_temp(name):
  m = _TEMP_RE.match(name)
  return bool(m) and not _alive(int(m.group(1)))


def _alive(pid):
  if pid == os.getpid():
    return True
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def remove_leftovers(folder):
  """Deletes the temporaries in ``folder`` that a killed run of this program
  left (their writer process no longer exists); returns their names."""
  removed = []
  try:
    names = os.listdir(folder)
  except OSError:
    return removed
  for name in names:
    if not is_abandoned_temp(name):
      continue
    path = os.path.join(folder, name)
    if os.path.isdir(path) and not os.path.islink(path):
      shutil.rmtree(path, ignore_errors=True)
    else:
      try:
        os.remove(path)
      except OSError:
        continue
    removed.append(name)
  return removed
