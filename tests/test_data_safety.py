"""Nothing is ever lost: every data-loss typo through the real CLI entry points.

Each case runs a CLI in process (tests/cli_harness.py) with a mistake that
would destroy something -- one folder for two roles, paths that resolve to
the same place, an output folder holding the data or the model, a file name
that is not this program's output -- and checks: exit status 2, one
``error:`` line naming the place, and every file that must survive
byte-for-byte intact (tree digests before and after).
"""
import hashlib
import json
import os
import shutil

import numpy as np
import pytest

from model.storage import model_dir as run_folder
from model.storage.checkpoint import write_train_info
from tests.cli_harness import run_in_process
from tests.conftest import TINY_CATS


def tree(folder):
  """{relative path: sha256 | 'dir' | 'link -> target'} of everything under folder."""
  out = {}
  for root, dirs, files in os.walk(folder):
    for name in dirs + files:
      path = os.path.join(root, name)
      rel = os.path.relpath(path, folder)
      if os.path.islink(path):
        out[rel] = "link -> " + os.readlink(path)
      elif os.path.isdir(path):
        out[rel] = "dir"
      else:
        with open(path, "rb") as f:
          out[rel] = hashlib.sha256(f.read()).hexdigest()
  return out


@pytest.fixture
def place(tiny_model, tmp_path):
  """A copy of the tiny model (M) recording a copy of its data (D), and a
  folder of the user's own notes (N), all under tmp_path."""
  data, model, _ = tiny_model
  m, d, n = tmp_path / "M", tmp_path / "D", tmp_path / "N"
  shutil.copytree(model, m)
  shutil.copytree(data, d)
  write_train_info(str(m), str(d))
  n.mkdir()
  (n / "notes.txt").write_text("three weeks of lab notes\n")
  (n / "result.jpg").write_bytes(b"my own figure")
  return dict(M=str(m), D=str(d), N=str(n), root=str(tmp_path))


def refused(cli, args, *must_survive, mention=None):
  """Runs the CLI; asserts the one-line exit-2 refusal and untouched folders."""
  before = [tree(p) if os.path.isdir(p) else None for p in must_survive]
  code, out, err = run_in_process(cli, args)
  lines = [l for l in err.splitlines() if l.strip()]
  assert code == 2, (code, out, err[-3000:])
  assert len(lines) == 1 and lines[0].startswith("error: "), err[-3000:]
  assert "Traceback" not in err
  if mention:
    assert mention in lines[0], lines[0]
  for p, b in zip(must_survive, before):
    assert (tree(p) if os.path.isdir(p) else None) == b, p
  return lines[0]


# --- sample.py --------------------------------------------------------------------

def test_sample_into_the_model_folder_is_refused(place):
  m = place["M"]
  refused("sample.py", [f"--model_dir={m}", f"--output_dir={m}",
                        "--overwrite=True"], m, mention="--model_dir")
  refused("sample.py", [f"--model_dir={m}", f"--output_dir={m}/samples"], m,
          mention="lies inside")
  # the same place spelt differently: trailing slash, relative, a symlink
  os.symlink(m, os.path.join(place["root"], "alias"))
  for spelling in (m + "/", os.path.relpath(m), os.path.join(place["root"], "alias")):
    refused("sample.py", [f"--model_dir={m}", f"--output_dir={spelling}",
                          "--overwrite=True"], m)


def test_sample_into_a_folder_containing_the_model_is_refused(place):
  refused("sample.py", [f"--model_dir={place['M']}", f"--output_dir={place['root']}",
                        "--overwrite=True"], place["root"], mention="contains")


def test_sample_into_the_data_folder_given_or_recorded_is_refused(place):
  m, d = place["M"], place["D"]
  refused("sample.py", [f"--model_dir={m}", f"--data_dir={d}", f"--output_dir={d}",
                        "--overwrite=True"], d, m, mention="--data_dir")
  refused("sample.py", [f"--model_dir={m}", f"--output_dir={d}/s"], d, m,
          mention="recorded")


def test_sample_overwrite_never_deletes_a_folder_of_other_files(place):
  n = place["N"]
  line = refused("sample.py", [f"--model_dir={place['M']}", f"--output_dir={n}",
                               "--overwrite=True"], n)
  assert "notes.txt" in line


def test_sample_overwrite_replaces_its_own_output_and_clears_leftovers(place):
  out = os.path.join(place["root"], "S")
  args = [f"--model_dir={place['M']}", f"--output_dir={out}",
          "--num_per_category=3"]
  assert run_in_process("sample.py", args)[0] == 0
  # what a kill -9 leaves: our temporaries of a dead process, next to a user file
  dead = os.path.join(place["root"], ".tmp-S-rpcl999999999-x")
  os.mkdir(dead)
  user = os.path.join(place["root"], ".tmp-mine")
  open(user, "w").close()
  code, _, err = run_in_process("sample.py", args + ["--overwrite=True", "--seed=1"])
  assert code == 0, err[-3000:]
  assert not os.path.exists(dead) and os.path.exists(user)
  # a user file dropped into our output folder makes it someone else's
  with open(os.path.join(out, "keep.txt"), "w") as f:
    f.write("mine")
  refused("sample.py", args + ["--overwrite=True"], out, mention="keep.txt")


# --- train.py ---------------------------------------------------------------------

def test_train_into_the_data_folder_is_refused(place):
  d = place["D"]
  for log_root in (d, os.path.join(d, "model"), place["root"]):
    refused("train.py", [f"--log_root={log_root}", f"--data_dir={d}",
                         "--preset=tiny", "--overwrite=True"], d, place["M"])


def test_train_overwrite_refuses_a_run_folder_holding_other_files(place):
  m = place["M"]
  with open(os.path.join(m, "thesis.tex"), "w") as f:
    f.write("\\chapter{}")
  hps = f"--hparams=categories=[{','.join(TINY_CATS)}],num_mixture=2"
  refused("train.py", [f"--log_root={m}", f"--data_dir={place['D']}",
                       "--preset=tiny", hps, "--overwrite=True"], m,
          mention="thesis.tex")


def test_train_with_bad_data_creates_nothing(place, tmp_path):
  log_root = tmp_path / "new" / "model"
  refused("train.py", [f"--log_root={log_root}", f"--data_dir={place['N']}",
                       "--preset=tiny", "--hparams=categories=[fish]"], place["N"])
  assert not (tmp_path / "new").exists()


def test_train_removes_leftovers_of_a_killed_save_and_nothing_else(place):
  m = place["M"]
  os.mkdir(os.path.join(m, "ckpt-99_temp"))
  open(os.path.join(m, "checkpoint.tmp0123abcd"), "w").close()
  open(os.path.join(m, ".tmp-model_config.json-rpcl999999999-ab.json"), "w").close()
  assert run_folder.foreign_entries(m) == []
  removed = run_folder.remove_leftovers(m)
  assert sorted(removed) == sorted(["ckpt-99_temp", "checkpoint.tmp0123abcd",
                                    ".tmp-model_config.json-rpcl999999999-ab.json"])
  assert not [n for n in os.listdir(m) if "tmp" in n or "_temp" in n]


# --- visualization.py and evaluate.py ---------------------------------------------

@pytest.fixture
def samples(place):
  out = os.path.join(place["root"], "S")
  code, _, err = run_in_process("sample.py", [f"--model_dir={place['M']}",
                                              f"--output_dir={out}",
                                              "--num_per_category=3"])
  assert code == 0, err[-3000:]
  return out


def test_visualization_never_writes_into_model_data_or_over_user_figures(place,
                                                                         samples):
  for target, mention in ((place["M"], "model"), (place["D"], "data")):
    refused("visualization.py", [f"--input_dir={samples}",
                                 f"--output_dir={target}"], target, mention=mention)
  refused("visualization.py", [f"--input_dir={samples}",
                               f"--output_dir={place['N']}"], place["N"],
          mention="result.jpg")


def test_evaluate_output_never_replaces_model_data_or_user_files(place, samples):
  m, d, n = place["M"], place["D"], place["N"]
  base = [f"--model_dir={m}", f"--data_dir={d}", f"--samples_dir={samples}"]
  for output in (os.path.join(m, "model_config.json"), os.path.join(m, "x.json"),
                 os.path.join(d, "fish.npz"), m):
    refused("evaluate.py", base + [f"--output={output}"], m, d)
  refused("evaluate.py", base + [f"--output={n}/notes.txt"], n, mention="notes.txt")


# --- the data commands ------------------------------------------------------------

def test_data_commands_never_replace_files_they_did_not_write(tmp_path):
  theirs = tmp_path / "quickdraw"
  theirs.mkdir()
  np.savez(theirs / "fish.npz", train=np.zeros(3))       # someone's real data
  (theirs / "fish_png.npz").write_bytes(b"their renders")
  refused("data.synthetic", [f"--out_dir={theirs}", "--categories=fish",
                             "--num_train=4", "--num_valid=2",
                             "--num_test=2"], str(theirs), mention="fish")
  refused("data.seq2png", [f"--data_dir={theirs}", "--categories=fish"],
          str(theirs), mention="fish_png.npz")


def test_data_synthetic_rerun_replaces_only_its_own_files(tmp_path):
  out = tmp_path / "syn"
  args = [f"--out_dir={out}", "--categories=fish", "--num_train=4",
          "--num_valid=2", "--num_test=2"]
  assert run_in_process("data.synthetic", args)[0] == 0
  (out / "README.txt").write_text("kept")
  code, _, err = run_in_process("data.synthetic", args + ["--seed=3"])
  assert code == 0, err[-2000:]
  assert (out / "README.txt").read_text() == "kept"
  with open(out / ".rpcl-outputs.json") as f:
    assert "README.txt" not in json.load(f)["files"]
