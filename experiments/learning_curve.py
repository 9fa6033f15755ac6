"""Every metric of evaluate.py along one training run (a learning curve).

  python -m experiments.learning_curve --work_dir runs/curve \\
      --data_dir datasets/synthetic --preset demo --every 300 --num_steps 3000 \\
      [--hparams ...] [--num_per_category 20] [--seed 0]

Trains ``<work_dir>/model`` in chunks of --every steps (each chunk resumes the
last, so the run is the same as one uninterrupted run of --num_steps: the
schedules depend on the step counter only), and after each chunk samples the
test split conditionally and runs evaluate.py's metrics on those samples.
One row per checkpoint goes to ``curve.json`` and ``curve.md``: Rec, Ret@k,
the code's worth (nats per sketch), level-k / level-l vs style / category NMI and purity, live counts, the share
of samples that emit end-of-sketch, the valid lil and the wall time.  The
table shows which metric saturates first and which still climbs.  Rerunning
continues from the last row.
"""
import json
import os
import time

from utils import quiet  # noqa: F401  (first: quiets TensorFlow's start-up)
from absl import app, flags

from hparams import get_hparams
from utils.errors import (UserError, check_argv, cli_main, parse_flags,
                          require_flags)
from utils.io import atomic_write_text, ensure_dir

FLAGS = flags.FLAGS
if __name__ == "__main__":
  flags.DEFINE_string("work_dir", None, "Output folder (model, samples, curve).")
  flags.DEFINE_string("data_dir", "datasets/synthetic", "Dataset folder.")
  flags.DEFINE_string("preset", "demo", "hparams preset.")
  flags.DEFINE_string("hparams", "", "Extra hparams overrides.")
  flags.DEFINE_list("categories", None, "Categories (default: the preset's).")
  flags.DEFINE_integer("num_steps", 3000, "Last step of the curve.")
  flags.DEFINE_integer("every", 300, "Steps between two evaluated checkpoints.")
  flags.DEFINE_integer("num_per_category", 20, "Conditional samples per "
                       "category at each checkpoint.")
  flags.DEFINE_integer("seed", 0, "Seed of training and sampling.")

COLUMNS = ("step", "minutes", "valid_lil", "rec", "ret10", "ret50", "worth",
           "k_style_nmi", "l_cat_nmi", "l_cat_purity", "live_k", "live_l",
           "ended")


def curve_row(step, minutes, summary, result, ended):
  """The numbers of one checkpoint, flat (COLUMNS)."""
  clus = result.get("clustering", {})
  get = lambda by, level, key: clus.get(by, {}).get(level, {}).get(key)
  return dict(step=step, minutes=round(minutes, 2),
              valid_lil=summary.get("best_valid_lil"), rec=result.get("rec"),
              ret10=result.get("ret", {}).get("top10"),
              ret50=result.get("ret", {}).get("top50"),
              worth=(result.get("code_worth") or {}).get("nats_per_sketch"),
              k_style_nmi=get("style", "level_k", "nmi"),
              l_cat_nmi=get("category", "level_l", "nmi"),
              l_cat_purity=get("category", "level_l", "purity"),
              live_k=result.get("live_k"), live_l=result.get("live_l"),
              ended=ended)


def markdown(rows, columns=COLUMNS):
  """The curve as a markdown table of ``columns``."""
  fmt = lambda v: "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))
  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
  return "\n".join(lines) + "\n"


def run_curve(work_dir, data_dir, hps, num_steps, every, num_per_category=20,
              seed=0, verbose=True):
  """Trains and evaluates chunk by chunk; returns the rows."""
  # Lazy: --help runs without TensorFlow.
  from model.inference import evaluation, synthesis  # pylint: disable=import-outside-toplevel
  from model.training import loop as training  # pylint: disable=import-outside-toplevel
  if every < 1 or num_steps < every:
    raise UserError(f"--every={every}, --num_steps={num_steps}: expected "
                    f"1 <= every <= num_steps")
  ensure_dir(work_dir, "--work_dir")
  model_dir = os.path.join(work_dir, "model")
  path = os.path.join(work_dir, "curve.json")
  rows = []
  if os.path.exists(path):
    with open(path) as f:
      rows = json.load(f)["rows"]
  minutes = rows[-1]["minutes"] if rows else 0.0
  for step in range(every, num_steps + 1, every):
    if any(r["step"] == step for r in rows):
      continue
    t0 = time.time()
    summary = training.train(hps, data_dir, model_dir, seed=seed, num_steps=step,
                             save_every_steps=every, resume=bool(rows),
                             overwrite=not rows, verbose=verbose)
    minutes += (time.time() - t0) / 60.0
    samples = os.path.join(work_dir, "samples")
    made = synthesis.synthesize(model_dir, samples, data_dir=data_dir,
                                num_per_category=num_per_category, seed=seed,
                                overwrite=True)
    result = evaluation.evaluate(model_dir, data_dir, samples,
                                 os.path.join(samples, "evaluation.json"),
                                 seed=seed, show_progress=False)
    rows.append(curve_row(step, minutes, summary, result, made["ended"]))
    atomic_write_text(path, json.dumps(dict(rows=rows, hparams=hps.to_dict()),
                                       indent=1) + "\n")
    atomic_write_text(os.path.join(work_dir, "curve.md"), markdown(rows))
    if verbose:
      print(markdown(rows[-1:]).splitlines()[-1], flush=True)
  return rows


@cli_main
def main(argv):
  check_argv(argv)
  require_flags(FLAGS, "work_dir")
  overrides = FLAGS.hparams
  if FLAGS.categories:
    overrides = f"categories=[{','.join(FLAGS.categories)}]," + overrides
  hps = get_hparams(FLAGS.preset, overrides)
  rows = run_curve(FLAGS.work_dir, FLAGS.data_dir, hps, FLAGS.num_steps,
                   FLAGS.every, FLAGS.num_per_category, FLAGS.seed)
  print(markdown(rows))


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
