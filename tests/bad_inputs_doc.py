"""Renders docs/bad_inputs.md from the runs of tests/test_bad_inputs.py.

The error column is the real stderr line of each case (in-process run, paths
relative to the case folder); test_docs_table_is_current keeps the file equal
to what the tests produce.
"""
import shlex

# What each case feeds the command (the folder names of the command line).
INPUTS = {
    "hparams_syntax": "`:` instead of `=`",
    "hparams_unknown_key": "a misspelt key",
    "hparams_wrong_type": "a word for an integer",
    "hparams_bad_list": "a list without its `[`",
    "hparams_out_of_range": "eta outside (0, 1]",
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
    "sample_output_under_a_file": "`afile` is a regular file",
    "sample_disk_full": "every write fails with ENOSPC (simulated)",
    "sample_dead_level_l": "a model whose level-l unit #1 has pi ~ 0",
    "evaluate_no_config": "a folder without model_config.json",
    "evaluate_no_checkpoint": "a config but no checkpoint",
    "evaluate_checkpoint_other_num_mixture": "config num_mixture 3, checkpoint 2",
    "evaluate_other_data": "a data folder without the model's `fish`",
    "evaluate_samples_missing": "a samples folder without samples.npz",
    "evaluate_output_under_a_file": "`afile` is a regular file",
    "tsne_too_few_samples": "a samples.npz of 3 sketches",
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
}

# Bad inputs run through a CLI by other test files (not repeated here).
ELSEWHERE = [
    ("--level_k / --level_l out of range", "sample.py --level_k=7 / --level_l=-1",
     "tests/test_sample_cli.py::test_bad_input_in_process"),
    ("sampling a dead level-k component", "sample.py --level_k=3 (q(3|l) ~ 0)",
     "tests/test_sample_cli.py::test_bad_input_subprocess"),
    ("no config / no checkpoint for sample.py", "sample.py --model_dir=EMPTY",
     "tests/test_sample_cli.py::test_bad_input_in_process"),
    ("analogy/interpolation indices, unknown category, temperature 0, two modes",
     "sample.py --analogy=0,x ...", "tests/test_sample_cli.py"),
    ("resume with another z_size", "train.py --resume_training --hparams=z_size=16",
     "tests/test_checkpoint.py::test_kill9_then_resume"),
    ("no --data_dir at all", "train.py --preset=tiny",
     "tests/test_checkpoint.py::test_no_data_dir_says_how_to_get_data"),
    ("t-SNE with 4 samples, empty samples.npz, no samples.npz", "visualization.py",
     "tests/test_visualization.py::test_cli_bad_input_is_one_line_exit_2"),
    ("evaluate.py without --model_dir, missing model, --batch_size=0", "evaluate.py",
     "tests/test_evaluate.py::test_cli_bad_input_is_one_line_exit_2"),
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
per split), `model` a tiny model trained on it, `dead_l` that model with level-l unit
#1 pruned, and `mydata` / `mymodel` copies with the damage named in *input*.  URL is a
local QuickDraw mirror.  "Simulated" full disks make every file write under the case
folder fail with ENOSPC.  Cases marked (sub) also run as a real subprocess and must
print the same line.  Messages longer than 200 characters are cut here (…).

This file is generated: `BAD_INPUTS_DOC=write pytest tests/test_bad_inputs.py`.

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
