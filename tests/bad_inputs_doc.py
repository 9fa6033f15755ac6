"""Renders docs/bad_inputs.md from the runs of tests/test_bad_inputs.py.

  python -m tests.bad_inputs_doc

runs every case of the catalogue (pytest, in this process) and rewrites the
file from their real stderr lines (in-process runs, paths relative to the case
folder).  A test run never writes it; test_docs_table_is_current fails when
it differs from what the cases print.
"""
import os
import shlex
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATH = os.path.join(ROOT, "docs", "bad_inputs.md")
_ROWS = pytest.StashKey[dict]()


def collected(config):
  """The {case: (command, error line)} a run of the catalogue fills in."""
  return config.stash.setdefault(_ROWS, {})

# What each case feeds the command (the folder names of the command line).
INPUTS = {
    "hparams_syntax": "`:` instead of `=`",
    "hparams_unknown_key": "a misspelt key",
    "hparams_wrong_type": "a word for an integer",
    "hparams_bad_list": "a list without its `[`",
    "hparams_out_of_range": "eta outside (0, 1]",
    "train_no_data_dir": "no --data_dir at all",
    "data_dir_missing": "no such folder",
    "data_dir_empty": "a folder without .npz files",
    "category_file_missing": "no `cat.npz` in the data folder",
    "npz_truncated": "`fish.npz` cut in half",
    "npz_wrong_keys": "`fish.npz` with keys a, b",
    "npz_wrong_shape": "a (4, 2) sketch",
    "npz_wrong_dtype": "a sketch of strings",
    "npz_empty_sketch": "a (0, 3) sketch",
    "npz_nan": "a sketch with a NaN offset",
    "png_count_disagrees": "`fish_png.npz` one image short",
    "png_size_disagrees": "`house_png.npz` rendered at 32 px",
    "png_missing": "`house_png.npz` deleted",
    "batch_larger_than_split": "batch_size 65 > 64 training sketches",
    "resume_nothing_to_resume": "an empty --log_root",
    "resume_conflicting_value": "a run with eta 0.05 resumed with eta=0.1",
    "resume_conflicting_hparams": "categories in another order",
    "log_root_holds_a_run": "a trained --log_root, no --resume/--overwrite",
    "log_root_under_a_file": "`afile` is a regular file",
    "train_disk_full": "every write fails with ENOSPC (simulated)",
    "checkpoint_truncated": "the checkpoint's .data file cut in half",
    "config_not_json": "model_config.json is not JSON",
    "checkpoint_other_z_size": "config z_size 16, checkpoint z_size 8",
    "sample_no_data_recorded": "a model folder without train_info.json",
    "sample_num_per_category_0": "0 sketches per category",
    "sample_temperature_0": "temperature 0 without --greedy",
    "sample_two_modes": "two modes at once",
    "sample_level_k_out_of_range": "level-k #7 of K = 4",
    "sample_level_l_out_of_range": "level-l #-1",
    "sample_dead_level_k": "a model whose level-k component #3 has q ~ 0",
    "sample_dead_level_l": "a model whose level-l unit #1 has pi ~ 0",
    "sample_unknown_category": "a category the model does not know",
    "sample_analogy_malformed": "a letter for an index",
    "sample_analogy_out_of_range": "test index 32 of 32",
    "sample_interpolate_out_of_range": "test index -2",
    "sample_output_under_a_file": "`afile` is a regular file",
    "sample_disk_full": "every write fails with ENOSPC (simulated)",
    "evaluate_no_model_dir": "no --model_dir",
    "evaluate_model_dir_missing": "no such folder",
    "evaluate_batch_size_0": "batch size 0",
    "evaluate_no_config": "a folder without model_config.json",
    "evaluate_no_checkpoint": "a config but no checkpoint",
    "evaluate_checkpoint_other_num_mixture": "config num_mixture 3, checkpoint 2",
    "evaluate_other_data": "a data folder without the model's `fish`",
    "evaluate_samples_missing": "a samples folder without samples.npz",
    "evaluate_output_under_a_file": "`afile` is a regular file",
    "tsne_too_few_samples": "a samples.npz of 3 sketches",
    "samples_empty": "a samples.npz of 0 sketches",
    "samples_truncated": "samples.npz cut in half",
    "samples_inconsistent": "pi_k of 3 weights, q_kl of 4 rows",
    "figures_under_a_file": "`afile` is a regular file",
    "figures_disk_full": "every write fails with ENOSPC (simulated)",
    "synthetic_out_dir_is_a_file": "`afile` is a regular file",
    "synthetic_empty_split": "0 validation sketches",
    "seq2png_infinite_offsets": "a sketch with an infinite offset",
    "seq2png_png_width": "a 4 px image size",
    "seq2png_disk_full": "every write fails with ENOSPC (simulated)",
    "quickdraw_unknown_category": "a name the server does not have (404)",
    "quickdraw_no_categories": "no --categories",
    "quickdraw_out_dir_under_a_file": "`afile` is a regular file",
    "explore_no_model": "no such folder",
    "export_no_out_dir": "no --out_dir",
    "export_into_the_model": "--out_dir inside the model folder",
    "export_over_foreign_files": "--overwrite on a folder export.py did not write",
    "export_max_len_negative": "--max_len=-1",
}

# Bad inputs run through a CLI by other test files (not repeated here).
ELSEWHERE = [
    ("seq2png: missing folder/category, unwritable out, non-sketch npz",
     "python -m data.seq2png", "tests/test_seq2png.py::test_cli_errors_are_one_line"),
    ("synthetic: unknown category", "python -m data.synthetic --categories dragon",
     "tests/test_synthetic.py::test_errors"),
    ("quickdraw: no network", "python -m data.quickdraw --base_url=closed port",
     "tests/test_quickdraw.py::test_cli_error_is_one_line_exit_2"),
]

MAX_CHARS = 200   # longer messages (e.g. the list of known hparams) are cut

HEADER = """# Bad inputs: what each command says

Every row is one test of `tests/test_bad_inputs.py` (`pytest tests/test_bad_inputs.py
-k <case>`), run end to end through the command's real entry point.  Each must exit
with status 2 and print exactly the one line below on stderr (no traceback), and must
leave every file as it was: nothing new, nothing half-written.  Commands run in a
fresh folder where `data` is a `data.synthetic` folder (fish, house; 32/8/16 sketches
per split), `model` a tiny model trained on it, `dead_k` / `dead_l` that model with
level-k component #3 / level-l unit #1 pruned, and `mydata` / `mymodel` copies with
the damage named in *input*.  URL is a
local QuickDraw mirror.  "Simulated" full disks make every file write under the case
folder fail with ENOSPC.  Cases marked (sub) also run as a real subprocess and must
print the same line.  Messages longer than 200 characters are cut here (…).

This file is generated: `python -m tests.bad_inputs_doc` (a test checks it is current).

| # | case | command | input | error (stderr, exit 2) |
|---|------|---------|-------|------------------------|
"""

FOOTER = """
## Covered by other test files

| case | command | test |
|------|---------|------|
{elsewhere}

## Faults (tests/test_faults.py)

- `kill -9` of `train.py` at random moments (several trials, saves every 2 steps):
  every resume starts from the latest complete checkpoint, no checkpoint or
  `model_config.json` is ever unreadable, at most one save interval is lost.
- NaN / inf in a training batch and in the loss: the step is skipped and logged, the
  weights and the hierarchy state stay finite; three in a row restore the last
  checkpoint; a persistent NaN stops with one `error:` line (exit 2) and an intact
  checkpoint.
- Interrupted `sample.py`, `visualization.py`, `data.seq2png` and `data.quickdraw` runs
  (killed or failing mid-write) leave no output a later run would take as complete.

Reproducibility (same `--seed` on CPU, and what is not deterministic on a GPU):
see [reproducibility.md](reproducibility.md).
"""


def command(cli, args):
  """The case's command line as a user would type it."""
  head = ["python", cli] if cli.endswith(".py") else ["python", "-m", cli]
  return " ".join(head + [shlex.quote(a.replace("{url}", "URL/")) for a in args])


def _cell(text, limit=None):
  if limit and len(text) > limit:
    text = text[:limit - 1] + "…"
  return "`" + text.replace("|", "\\|").replace("`", "'") + "`"


def render(rows):
  """rows: [(case name, command, error line)] -> the markdown document."""
  # Lazy: tests/test_bad_inputs.py imports this module (a cycle).
  from tests.test_bad_inputs import BY_NAME  # pylint: disable=import-outside-toplevel
  missing = sorted(set(BY_NAME) - set(INPUTS))
  assert not missing, f"describe these cases in INPUTS: {missing}"
  body = []
  for i, (name, cmd, line) in enumerate(rows, 1):
    sub = " (sub)" if BY_NAME[name]["sub"] else ""
    body.append(f"| {i} | {name}{sub} | {_cell(cmd)} | {INPUTS[name]} | "
                f"{_cell(line, MAX_CHARS)} |")
  elsewhere = "\n".join(f"| {a} | {_cell(b)} | {c} |" for a, b, c in ELSEWHERE)
  return HEADER + "\n".join(body) + "\n" + FOOTER.format(elsewhere=elsewhere)


def main():
  """Runs the catalogue and rewrites docs/bad_inputs.md; exit status 1 (and
  the file untouched) unless every case passed."""
  # the test module's copy of this file (under -m this one is __main__)
  from tests import bad_inputs_doc  # pylint: disable=import-outside-toplevel

  class Collect:
    found = {}

    def pytest_sessionfinish(self, session):
      self.found = dict(bad_inputs_doc.collected(session.config))

  plugin = Collect()
  code = pytest.main(["-q", "-p", "no:cacheprovider", "-n", "0",   # this process
                      os.path.join(ROOT, "tests", "test_bad_inputs.py"),
                      "-k", "not test_docs_table_is_current"], plugins=[plugin])
  # Lazy: a cycle (as in render), and after pytest has collected the cases.
  from tests.test_bad_inputs import BY_NAME  # pylint: disable=import-outside-toplevel
  if code != 0 or sorted(plugin.found) != sorted(BY_NAME):
    sys.stderr.write("error: not every case passed; docs/bad_inputs.md is "
                     "unchanged\n")
    return 1
  text = render([(name,) + plugin.found[name] for name in BY_NAME])
  tmp = PATH + ".tmp"
  with open(tmp, "w") as f:   # a tracked doc: no output manifest
    f.write(text)
  os.replace(tmp, PATH)
  print(f"wrote {PATH} ({len(BY_NAME)} cases)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
