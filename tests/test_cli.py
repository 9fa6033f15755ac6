"""Every command-line program: found, quiet, documented.

The entry points are the files that call ``app.run`` (benchmarks/run_all.py
stands for the benchmarks).  Each imports utils.quiet before anything that
can import TensorFlow, its ``--help`` lists every flag it defines with its
default, the README's command table lists it, and a real run on CPU prints
no TensorFlow log line on stderr.
"""
import ast
import glob
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT, TINY_CATS
from utils import quiet

SKIP_DIRS = ("tests", "benchmarks")
# TensorFlow / absl C++ log records and the lines quiet.py exists to remove.
TF_LINE = re.compile(r"^[IWEF]\d{4} [\d:.]+ +\d+ [^\]]+\]|cuInit|"
                     r"absl::InitializeLog", re.M)


def entry_points():
  """{relative path: command} of every program with ``app.run``."""
  found = {}
  for path in sorted(glob.glob(os.path.join(ROOT, "**", "*.py"), recursive=True)):
    rel = os.path.relpath(path, ROOT)
    if rel.split(os.sep)[0] in SKIP_DIRS and rel != "benchmarks/run_all.py":
      continue
    with open(path) as f:
      if "app.run(" not in f.read():
        continue
    top = os.sep not in rel
    found[rel] = ([rel] if top else
                  ["-m", rel[:-3].replace(os.sep, ".")])
  return found


ENTRY_POINTS = entry_points()


def _clean_env(**extra):
  env = {k: v for k, v in os.environ.items()
         if k not in ("TF_CPP_MIN_LOG_LEVEL", quiet.ENV_VAR)}
  return dict(env, PYTHONPATH=ROOT, **extra)


def defined_flags(rel):
  """{flag name: has a default} of the DEFINE_* calls in the file."""
  with open(os.path.join(ROOT, rel)) as f:
    tree = ast.parse(f.read())
  out = {}
  for node in ast.walk(tree):
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        and node.func.attr.startswith("DEFINE_") and node.args
        and isinstance(node.args[0], ast.Constant)):
      default = node.args[1] if len(node.args) > 1 else next(
          (k.value for k in node.keywords if k.arg == "default"), None)
      out[node.args[0].value] = not (default is None or (
          isinstance(default, ast.Constant) and default.value is None))
  return out


def test_entry_points_are_the_known_commands():
  expected = {"train.py", "sample.py", "visualization.py", "evaluate.py",
              "demo.py", "experiments/real_data.py", "data/quickdraw.py",
              "data/seq2png.py", "data/synthetic.py", "data/ndjson.py",
              "model/tf1/import_tf1.py", "benchmarks/run_all.py"}
  assert expected <= set(ENTRY_POINTS)


def test_readme_table_lists_every_command():
  with open(os.path.join(ROOT, "README.md")) as f:
    readme = f.read()
  rows = [line for line in readme.splitlines() if line.startswith("| `python ")]
  for rel, cmd in ENTRY_POINTS.items():
    name = f"python {' '.join(cmd)}"
    assert any(row.startswith(f"| `{name}") for row in rows), name


@pytest.mark.parametrize("rel", sorted(ENTRY_POINTS))
def test_entry_point_parses_flags_with_one_line_errors(rel):
  """Every ``app.run`` passes utils.errors.parse_flags, so a flag absl
  rejects is one line and exit 2 like every other bad input."""
  with open(os.path.join(ROOT, rel)) as f:
    tree = ast.parse(f.read())
  runs = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
          and isinstance(n.func, ast.Attribute) and n.func.attr == "run"
          and isinstance(n.func.value, ast.Name) and n.func.value.id == "app"]
  assert runs, rel
  for call in runs:
    parser = next((k.value for k in call.keywords if k.arg == "flags_parser"),
                  None)
    assert isinstance(parser, ast.Name) and parser.id == "parse_flags", rel


@pytest.mark.parametrize("flag, message", [
    ("--stroke_order=sideways",
     "error: flag --stroke_order=sideways: value should be one of "
     "<human|random>"),
    ("--num_train=many", "error: flag --num_train=many: invalid literal for "
     "int() with base 10: 'many'"),
    ("--no_such_flag=1", "error: Unknown command line flag 'no_such_flag'"),
])
def test_a_flag_absl_rejects_is_one_line_and_exit_2(tmp_path, flag, message):
  out = tmp_path / "out"
  proc = subprocess.run([sys.executable, "-m", "data.synthetic",
                         f"--out_dir={out}", flag], cwd=ROOT, env=_clean_env(),
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2, proc.stderr
  assert proc.stderr.strip() == message
  assert not out.exists()


@pytest.mark.parametrize("rel", sorted(ENTRY_POINTS))
def test_entry_point_imports_quiet_first(rel):
  """utils.quiet comes before any import that can reach TensorFlow."""
  with open(os.path.join(ROOT, rel)) as f:
    tree = ast.parse(f.read())
  for node in tree.body:
    if isinstance(node, ast.ImportFrom) and node.module == "utils" and any(
        a.name == "quiet" for a in node.names):
      return
    if isinstance(node, (ast.Import, ast.ImportFrom)):
      names = ([a.name for a in node.names] if isinstance(node, ast.Import)
               else [node.module or ""])
      assert all(n.split(".")[0] in sys.stdlib_module_names or n == "absl" or
                 n.startswith("absl.") for n in names), (rel, names)
  pytest.fail(f"{rel} does not import utils.quiet")


def test_help_lists_every_flag_with_its_default():
  """All --help runs in parallel; each shows the module's own flags."""
  procs = {rel: subprocess.Popen(
      [sys.executable] + cmd + ["--help"], cwd=ROOT, env=_clean_env(),
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for rel, cmd in ENTRY_POINTS.items()}
  for rel, proc in procs.items():
    out, err = proc.communicate(timeout=120)
    assert proc.returncode in (0, 1), (rel, err)   # absl's --help exits 1
    assert not TF_LINE.search(err), (rel, err)
    blocks = re.split(r"\n(?=  --)", out)
    for name, has_default in defined_flags(rel).items():
      block = next((b for b in blocks if re.match(
          rf"  --(\[no\])?{re.escape(name)}:", b)), None)
      assert block is not None, f"{rel}: --{name} missing from --help"
      if has_default:
        assert "(default: " in block, f"{rel}: --{name} shows no default"


def test_cli_run_on_cpu_prints_no_tensorflow_lines(tiny_data, tmp_path):
  """train.py (TensorFlow imported, devices found, steps, a validation, a
  checkpoint saved) has a clean stderr; the same start-up with
  RPCL_TF_LOGS=1 shows TensorFlow's lines, so the check would see them."""
  run = subprocess.Popen(
      [sys.executable, "train.py", f"--log_root={tmp_path / 'model'}",
       f"--data_dir={tiny_data}", "--preset=tiny", "--num_steps=2",
       "--save_every_steps=2", "--hparams=categories=[" + ",".join(TINY_CATS)
       + "],num_mixture=2"],
      cwd=ROOT, env=_clean_env(), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True)
  control = subprocess.Popen(
      [sys.executable, "-c", "from utils import quiet; import tensorflow as tf;"
       " tf.constant(1.0) + 1"], cwd=ROOT, env=_clean_env(**{quiet.ENV_VAR: "1"}),
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  out, err = run.communicate(timeout=300)
  assert run.returncode == 0, err
  assert "saved ckpt-2" in err + out
  assert not TF_LINE.search(err), err
  _, control_err = control.communicate(timeout=300)
  assert TF_LINE.search(control_err), control_err


def test_verbose_switches():
  assert not quiet.verbose(["train.py", "--num_steps=3"], {})
  assert not quiet.verbose(["train.py", "-v", "0"], {})
  assert not quiet.verbose(["pytest", "-v", "tests/test_cli.py"], {})
  for argv in (["x", "--verbosity=1"], ["x", "--verbosity", "2"], ["x", "-v", "1"],
               ["x", "-v=1"]):
    assert quiet.verbose(argv, {}), argv
  assert quiet.verbose(["x"], {quiet.ENV_VAR: "1"})
  assert not quiet.verbose(["x"], {quiet.ENV_VAR: "0"})


def test_strip_noise_keeps_everything_else():
  text = (
      "WARNING: All log messages before absl::InitializeLog() is called are "
      "written to STDERR\n"
      "I0000 00:00:1796162914.983507   11363 port.cc:153] oneDNN custom "
      "operations are on.\n"
      "I0000 00:00:1796162915.100693   11363 cpu_feature_guard.cc:227] This "
      "TensorFlow binary is optimized\n"
      "To enable the following instructions: AVX2 FMA, in other operations, "
      "rebuild TensorFlow with the appropriate compiler flags.\n"
      "E0000 00:00:1796162919.576686   11363 cuda_platform.cc:52] failed call "
      "to cuInit: INTERNAL: CUDA error\n"
      "E0000 00:00:1796162919.576686   11363 gpu_device.cc:99] real trouble\n"
      "/x/y.py:3: UserWarning: something\n")
  assert quiet.strip_noise(text) == (
      "E0000 00:00:1796162919.576686   11363 gpu_device.cc:99] real trouble\n"
      "/x/y.py:3: UserWarning: something\n")


def test_importing_quiet_does_not_import_tensorflow():
  code = "import sys; from utils import quiet; print('tensorflow' in sys.modules)"
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_clean_env(),
                       capture_output=True, text=True, timeout=60).stdout
  assert out.strip() == "False"
