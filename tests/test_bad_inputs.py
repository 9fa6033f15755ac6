"""The bad-input catalogue: one test per case, end to end through the
real CLI entry points (train.py, sample.py, visualization.py, evaluate.py,
explore.py, export.py, data.synthetic, data.seq2png, data.quickdraw).

Every case builds its inputs in a fresh folder and runs the command there with
relative paths.  Passing means: exit status 2, exactly one stderr line, starting
with ``error: `` and matching the expected message (naming the file / flag /
value), no traceback, and no file created or changed in the case folder or in
the shared model/data.  Every bad input of these commands is a case here and
nowhere else; the library-level checks behind the messages are tested in the
per-module test files.

In process, a CLI runs as ``__main__`` (tests/cli_harness.py: runpy, its own
absl FlagValues): the code path of ``python train.py ...`` minus the
interpreter start.  Cases with ``sub=True`` also run as real subprocesses
(started in the background, two at a time); their error line must equal the
in-process one.  docs/bad_inputs.md holds every full message; it is
regenerated from these runs by ``python -m tests.bad_inputs_doc`` and a test
checks it is current.
"""
import concurrent.futures
import contextlib
import functools
import http.server
import os
import re
import shutil
import threading

import numpy as np
import pytest

from model.storage.checkpoint import CheckpointState, load_trained
from tests import bad_inputs_doc as doc
from tests.cli_harness import (chain, copy_model, cut_checkpoint, edit_config,
                               edit_sketch, fewer_images, full_disk,
                               only_config, other_categories, remove_file,
                               rewrite, run_in_process, run_subprocess, samples,
                               small_images, snapshot, touch, truncate,
                               write_file)

HP = "--hparams=categories=[fish,house],num_mixture=2"
TRAIN = ["--log_root=run", "--preset=tiny"]
SAMPLE = ["--model_dir=model", "--data_dir=data", "--output_dir=out",
          "--num_per_category=2"]
EVAL = ["--data_dir=data", "--samples_dir=", "--output=eval.json"]


# --- the catalogue --------------------------------------------------------------

def case(name, cli, args, expect, setup=None, sub=False, disk_full=False):
  return dict(name=name, cli=cli, args=args, expect=expect, setup=setup,
              sub=sub, disk_full=disk_full)


NAN_SKETCH = np.array([[1, 2, 0], [np.nan, 3, 1]], np.float32)
# Each expectation names the key terms of the message -- the flag, file, value
# (and what is wrong, in a word); the full lines are docs/bad_inputs.md's.
CASES = [
    # --hparams
    case("hparams_syntax", "train.py", TRAIN + ["--data_dir=data", HP + ",z_size:16"],
         r"--hparams.*'z_size:16'.*key=value", sub=True),
    case("hparams_unknown_key", "train.py", TRAIN + ["--data_dir=data",
                                                     "--hparams=num_mixtures=2"],
         r"unknown hparam 'num_mixtures'"),
    case("hparams_wrong_type", "train.py", TRAIN + ["--data_dir=data",
                                                    HP + ",batch_size=big"],
         r"batch_size='big'.*integer"),
    case("hparams_bad_list", "train.py", TRAIN + ["--data_dir=data",
                                                  "--hparams=categories=fish,house]"],
         r"--hparams.*'categories=fish,house\]'"),
    case("hparams_out_of_range", "train.py", TRAIN + ["--data_dir=data", HP + ",eta=1.5"],
         r"eta=1.5.*\(0, 1\]"),
    # data folder and files
    case("train_no_data_dir", "train.py", TRAIN,
         r"--data_dir.*python -m data.synthetic"),
    case("data_dir_missing", "train.py", TRAIN + ["--data_dir=nowhere", HP],
         r"'nowhere' does not exist.*python -m data.synthetic"),
    case("data_dir_empty", "train.py", TRAIN + ["--data_dir=empty", HP],
         r"'empty'.* no .npz", touch("empty/notes.txt")),
    case("category_file_missing", "train.py",
         TRAIN + ["--data_dir=data", "--hparams=categories=[fish,cat],num_mixture=2"],
         r"'data/cat.npz' not found.*fish, house"),
    case("npz_truncated", "train.py", TRAIN + ["--data_dir=mydata", HP],
         r"'mydata/fish.npz'.*corrupt", rewrite("fish.npz", truncate)),
    case("npz_wrong_keys", "train.py", TRAIN + ["--data_dir=mydata", HP],
         r"'mydata/fish.npz'.*train, valid, test",
         rewrite("fish.npz", lambda p: np.savez(p, a=np.zeros(3), b=np.ones(2)))),
    case("npz_wrong_shape", "train.py", TRAIN + ["--data_dir=mydata", HP],
         r"'mydata/fish.npz' split 'valid' sketch 2.*\(4, 2\)",
         edit_sketch("valid", 2, np.zeros((4, 2), np.int16))),
    case("npz_wrong_dtype", "train.py", TRAIN + ["--data_dir=mydata", HP],
         r"'mydata/fish.npz' split 'test' sketch 1.*numeric",
         edit_sketch("test", 1, np.array([["a", "b", "c"]]))),
    case("npz_empty_sketch", "train.py", TRAIN + ["--data_dir=mydata", HP],
         r"'mydata/fish.npz' split 'train' sketch 5.*empty",
         edit_sketch("train", 5, np.zeros((0, 3), np.int16))),
    case("npz_nan", "train.py", TRAIN + ["--data_dir=mydata", HP],
         r"'mydata/fish.npz' split 'train' sketch 3.*NaN",
         edit_sketch("train", 3, NAN_SKETCH)),
    case("png_count_disagrees", "train.py", TRAIN + ["--data_dir=mydata", HP],
         r"'mydata/fish_png.npz' split 'train'.*31.*32",
         rewrite("fish_png.npz", fewer_images)),
    case("png_size_disagrees", "train.py", TRAIN + ["--data_dir=mydata", HP],
         r"'mydata/house_png.npz'.*\(32, 32\).*\(48, 48\)",
         rewrite("house_png.npz", small_images)),
    case("png_missing", "train.py", TRAIN + ["--data_dir=mydata", HP],
         r"'mydata/house_png.npz' is missing.*data.seq2png",
         rewrite("house_png.npz", os.remove)),
    case("batch_larger_than_split", "train.py",
         TRAIN + ["--data_dir=data", HP + ",batch_size=65"],
         r"batch_size=65.*64"),
    # --log_root and resuming
    case("resume_nothing_to_resume", "train.py",
         TRAIN + ["--data_dir=data", HP, "--resume_training"],
         r"--resume_training.*model_config.json.*'run'"),
    case("resume_conflicting_value", "train.py",
         ["--log_root=mymodel", "--preset=tiny", "--data_dir=data", HP + ",eta=0.1",
          "--resume_training"],
         r"mymodel/model_config.json.*eta=0.1 \(stored 0.05\)", copy_model()),
    case("resume_conflicting_hparams", "train.py",
         ["--log_root=mymodel", "--preset=tiny", "--data_dir=data",
          "--hparams=categories=[house,fish]", "--resume_training"],
         r"categories=\['house', 'fish'\] \(stored \['fish', 'house'\]\)",
         copy_model()),
    case("log_root_holds_a_run", "train.py",
         ["--log_root=mymodel", "--preset=tiny", "--data_dir=data", HP],
         r"--log_root='mymodel'.*--resume_training.*--overwrite", copy_model()),
    case("log_root_under_a_file", "train.py",
         ["--log_root=afile/run", "--preset=tiny", "--data_dir=data", HP],
         r"--log_root 'afile/run'.*'afile' is a file", touch("afile")),
    case("train_disk_full", "train.py", TRAIN + ["--data_dir=data", HP],
         r"'run/model_config.json'.*No space left", disk_full=True),
    # sample.py
    case("checkpoint_truncated", "sample.py", ["--model_dir=mymodel"] + SAMPLE[1:],
         r"'mymodel/ckpt-\d+'.*corrupt", copy_model(cut_checkpoint)),
    case("config_not_json", "sample.py", ["--model_dir=mymodel"] + SAMPLE[1:],
         r"'mymodel/model_config.json'.*JSON",
         copy_model(write_file("model_config.json", "{z_size: 8"))),
    case("checkpoint_other_z_size", "sample.py", ["--model_dir=mymodel"] + SAMPLE[1:],
         r"'mymodel/ckpt-\d+'.*model config.*shape",
         copy_model(edit_config(z_size=16))),
    case("sample_no_data_recorded", "sample.py",
         ["--model_dir=mymodel", "--output_dir=out"],
         r"--data_dir.*'mymodel'", copy_model(remove_file("train_info.json"))),
    case("sample_num_per_category_0", "sample.py", SAMPLE + ["--num_per_category=0"],
         r"--num_per_category=0"),
    case("sample_temperature_0", "sample.py", SAMPLE + ["--temperature=0"],
         r"--temperature=0.*--greedy"),
    case("sample_two_modes", "sample.py", SAMPLE + ["--level_k=1", "--level_l=0"],
         r"--level_k and --level_l"),
    case("sample_level_k_out_of_range", "sample.py", SAMPLE + ["--level_k=7"],
         r"--level_k=7.*0, 1, 2, 3"),
    case("sample_level_l_out_of_range", "sample.py", SAMPLE + ["--level_l=-1"],
         r"--level_l=-1"),
    case("sample_dead_level_k", "sample.py",
         ["--model_dir=dead_k", "--level_k=3", "--output_dir=out"],
         r"--level_k=3.*dead.*0, 1, 2$", sub=True),
    case("sample_dead_level_l", "sample.py",
         ["--model_dir=dead_l", "--level_l=1", "--output_dir=out"],
         r"--level_l=1.*dead.*0$"),
    case("sample_unknown_category", "sample.py", SAMPLE + ["--categories=fish,horse"],
         r"--categories.*horse"),
    case("sample_analogy_malformed", "sample.py", SAMPLE + ["--analogy=0,x"],
         r"--analogy='0,x'"),
    case("sample_analogy_out_of_range", "sample.py", SAMPLE + ["--analogy=0,1,32"],
         r"--analogy.*32"),
    case("sample_interpolate_out_of_range", "sample.py", SAMPLE + ["--interpolate=-2,3"],
         r"--interpolate.*-2"),
    case("sample_output_under_a_file", "sample.py",
         SAMPLE[:2] + ["--output_dir=afile/out"],
         r"--output_dir 'afile/out'.*'afile' is a file", touch("afile"), sub=True),
    case("sample_disk_full", "sample.py", SAMPLE,
         r"--output_dir='out'.*No space left", disk_full=True),
    # evaluate.py
    case("evaluate_no_model_dir", "evaluate.py", EVAL, r"--model_dir"),
    case("evaluate_model_dir_missing", "evaluate.py", ["--model_dir=nowhere"] + EVAL,
         r"'nowhere' does not exist"),
    case("evaluate_batch_size_0", "evaluate.py",
         ["--model_dir=model", "--batch_size=0"] + EVAL, r"--batch_size=0"),
    case("evaluate_no_config", "evaluate.py", ["--model_dir=mymodel"] + EVAL,
         r"no model config.*'mymodel/model_config.json'", touch("mymodel/notes.txt")),
    case("evaluate_no_checkpoint", "evaluate.py", ["--model_dir=mymodel"] + EVAL,
         r"no checkpoint in 'mymodel'", only_config),
    case("evaluate_checkpoint_other_num_mixture", "evaluate.py",
         ["--model_dir=mymodel"] + EVAL,
         r"'mymodel/ckpt-\d+'.*model config.*\(4, .*\(6, ",
         copy_model(edit_config(num_mixture=3))),
    case("evaluate_other_data", "evaluate.py",
         ["--model_dir=model", "--data_dir=mydata", "--samples_dir=", "--output=e.json"],
         r"'mydata/fish.npz' not found.*cat, house", other_categories),
    case("evaluate_samples_missing", "evaluate.py",
         ["--model_dir=model", "--data_dir=data", "--samples_dir=nosamples",
          "--output=e.json"],
         r"'nosamples/samples.npz' not found", touch("nosamples/notes.txt")),
    case("evaluate_output_under_a_file", "evaluate.py",
         ["--model_dir=model", "--data_dir=data", "--samples_dir=",
          "--output=afile/e.json"],
         r"--output 'afile/e.json'.*'afile' is a file", touch("afile")),
    # visualization.py
    case("tsne_too_few_samples", "visualization.py",
         ["--input_dir=samples", "--output_dir=figs"],
         r"'samples/samples.npz' has 3 sample.*at least 5", samples(3), sub=True),
    case("samples_empty", "visualization.py",
         ["--input_dir=samples", "--output_dir=figs"],
         r"'samples/samples.npz' contains no samples", samples(0)),
    case("samples_truncated", "visualization.py",
         ["--input_dir=samples", "--output_dir=figs"],
         r"'samples/samples.npz' is not a readable npz",
         chain(samples(), lambda c, s: truncate(os.path.join(c, "samples",
                                                             "samples.npz")))),
    case("samples_inconsistent", "visualization.py",
         ["--input_dir=samples", "--output_dir=figs"],
         r"'samples/samples.npz'.*'pi_k'.*\(4,\)",
         samples(pi_k=np.full(3, 1 / 3))),
    case("figures_under_a_file", "visualization.py",
         ["--input_dir=samples", "--output_dir=afile/figs"],
         r"'afile/figs'.*Not a directory", chain(samples(), touch("afile")), sub=True),
    case("figures_disk_full", "visualization.py",
         ["--input_dir=samples", "--output_dir=figs"],
         r"'figs/result.jpg'.*No space left", samples(), disk_full=True),
    # data commands
    case("synthetic_out_dir_is_a_file", "data.synthetic",
         ["--out_dir=afile", "--num_train=2", "--num_valid=1", "--num_test=1"],
         r"'afile'.*File exists", touch("afile"), sub=True),
    case("synthetic_empty_split", "data.synthetic", ["--out_dir=syn", "--num_valid=0"],
         r"--num_train/--num_valid/--num_test.*\(5000, 0, 500\)"),
    case("seq2png_infinite_offsets", "data.seq2png",
         ["--data_dir=mydata", "--categories=fish", "--out_dir=pngs", "--workers=1"],
         r"'mydata/fish.npz' split 'valid' sketch 0.*infinite",
         edit_sketch("valid", 0, np.array([[np.inf, 0, 1]])), sub=True),
    case("seq2png_png_width", "data.seq2png",
         ["--data_dir=data", "--categories=fish", "--out_dir=pngs", "--png_width=4"],
         r"--png_width.*4"),
    case("seq2png_disk_full", "data.seq2png",
         ["--data_dir=data", "--categories=fish", "--out_dir=pngs", "--workers=1"],
         r"'pngs/fish_png.npz'.*No space left", disk_full=True),
    case("quickdraw_unknown_category", "data.quickdraw",
         ["--categories=bee,nope", "--out_dir=qd", "--base_url={url}"],
         r"'nope'.*URL/nope.npz.*404", sub=True),
    case("quickdraw_no_categories", "data.quickdraw", ["--out_dir=qd"],
         r"--categories"),
    case("quickdraw_out_dir_under_a_file", "data.quickdraw",
         ["--categories=bee", "--out_dir=afile/qd", "--base_url={url}"],
         r"'afile/qd'.*Not a directory", touch("afile")),
    # explore.py, export.py
    case("explore_no_model", "explore.py", ["--model_dir=nowhere"],
         r"--model_dir.*'nowhere'"),
    case("export_no_out_dir", "export.py", ["--model_dir=model"], r"--out_dir"),
    case("export_into_the_model", "export.py",
         ["--model_dir=model", "--out_dir=model/export"],
         r"--out_dir=.*refusing to write there"),
    case("export_over_foreign_files", "export.py",
         ["--model_dir=model", "--out_dir=mine", "--overwrite"],
         r"'mine'.*holds files this program did not write",
         touch("mine/notes.txt")),
    case("export_max_len_negative", "export.py",
         ["--model_dir=model", "--out_dir=e", "--max_len=-1"], r"--max_len=-1"),
]
BY_NAME = {c["name"]: c for c in CASES}
assert len(BY_NAME) == len(CASES)


# --- fixtures ---------------------------------------------------------------------

class QuietHandler(http.server.SimpleHTTPRequestHandler):
  def log_message(self, *args):
    pass


@pytest.fixture(scope="module")
def shared(tiny_model, tmp_path_factory):
  """Folders every case links to (read-only): data, model, dead_k / dead_l (the
  model with level-k component #3 / level-l unit #1 dead), and the base URL
  of a local QuickDraw mirror."""
  data_dir, model_dir, dead_k = tiny_model
  root = tmp_path_factory.mktemp("bad_inputs_shared")
  dead_l = str(root / "dead_l")
  os.makedirs(dead_l)
  shutil.copy(os.path.join(model_dir, "model_config.json"), dead_l)
  _, model = load_trained(model_dir)
  model.hierarchy.pi_l.assign([1.0 - 1e-10, 1e-10])
  CheckpointState(model, dead_l).save()
  served = root / "served"
  served.mkdir()
  shutil.copy(os.path.join(data_dir, "fish.npz"), served / "bee.npz")
  handler = functools.partial(QuietHandler, directory=str(served))
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  links = dict(data=data_dir, model=model_dir, dead_k=dead_k, dead_l=dead_l)
  before = {k: snapshot(v) for k, v in links.items()}
  yield dict(links=links, url=f"http://127.0.0.1:{server.server_address[1]}/",
             root=root)
  server.shutdown()
  server.server_close()
  assert {k: snapshot(v) for k, v in links.items()} == before, \
      "a bad-input case wrote into the shared data or model"


def make_case(c, shared, folder):
  """The case folder with links to the shared inputs, then the case's setup;
  returns (args with the server URL filled in, the folder)."""
  os.makedirs(folder)
  for name, target in shared["links"].items():
    os.symlink(target, os.path.join(folder, name))
  if c["setup"]:
    c["setup"](folder, shared)
  return [a.replace("{url}", shared["url"]) for a in c["args"]], folder


@pytest.fixture(scope="module")
def subprocess_runs(shared):
  """Starts every ``sub=True`` case as a real subprocess, two at a time, in
  the background; {name: future of (code, stdout, stderr, folder, before)}."""
  pool = concurrent.futures.ThreadPoolExecutor(2)

  def launch(c):
    args, folder = make_case(c, shared, str(shared["root"] / "sub" / c["name"]))
    before = snapshot(folder)
    return run_subprocess(c["cli"], args, folder) + (folder, before)

  futures = {c["name"]: pool.submit(launch, c) for c in CASES if c["sub"]}
  yield futures
  pool.shutdown(wait=True)


@pytest.fixture(scope="module")
def doc_rows(request):
  """{case: (command, error line)}, kept where python -m tests.bad_inputs_doc
  reads it after the run."""
  return doc.collected(request.config)


def normalize(text, folder, shared):
  """Paths relative to the case folder, the mirror's URL as URL/."""
  for path in (os.path.realpath(folder), folder):
    text = text.replace(path + os.sep, "")
  text = text.replace(shared["url"], "URL/")
  for name, target in shared["links"].items():
    text = text.replace(os.path.realpath(target), name)
  return text


def check(c, code, stderr, folder, before, shared):
  """The catalogue's contract; returns the normalized error line.  (Progress
  lines may precede it; subprocesses may also show TensorFlow's start-up log.)"""
  assert "Traceback" not in stderr, stderr[-3000:]
  assert code == 2, (code, stderr[-3000:])
  lines = [l for l in stderr.splitlines() if l.strip()]
  errors = [l for l in lines if l.startswith("error: ")]
  assert len(errors) == 1 and lines[-1] == errors[0], stderr[-3000:]
  line = normalize(errors[0][len("error: "):], folder, shared)
  assert "\n" not in line and re.search(c["expect"], line), line
  after = snapshot(folder)
  assert after == before, f"files written or changed: {set(after) ^ set(before)}"
  assert not [n for n in os.listdir(folder) if n.startswith(".tmp")]
  return line


@pytest.mark.parametrize("name", list(BY_NAME))
def test_bad_input(name, shared, subprocess_runs, doc_rows):
  c = BY_NAME[name]
  args, folder = make_case(c, shared, str(shared["root"] / "inproc" / name))
  before = snapshot(folder)
  cwd = os.getcwd()
  os.chdir(folder)
  try:
    with full_disk(folder) if c["disk_full"] else contextlib.nullcontext():
      code, _, stderr = run_in_process(c["cli"], args)
  finally:
    os.chdir(cwd)
  line = check(c, code, stderr, folder, before, shared)
  doc_rows[name] = (doc.command(c["cli"], c["args"]), line)
  if c["sub"]:
    code, _, stderr, sub_folder, sub_before = subprocess_runs[name].result()
    assert check(c, code, stderr, sub_folder, sub_before, shared) == line


def test_docs_table_is_current(doc_rows):
  """docs/bad_inputs.md lists exactly these cases with their real messages."""
  if len(doc_rows) != len(CASES):
    pytest.skip("only part of the catalogue ran")
  text = doc.render([(name,) + doc_rows[name] for name in BY_NAME])
  with open(doc.PATH) as f:
    assert f.read() == text, ("docs/bad_inputs.md is stale: regenerate it with "
                              "python -m tests.bad_inputs_doc")
