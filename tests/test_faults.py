"""Faults survived: kill -9 during training, NaN/inf in a batch and
in the loss, interrupted sample / visualization / seq2png / download runs.

The kill -9 trials of train.py are real subprocesses; they run in a
background thread from the start of the test session (start_early, see
tests/conftest.py: the other tests run meanwhile on the second core) and are
checked by the last test.
"""
import functools
import http.server
import os
import re
import sys
import threading
import time

import numpy as np
from PIL import Image
import pytest
import svgwrite
import tensorflow as tf

from data import pipeline, quickdraw, seq2png
from data.dataset import load_png_npz
from hparams import CONFIG_NAME, get_hparams, load_config
from model import losses
from model.rpcl_model import RPCLPix2SeqH
from model.storage.checkpoint import load_trained
from model.training import loop as training
from tests.cli_harness import (Background, Proc, big_category, run_in_process,
                               samples, wait_for)
from tests.conftest import ROOT, TINY_CATS
from utils import ownership
from utils.errors import UserError
from utils.samples_file import load_samples

HPARAMS = f"categories=[{','.join(TINY_CATS)}],num_mixture=2,dec_model=lstm"
SAVE_EVERY = 2          # steps between validations / checkpoints in the kill trials


# --- kill -9 during training ------------------------------------------------------

def train_cmd(data_dir, root, *extra):
  return [sys.executable, os.path.join(ROOT, "train.py"), f"--log_root={root}",
          f"--data_dir={data_dir}", "--preset=tiny",
          f"--hparams={HPARAMS},patience=1000",
          f"--save_every_steps={SAVE_EVERY}", "--log_every=1000", "--seed=1", *extra]


def standing_step(lines, start):
  """The step the run stood on after its last logged validation: the saved
  step when it improved, the restored one after a miss, else ``start``."""
  step = start
  for line in lines:
    m = re.match(r"step (\d+) epoch \d+: valid lil \S+ improved; saved ckpt-(\d+)", line)
    if m:
      step = int(m.group(2))
    m = re.search(r"not better than .* restored step (\d+)$", line)
    if m:
      step = int(m.group(1))
  return step


def started_at(lines):
  for line in lines:
    m = re.match(r"training from step (\d+) ", line)
    if m:
      return int(m.group(1))
  raise AssertionError("no 'training from step' line:\n" + "\n".join(lines[-30:]))


def checkpoints_readable(root):
  """Every checkpoint listed in ``root`` reads completely; their steps."""
  state = tf.train.get_checkpoint_state(root)
  steps = []
  for path in (state.all_model_checkpoint_paths if state else []):
    reader = tf.train.load_checkpoint(path)
    for name in reader.get_variable_to_shape_map():
      reader.get_tensor(name)
    steps.append(int(path.rsplit("-", 1)[1]))
  return steps


def kill_trials(data_dir, root, stop):
  """3 runs killed at random moments; one record per run (checked, and the
  run resumed to its end, by test_kill9_...)."""
  rng = np.random.default_rng(10)
  records = []
  # when to kill: after the run's first validation + U(0, 0.8) s (twice), and
  # while it is still starting (tracing, before any step).
  plans = [("validated", rng.uniform(0, 0.8)), ("validated", rng.uniform(0, 0.8)),
           ("started", rng.uniform(0, 0.3))]
  for i, (event, delay) in enumerate(plans):
    if stop.is_set():
      return records
    proc = Proc(train_cmd(data_dir, root, "--num_steps=100000",
                          *(["--resume_training"] if i else [])))
    pattern = r"valid lil" if event == "validated" else r"^training from step"
    try:
      assert wait_for(lambda: proc.seen(pattern) or proc.p.poll() is not None
                      or stop.is_set(), 240)
      time.sleep(delay)
      alive = proc.p.poll() is None
    finally:
      proc.kill()
    records.append(dict(lines=proc.lines, alive=alive, config=load_config(
                            os.path.join(root, CONFIG_NAME), warn=False),
                        checkpoints=checkpoints_readable(root),
                        latest=tf.train.latest_checkpoint(root)))
  return records


def start_early(data_dir, tmp_path_factory):
  """The kill -9 trials, started with the session (tests/conftest.py)."""
  root = str(tmp_path_factory.mktemp("kill9") / "run")
  return Background(lambda stop: (kill_trials(data_dir, root, stop), root, data_dir))


@pytest.fixture(scope="module", autouse=True)
def _kill9_in_the_background(request):
  """Under pytest-xdist the kill -9 trials start with this file (in a plain
  run, with the session), so they overlap its other tests."""
  if "test_kill9_at_random_moments_resume_every_time" in {
      item.name for item in request.session.items
      if item.module.__name__ == __name__}:
    request.getfixturevalue("early_jobs")[__name__]


# --- NaN / inf in a batch and in the loss ------------------------------------------

def nonfinite_variables(model):
  """Names of the model's float variables (weights, hierarchy) holding NaN/inf."""
  out = []
  for v in model.variables:
    a = np.asarray(v.numpy())
    if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
      out.append(v.name)
  return out


@pytest.fixture
def watched_steps(monkeypatch):
  """Wraps every compiled train step: after each call, every weight and the
  hierarchy state must be finite; records the nonfinite flags."""
  flags_seen = []
  real = RPCLPix2SeqH.compiled_train_step

  def compiled(self):
    fn = real(self)

    def step(batch):
      out = fn(batch)
      flags_seen.append(bool(out["nonfinite"]))
      bad = nonfinite_variables(self)
      assert not bad, f"non-finite state after a step: {bad}"
      return out
    return step

  monkeypatch.setattr(RPCLPix2SeqH, "compiled_train_step", compiled)
  return flags_seen


def poison_loss(monkeypatch, at_step, times):
  """The training loss becomes NaN at global step ``at_step``, ``times`` times
  (the step does not advance while it is skipped)."""
  real = losses.total_loss
  budget = tf.Variable(times, dtype=tf.int64, trainable=False)

  def total_loss(gau, ij, lil, de, step, hps, *args, **kw):
    total = real(gau, ij, lil, de, step, hps, *args, **kw)
    hit = tf.logical_and(tf.equal(tf.cast(step, tf.int64), at_step), budget > 0)
    budget.assign_sub(tf.cast(hit, tf.int64))
    return tf.where(hit, tf.constant(np.nan, total.dtype), total)

  monkeypatch.setattr(losses, "total_loss", total_loss)


def test_nan_and_inf_are_skipped_logged_and_restored(tiny_model, tmp_path, capsys,
                                                     monkeypatch, watched_steps):
  """Inf strokes in one batch, NaN images in another, a NaN loss three times
  in a row: each step is skipped and logged, the third restores the last
  checkpoint, the run reaches num_steps with finite weights and hierarchy."""
  real_batch = pipeline.BatchMaker.batch

  def batch(self, epoch, index):
    strokes, lens, images, labels = real_batch(self, epoch, index)
    if self.augment and (int(epoch), int(index)) == (0, 2):
      strokes = strokes.copy()
      strokes[1, 3, 0] = np.inf
    if self.augment and (int(epoch), int(index)) == (2, 1):
      images = images.copy()
      images[4, 20, 20, 0] = np.nan
    return strokes, lens, images, labels

  monkeypatch.setattr(pipeline.BatchMaker, "batch", batch)
  poison_loss(monkeypatch, at_step=10, times=3)
  hps = get_hparams("tiny", HPARAMS)
  calls = []   # every validation improves: only the NaN policy restores

  def improving(model, name):
    calls.append(name)
    return {"lil": -float(len(calls))}

  out = training.train(hps, tiny_model[0], str(tmp_path), num_steps=12,
                       save_every_steps=4, validate_fn=improving)
  log = capsys.readouterr().err
  assert out["step"] == 12 and out["stop_reason"] == "num_steps"
  assert out["nonfinite_skips"] == 5 and sum(watched_steps) == 5
  assert log.count("non-finite loss or gradient, update skipped (1 in a row)") == 3
  assert "update skipped (3 in a row)" in log
  restored = re.findall(r"restored the last checkpoint \(step (\d+)\)", log)
  assert len(restored) == 1 and int(restored[0]) <= 8, log
  _, model = load_trained(str(tmp_path))
  assert int(model.global_step.numpy()) == 12
  assert not nonfinite_variables(model)


def test_persistent_nan_stops_with_one_line_and_intact_checkpoint(
    tiny_model, tmp_path, monkeypatch, watched_steps):
  poison_loss(monkeypatch, at_step=6, times=10 ** 6)
  args = [f"--log_root={tmp_path}", f"--data_dir={tiny_model[0]}", "--preset=tiny",
          f"--hparams={HPARAMS}", "--save_every_steps=4", "--num_steps=50"]
  code, _, err = run_in_process("train.py", args)
  lines = [l for l in err.splitlines() if l.strip()]
  assert code == 2 and "Traceback" not in err, err[-3000:]
  assert lines[-1] == ("error: training diverged: 12 non-finite steps without "
                       "getting past step 6, even after restoring the checkpoint; "
                       "check the data or lower learning_rate")
  assert sum(l.startswith("error:") for l in lines) == 1
  assert err.count("restored the last checkpoint (step 4)") == 3
  assert sum(watched_steps) == 12 and watched_steps[-1]
  _, model = load_trained(str(tmp_path))
  assert int(model.global_step.numpy()) == 4
  assert not nonfinite_variables(model)


# --- interrupted outputs -----------------------------------------------------------

def files(folder):
  out = {}
  for path, _, names in os.walk(folder):
    for name in names:
      p = os.path.join(path, name)
      with open(p, "rb") as f:
        out[os.path.relpath(p, folder)] = f.read()
  return out


def test_interrupted_sample_keeps_the_old_output_or_writes_none(
    tiny_model, tmp_path, monkeypatch):
  """Ctrl-C while sample.py writes its SVGs: a previous output (with
  --overwrite) is left exactly as it was; a fresh output folder never appears."""
  data_dir, model_dir, _ = tiny_model
  args = [f"--model_dir={model_dir}", f"--data_dir={data_dir}",
          "--num_per_category=2", "--conditional=False"]
  out, fresh = tmp_path / "out", tmp_path / "fresh"
  samples()(str(tmp_path), None)          # a previous run's output ...
  os.rename(tmp_path / "samples", out)
  (out / "grid.png").write_bytes(b"previous grid")
  ownership.record_tree(str(out), "sample")   # ... recorded as sample.py's
  before = files(out)
  real_save, calls = svgwrite.Drawing.save, []

  def save(self, *a, **k):
    calls.append(1)
    if len(calls) % 3 == 0:
      raise KeyboardInterrupt
    return real_save(self, *a, **k)

  monkeypatch.setattr(svgwrite.Drawing, "save", save)
  for target, extra in ((out, ["--overwrite"]), (fresh, [])):
    code, _, err = run_in_process("sample.py", args + [f"--output_dir={target}"]
                                  + extra)
    assert code == 130 and err.strip().splitlines()[-1] == "interrupted", err
  assert files(out) == before and not fresh.exists()
  assert sorted(os.listdir(tmp_path)) == ["out"]           # no .tmp-* left
  with pytest.raises(UserError, match="not found"):
    load_samples(str(fresh))


def test_seq2png_killed_mid_write_leaves_no_partial_file(tmp_path):
  """kill -9 of data.seq2png (once while the temp file is being written, twice
  at random moments): <cat>_png.npz is absent or complete, never partial;
  the loader says 'missing' and a rerun completes it."""
  data = tmp_path / "data"
  data.mkdir()
  lengths = big_category(str(data))
  rng = np.random.default_rng(3)
  for trial, when in enumerate(["mid-write", rng.uniform(0.2, 1.0),
                                rng.uniform(0.2, 1.0)]):
    out = tmp_path / f"out{trial}"
    proc = Proc([sys.executable, "-m", "data.seq2png", f"--data_dir={data}",
                 "--categories=big", f"--out_dir={out}", "--workers=1"])
    if when == "mid-write":
      assert wait_for(lambda: out.is_dir() and any(
          n.startswith(".tmp-big_png") for n in os.listdir(out)), 120, 0.0005)
    else:
      time.sleep(when)
    proc.kill()
    final = out / "big_png.npz"
    if when == "mid-write":
      assert not final.exists()
      with pytest.raises(UserError, match="is missing"):
        load_png_npz(str(final), lengths, 48, "big")
      seq2png.convert_category(str(data), "big", out_dir=str(out), workers=1,
                               progress=False)
    if final.exists():
      images = load_png_npz(str(final), lengths, 48, "big")   # complete
      assert {k: len(v) for k, v in images.items()} == lengths


def test_visualization_killed_mid_write_leaves_only_complete_figures(tmp_path):
  """kill -9 while the first figure is written: no figure under its final
  name is partial (the hidden temp file is all that is left of it)."""
  samples()(str(tmp_path), None)
  figs = tmp_path / "figs"
  proc = Proc([sys.executable, os.path.join(ROOT, "visualization.py"),
               f"--input_dir={tmp_path / 'samples'}", f"--output_dir={figs}"])
  assert wait_for(lambda: figs.is_dir() and any(
      n.startswith(".tmp-") for n in os.listdir(figs)), 120, 0.0005)
  proc.kill()
  names = os.listdir(figs)
  assert "result.jpg" not in names        # killed while writing the first one
  for name in names:
    if not name.startswith(".tmp-"):
      Image.open(figs / name).load()      # any figure present is complete


class SlowRangeHandler(http.server.SimpleHTTPRequestHandler):
  """Serves files slowly in 8 KiB chunks, honouring ``Range: bytes=N-``."""
  delay, ranges = 0.004, []

  def log_message(self, *args):
    pass

  def do_GET(self):
    path = self.translate_path(self.path)
    if not os.path.isfile(path):
      return self.send_error(404)
    with open(path, "rb") as f:
      data = f.read()
    rng = self.headers.get("Range")
    SlowRangeHandler.ranges.append(rng)
    start = int(rng.split("=")[1].split("-")[0]) if rng else 0
    self.send_response(206 if start else 200)
    self.send_header("Content-Length", str(len(data) - start))
    if start:
      self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
    self.end_headers()
    for i in range(start, len(data), 8192):
      self.wfile.write(data[i:i + 8192])
      time.sleep(SlowRangeHandler.delay)
    return None


def test_download_killed_mid_transfer_resumes_and_completes(tmp_path):
  served, out = tmp_path / "served", tmp_path / "qd"
  served.mkdir()
  lengths = big_category(str(served))
  server = http.server.ThreadingHTTPServer(
      ("127.0.0.1", 0), functools.partial(SlowRangeHandler, directory=str(served)))
  threading.Thread(target=server.serve_forever, daemon=True).start()
  url = f"http://127.0.0.1:{server.server_address[1]}/"
  try:
    proc = Proc([sys.executable, "-m", "data.quickdraw", "--categories=big",
                 f"--out_dir={out}", f"--base_url={url}", "--workers=1"])
    part = out / "big.npz.part"
    assert wait_for(lambda: part.exists() and part.stat().st_size > 50000, 120)
    proc.kill()
    assert not (out / "big.npz").exists() and not (out / "big_png.npz").exists()
    have = part.stat().st_size
    assert 0 < have < (served / "big.npz").stat().st_size
    SlowRangeHandler.delay = 0.0
    quickdraw.fetch_categories(["big"], str(out), url, workers=1, progress=False)
  finally:
    SlowRangeHandler.delay = 0.004
    server.shutdown()
    server.server_close()
  assert SlowRangeHandler.ranges[-1] == f"bytes={have}-"      # resumed, not restarted
  assert (out / "big.npz").read_bytes() == (served / "big.npz").read_bytes()
  load_png_npz(str(out / "big_png.npz"), lengths, 48, "big")
  assert not part.exists()


# --- the kill -9 trials (started in the background, see start_early) ----------------

def test_kill9_at_random_moments_resume_every_time(early_jobs):
  """Three kills (two after a validation at random delays, one during start-up)
  then a resume to the end: every resume starts at the latest checkpoint, which
  is never older than the last logged save; every listed checkpoint and the
  config read back complete; the final run finishes normally."""
  records, root, data_dir = early_jobs[__name__].result()
  assert len(records) == 3
  # the last resume, in process (the killed runs 2 and 3 resumed by the CLI)
  last = records[-1]
  target = standing_step(last["lines"], started_at(last["lines"])) + 4
  code, _, err = run_in_process("train.py", train_cmd(
      data_dir, root, "--resume_training", f"--num_steps={target}")[2:])
  records.append(dict(lines=err.splitlines(), code=code, config=load_config(
      os.path.join(root, CONFIG_NAME), warn=False)))
  config, standing, latest = records[0]["config"], 0, None
  for i, rec in enumerate(records):
    assert rec["config"].replace(num_steps=config.num_steps) == config
    start = started_at(rec["lines"])
    latest_step = int(latest.rsplit("-", 1)[1]) if latest else 0
    assert start == latest_step, (i, start, latest)
    # nothing logged as saved is lost; at most one save interval of steps is
    assert standing <= start <= standing + SAVE_EVERY, (i, start, standing)
    if i < 3:
      assert rec["alive"], f"run {i} ended before it was killed"
      standing, latest = standing_step(rec["lines"], start), rec["latest"]
      assert len(rec["checkpoints"]) <= 3
  assert records[3]["code"] == 0, "\n".join(records[3]["lines"][-20:])
  assert any(l.startswith("done: step ") for l in records[3]["lines"])
  assert checkpoints_readable(root)[-1] >= standing
