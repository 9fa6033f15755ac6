"""The import graph (DESIGN.md): data/ -> model/ -> programs, no back-edges,
no module importing a program, one flag convention.

Read from the source with ``ast`` (nothing is imported): every ``import`` /
``from`` statement of every project file, wherever it sits in the file.
"""
import ast
import glob
import os

from tests.conftest import ROOT

# Top-level programs: only ever run, never imported (their flags are defined
# at import time, so two of them in one process would clash).
PROGRAMS = {"train", "sample", "visualization", "evaluate", "demo",
            "explore", "export", "experiments.real_data"}


def project_files():
  out = {}
  for path in glob.glob(os.path.join(ROOT, "**", "*.py"), recursive=True):
    rel = os.path.relpath(path, ROOT)
    if rel.split(os.sep)[0] in ("tests", "benchmarks") or "venv" in rel:
      continue
    out[rel[:-3].replace(os.sep, ".")] = path
  return out


def imported_modules(path):
  """Dotted names this file imports (``from a import b`` gives a and a.b)."""
  with open(path) as f:
    tree = ast.parse(f.read())
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      names.add(node.module)
      names.update(f"{node.module}.{alias.name}" for alias in node.names)
  return names


def test_no_module_imports_a_program():
  tests = glob.glob(os.path.join(ROOT, "tests", "*.py"))
  benches = glob.glob(os.path.join(ROOT, "benchmarks", "*.py"))
  files = list(project_files().values()) + tests + benches
  bad = {os.path.relpath(p, ROOT): sorted(imported_modules(p) & PROGRAMS)
         for p in files}
  assert not {k: v for k, v in bad.items() if v}


def test_layers_have_no_back_edges():
  """data/ imports neither model/ nor a program; model/ and utils/ import
  no program (checked above) and utils/ nothing of model/."""
  for name, path in project_files().items():
    top = name.split(".")[0]
    used = {m.split(".")[0] for m in imported_modules(path)}
    if top == "data":
      assert "model" not in used, name
    if top == "utils":
      assert "model" not in used and "data" not in used, name


# model/'s layers, lowest first: a module may import its own layer and the
# ones below it, never one above (README "Code map").  "method" is the files
# at the top of model/ (the model class, hierarchy, losses, ...).
MODEL_LAYERS = ["fast", "networks", "method", "storage", "inference", "tf1",
                "training"]


def model_layer(name):
  """The layer of a dotted model module name (None outside model/)."""
  parts = name.split(".")
  if parts[0] != "model" or len(parts) < 2:
    return None
  return parts[1] if parts[1] in MODEL_LAYERS else "method"


def test_model_layers_only_import_downwards():
  """networks never import the training machinery, the method never imports
  inference or training, the fast paths import nothing of the model above
  them, ... (MODEL_LAYERS)."""
  rank = {layer: i for i, layer in enumerate(MODEL_LAYERS)}
  # tf1 (the checkpoint importer) and inference sit side by side.
  side_by_side = {("tf1", "inference"), ("inference", "tf1")}
  bad = []
  for name, path in project_files().items():
    mine = model_layer(name)
    if mine is None:
      continue
    for used in imported_modules(path):
      theirs = model_layer(used)
      if (theirs is not None and rank[theirs] > rank[mine]
          and (mine, theirs) not in side_by_side):
        bad.append(f"{name} ({mine}) imports {used} ({theirs})")
  assert not bad, bad


def _flag_definitions(path):
  """(line, guarded) of each flags.DEFINE_* call: guarded = inside
  ``if __name__ == "__main__":``; also whether any uses allow_override."""
  with open(path) as f:
    tree = ast.parse(f.read())
  guarded_nodes = set()
  for node in tree.body:
    if (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
        and getattr(node.test.left, "id", None) == "__name__"):
      guarded_nodes.update(id(n) for n in ast.walk(node))
  calls = []
  for node in ast.walk(tree):
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        and node.func.attr.startswith("DEFINE_")):
      override = any(k.arg == "allow_override" or k.arg is None
                     for k in node.keywords)
      calls.append((node.lineno, id(node) in guarded_nodes, override))
  return calls


def test_one_flag_convention():
  """Flags sit at the top of the file: at module level in the programs (which
  nothing imports), under ``if __name__ == "__main__":`` in any module that
  another file imports (data/*.py, model/tf1/import_tf1.py), so that importing it
  defines no flag; nothing needs allow_override."""
  files = project_files()
  assert PROGRAMS <= set(files)
  everything = (list(files.values())
                + glob.glob(os.path.join(ROOT, "tests", "*.py"))
                + glob.glob(os.path.join(ROOT, "benchmarks", "*.py")))
  imported = set().union(*(imported_modules(p) for p in everything))
  for name, path in files.items():
    for line, guarded, override in _flag_definitions(path):
      assert not override, f"{name}:{line} allow_override"
      if name in PROGRAMS:
        assert not guarded, f"{name}:{line}: a program defines flags at import"
      if name in imported:
        assert guarded, f"{name}:{line}: imported, so flags under __main__"
