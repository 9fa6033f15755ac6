"""Helpers for the reliability tests (test_bad_inputs, test_faults): running a
CLI in process or as a subprocess, simulating a full disk, watching files, and
building damaged inputs (each builder returns ``setup(case_folder, shared)``).

In process, a CLI runs as ``__main__`` (runpy) with its own absl FlagValues and
``app.run`` = parse + main: the code path of ``python train.py ...`` minus the
interpreter start, without touching the global absl FLAGS other tests use.
"""
import builtins
import contextlib
import errno
import functools
import io
import json
import os
import re
import runpy
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback

from absl import app, flags
import numpy as np
import pytest

from tests.conftest import ROOT

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)

DEFINES = ("DEFINE_string", "DEFINE_integer", "DEFINE_float", "DEFINE_bool",
           "DEFINE_boolean", "DEFINE_list", "DEFINE_enum")


# --- running a CLI ------------------------------------------------------------

def run_in_process(cli, args):
  """(exit code, stdout, stderr) of ``python <cli> <args>`` in this process."""
  fv = flags.FlagValues()
  out, err = io.StringIO(), io.StringIO()

  def fake_run(main, argv=None, flags_parser=None):
    # flags.FLAGS is fv below, so the CLI's own parser parses into fv
    argv = argv or sys.argv
    sys.exit(main(flags_parser(argv) if flags_parser else fv(argv)))

  with pytest.MonkeyPatch.context() as mp:
    for name in DEFINES:
      mp.setattr(flags, name, functools.partial(getattr(flags, name),
                                                flag_values=fv))
    mp.setattr(flags, "FLAGS", fv)
    mp.setattr(app, "run", fake_run)
    mp.setattr(sys, "argv", [cli] + list(args))
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
      try:
        runpy.run_path(script_path(cli), run_name="__main__")
      except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
      except BaseException:  # pylint: disable=broad-except
        code = "traceback"
        err.write(traceback.format_exc())
  return code, out.getvalue(), err.getvalue()


def script_path(cli):
  """train.py -> ROOT/train.py; data.seq2png -> ROOT/data/seq2png.py."""
  return os.path.join(ROOT, cli if cli.endswith(".py")
                      else cli.replace(".", os.sep) + ".py")


def run_subprocess(cli, args, cwd):
  cmd = ([sys.executable, os.path.join(ROOT, cli)] if cli.endswith(".py")
         else [sys.executable, "-m", cli]) + list(args)
  res = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True,
                       timeout=300)
  return res.returncode, res.stdout, res.stderr


@contextlib.contextmanager
def full_disk(folder):
  """Every file opened for writing under ``folder`` fails with ENOSPC on its
  first write (what a full disk does), in this process."""
  real_open, folder = builtins.open, os.path.realpath(folder)

  class Full:
    def __init__(self, f):
      self._f = f

    def write(self, _):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def fileno(self):   # no raw-fd shortcut (PIL): writes go through write()
      raise io.UnsupportedOperation("fileno")

    def __getattr__(self, name):
      return getattr(self._f, name)

    def __enter__(self):
      return self

    def __exit__(self, *exc):
      self._f.close()

  def fake_open(file, mode="r", *a, **k):
    f = real_open(file, mode, *a, **k)
    if (isinstance(file, (str, os.PathLike)) and set(mode) & set("wax+")
        and os.path.realpath(file).startswith(folder + os.sep)):
      return Full(f)
    return f

  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(builtins, "open", fake_open)
    yield


def snapshot(folder):
  """{relative path: (size, mtime)} of the files under ``folder`` (symlinked
  shared folders are not followed: the caller checks those once)."""
  out = {}
  for path, _, files in os.walk(folder):
    for name in files:
      p = os.path.join(path, name)
      if not os.path.islink(p):
        st = os.stat(p)
        out[os.path.relpath(p, folder)] = (st.st_size, st.st_mtime_ns)
  return out


# --- building inputs ----------------------------------------------------------

def load_npz(path):
  with np.load(path, allow_pickle=True, encoding="latin1") as f:
    return {k: f[k] for k in f.files}


def copy_data(case, shared, name="mydata"):
  shutil.copytree(os.path.realpath(os.path.join(case, "data")),
                  os.path.join(case, name))
  return os.path.join(case, name)


def edit_sketch(split, index, value, category="fish"):
  """Setup: a copy of the data whose <category>.npz has one sketch replaced."""
  def setup(case, shared):
    path = os.path.join(copy_data(case, shared), f"{category}.npz")
    d = load_npz(path)
    d[split][index] = value
    np.savez(path, **d)
  return setup


def rewrite(name, fn):
  """Setup: a copy of the data with file ``name`` rewritten by fn(path)."""
  def setup(case, shared):
    fn(os.path.join(copy_data(case, shared), name))
  return setup


def truncate(path):
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)


def fewer_images(path):
  d = load_npz(path)
  np.savez(path, **dict(d, train=d["train"][:-1]))


def small_images(path):
  np.savez(path, **{k: np.zeros((len(v), 32, 32), np.uint8)
                    for k, v in load_npz(path).items()})


def copy_model(edit=None, source="model"):
  """Setup: mymodel = a copy of the shared model, then edit(mymodel)."""
  def setup(case, shared):
    dst = os.path.join(case, "mymodel")
    shutil.copytree(os.path.realpath(os.path.join(case, source)), dst)
    if edit:
      edit(dst)
  return setup


def edit_config(**changes):
  def edit(folder):
    path = os.path.join(folder, "model_config.json")
    with open(path) as f:
      cfg = json.load(f)
    cfg.update(changes)
    with open(path, "w") as f:
      json.dump(cfg, f)
  return edit


def write_file(name, text):
  def edit(folder):
    with open(os.path.join(folder, name), "w") as f:
      f.write(text)
  return edit


def remove_file(name):
  def edit(folder):
    os.remove(os.path.join(folder, name))
  return edit


def cut_checkpoint(folder):
  """Truncates the data file of the latest checkpoint (ckpt-<highest>)."""
  data = [n for n in os.listdir(folder) if ".data-" in n]
  truncate(os.path.join(folder, max(data, key=lambda n: int(
      n.split(".")[0].split("-")[1]))))


def only_config(case, shared):
  os.makedirs(os.path.join(case, "mymodel"))
  shutil.copy(os.path.join(case, "model", "model_config.json"),
              os.path.join(case, "mymodel"))


def samples(n=24, **over):
  """Setup: samples/samples.npz, a valid sample.py output of n sketches but
  for the keys in ``over``."""
  def setup(case, shared):
    rng = np.random.default_rng(0)
    q = np.full((4, 2), 0.25)
    arrays = dict(images=rng.integers(0, 255, (n, 48, 48), dtype=np.uint8),
                  z=rng.normal(size=(n, 8)).astype(np.float32),
                  label_k=np.arange(n, dtype=np.int32) % 4,
                  label_l=np.arange(n, dtype=np.int32) % 2,
                  category=np.arange(n, dtype=np.int32) % 2,
                  ref_index=np.arange(n, dtype=np.int32),
                  categories=np.array(["fish", "house"]), pi_l=np.full(2, 0.5),
                  pi_k=q.sum(1) / 2, q_kl=q)
    arrays.update(over)
    os.makedirs(os.path.join(case, "samples"))
    np.savez(os.path.join(case, "samples", "samples.npz"), **arrays)
  return setup


def touch(*names):
  def setup(case, shared):
    for name in names:
      path = os.path.join(case, name)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      open(path, "w").close()
  return setup


def chain(*setups):
  def setup(case, shared):
    for s in setups:
      s(case, shared)
  return setup


def other_categories(case, shared):
  d = copy_data(case, shared)
  for name in os.listdir(d):
    os.rename(os.path.join(d, name), os.path.join(d, name.replace("fish", "cat")))


def big_category(folder, sizes=(3000, 300, 300), seed=0):
  """<folder>/big.npz of random-walk sketches; returns the split lengths."""
  rng = np.random.default_rng(seed)
  splits = {}
  for name, n in zip(("train", "valid", "test"), sizes):
    arr = np.empty(n, dtype=object)
    for i in range(n):
      s = rng.integers(-15, 16, size=(int(rng.integers(10, 60)), 3)).astype(np.int16)
      s[:, 2] = rng.random(len(s)) < 0.1
      s[-1, 2] = 1
      arr[i] = s
    splits[name] = arr
  np.savez(os.path.join(folder, "big.npz"), **splits)
  return {k: len(v) for k, v in splits.items()}


# --- processes ------------------------------------------------------------------

def wait_for(cond, timeout=120.0, poll=0.002):
  end = time.time() + timeout
  while time.time() < end:
    if cond():
      return True
    time.sleep(poll)
  return False


class Proc:
  """A subprocess whose stderr lines are collected by a thread."""

  def __init__(self, cmd, cwd=ROOT):
    self.lines = []
    self.p = subprocess.Popen(cmd, cwd=cwd, env=ENV, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    self.reader = threading.Thread(target=self._read, daemon=True)
    self.reader.start()

  def _read(self):
    for line in self.p.stderr:
      self.lines.append(line.rstrip("\n"))

  def seen(self, pattern):
    return any(re.search(pattern, l) for l in list(self.lines))

  def kill(self):
    if self.p.poll() is None:
      os.kill(self.p.pid, signal.SIGKILL)
    self.p.wait()
    self.reader.join(10)


class Background:
  """Runs ``fn(stop_event)`` in a thread (conftest's early_jobs): ``result()``
  waits for it (re-raising its error), ``stop()`` asks it to end and waits."""

  def __init__(self, fn):
    self._stop, self._out = threading.Event(), {}

    def work():
      try:
        self._out["value"] = fn(self._stop)
      except BaseException as e:  # pylint: disable=broad-except
        self._out["error"] = e

    self._thread = threading.Thread(target=work, daemon=True)
    self._thread.start()

  def result(self, timeout=900):
    self._thread.join(timeout)
    assert not self._thread.is_alive(), "background job still running"
    if "error" in self._out:
      raise self._out["error"]
    return self._out["value"]

  def stop(self):
    self._stop.set()
    self._thread.join(600)
