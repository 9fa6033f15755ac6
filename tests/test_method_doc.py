"""docs/method.md stays true to the code: every function its equation table
names exists (found by parsing the source, no imports), and every numbered
equation appears in the table exactly as numbered in the text."""
import ast
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "method.md")


def _doc():
  with open(DOC, encoding="utf-8") as f:
    return f.read()


def _table_rows(text):
  """(equation cell, [dotted names]) for each row of the §10 table."""
  section = text.split("## 10.", 1)[1]
  rows = []
  for line in section.splitlines():
    cells = [c.strip() for c in
             re.split(r"(?<!\\)\|", line.strip().strip("|"))]  # "\|" is text
    if len(cells) == 3 and cells[0].startswith("("):
      rows.append((cells[0], re.findall(r"`([\w.]+)`", cells[2])))
  return rows


def _expand(cell):
  """'(23), (28)' / '(14)-(15)' -> {23, 28} / {14, 15}."""
  numbers = set()
  for part in cell.split(","):
    bounds = [int(n) for n in re.findall(r"\((\d+)\)", part)]
    numbers.update(range(bounds[0], bounds[-1] + 1))
  return numbers


def _defined(module_path, names):
  """Whether ``names`` (e.g. ["Encoder", "call"]) is defined in the module file."""
  with open(module_path, encoding="utf-8") as f:
    body = ast.parse(f.read()).body
  for name in names:
    found = [node for node in body
             if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and
             node.name == name]
    if not found:
      return False
    body = getattr(found[0], "body", [])
  return True


def _resolve(dotted):
  """'model.hierarchy.Hierarchy.update' -> (file, ['Hierarchy', 'update'])."""
  parts = dotted.split(".")
  for cut in range(len(parts) - 1, 0, -1):
    path = os.path.join(ROOT, *parts[:cut]) + ".py"
    if os.path.isfile(path):
      return path, parts[cut:]
  return None, parts


def test_every_named_function_exists():
  rows = _table_rows(_doc())
  assert len(rows) > 40
  missing = []
  for _, names in rows:
    assert names, "a table row names no function"
    for dotted in names:
      path, attrs = _resolve(dotted)
      if path is None or not _defined(path, attrs):
        missing.append(dotted)
  assert not missing, f"docs/method.md names functions that do not exist: {missing}"


def test_equations_numbered_in_order_and_all_in_table():
  text = _doc()
  body = text.split("## 10.", 1)[0]
  # Equation labels end a formula line: "...    (12)".
  labels = [int(n) for n in re.findall(r"^ {4,}.*\s\((\d+)\)\s*$", body, re.M)]
  assert labels == list(range(1, len(labels) + 1)), labels
  assert f"(1)-({len(labels)})" in text   # the count stated in the preface
  in_table = set()
  for cell, _ in _table_rows(text):
    in_table |= _expand(cell)
  assert in_table == set(labels)


def _docstring(module_path, names):
  """The docstring of ``names`` in the module file ('' when it has none)."""
  with open(module_path, encoding="utf-8") as f:
    node = ast.parse(f.read())
  for name in names:
    node = next(n for n in node.body
                if isinstance(n, (ast.FunctionDef, ast.ClassDef))
                and n.name == name)
  return ast.get_docstring(node) or ""


def test_every_named_function_cites_its_equations():
  """Where the code is read, it names the equations it computes: the
  docstring of each function in the table cites at least one of its row's
  numbers as "(n)" (a range "(14)-(15)" cites both ends)."""
  silent = []
  for cell, names in _table_rows(_doc()):
    wanted = _expand(cell)
    for dotted in names:
      path, attrs = _resolve(dotted)
      doc = _docstring(path, attrs)
      cited = set()
      for match in re.finditer(r"\((\d+)\)(?:\s*-\s*\((\d+)\))?", doc):
        low = int(match.group(1))
        cited.update(range(low, int(match.group(2) or low) + 1))
      if not cited & wanted:
        silent.append(f"{dotted} {cell}")
  assert not silent, f"docstrings that cite none of their equations: {silent}"
