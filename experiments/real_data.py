"""The real-data experiment (the logic: experiments/ablation.py).

  python -m experiments.real_data        # full vs EM-only, an hour each

With no flags it trains the ``real`` preset on ../shared/data's aaron_sheep,
omniglot and kanji.rdp200 in runs/real: the full model (two-level hierarchy
+ RPCL) and the EM-only ablation, 60 training minutes each.  Any flag
changes that, e.g.

  python -m experiments.real_data --work_dir runs/ablation --data_dir DIR \\
      --categories a,b,c --preset small --variants full,em,flat,single \\
      --budget_minutes 10 [--hparams ...] [--figures_dir docs/results]

1. copies ``<cat>.npz`` (and ``<cat>_png.npz`` when present) from --data_dir
   into ``<work_dir>/data`` (--data_dir is only read) and renders the missing
   ``_png.npz`` files with data.seq2png;
2. trains every variant with the same seed and the same number of steps:
   ``full`` (two-level hierarchy + RPCL), ``em`` (two-level, EM only),
   ``flat`` (flat GMM, L = K) and ``single`` (one Gaussian).  Unless
   --num_steps is given, the step count is --budget_minutes x the steps/s of
   a short timing run (stored in ``budget.json`` and reused by reruns, so
   the variants stay equal).  Each run validates and checkpoints every
   --validate_every steps (0: a tenth of the steps);
3. per variant: conditional samples of the test split, the four figures of
   visualization.py, evaluate.py's metrics (Rec, Ret@1/10/50, level-k /
   level-l purity / NMI / ARI, live counts, the code's worth) and a
   conditional grid for the figures; for the full variant, samples of each
   live level-l unit;
4. from the TensorBoard logs: the live level-k / level-l counts over steps
   (``live_components.png``) and the learning curve, validation lil and
   code's worth over training minutes (``learning_curve.{png,md,json}``);
   ``results.md`` and ``results.json`` hold the table, ``figures/`` small
   copies of the figures.
It resumes where it stopped: a variant whose ``train_summary.json`` exists
(same steps) is not retrained, and an interrupted training continues from
its last checkpoint (one per validation).  The same command runs on QuickDraw
files from ``python -m data.quickdraw`` (other --data_dir / --categories).
"""
from utils import quiet  # noqa: F401  (first: quiets TensorFlow's start-up)
from absl import app, flags

from experiments.ablation import VARIANTS, run_experiment
from hparams import PRESETS
from utils.errors import check_argv, cli_main, parse_flags

FLAGS = flags.FLAGS
flags.DEFINE_string("work_dir", "runs/real", "Output folder (data copy, "
                    "models, results).")
flags.DEFINE_string("data_dir", "../shared/data", "Folder with "
                    "<category>.npz stroke files (read only).")
flags.DEFINE_list("categories", None, "Comma-separated category names "
                  "(default: the preset's).")
flags.DEFINE_list("variants", ["full", "em"], "Subset of "
                  f"{','.join(VARIANTS)}.")
flags.DEFINE_float("budget_minutes", 60.0, "Training minutes per variant "
                   "(turned into a step count once).")
flags.DEFINE_integer("num_steps", 0, "Training steps per variant (0: from "
                     "--budget_minutes).")
flags.DEFINE_integer("seed", 0, "Seed of training, sampling and t-SNE.")
flags.DEFINE_enum("preset", "real", list(PRESETS), "hparams preset.")
flags.DEFINE_string("hparams", "", "Extra hparams overrides (not hierarchy/"
                    "rpcl: those are the variants).")
flags.DEFINE_integer("num_per_category", 0, "Sketches per category and "
                     "split (0: the preset's).")
flags.DEFINE_integer("num_samples", 100, "Conditional samples per category "
                     "(Rec, Ret, t-SNE).")
flags.DEFINE_integer("grid_per_category", 12, "Reference/synthesis pairs per "
                     "category in the figures' grid.")
flags.DEFINE_integer("level_l_samples", 10, "Samples per live level-l unit "
                     "(full variant).")
flags.DEFINE_integer("classifier_epochs", 5, "Epochs of the Rec classifier.")
flags.DEFINE_integer("validate_every", 0, "Validate/checkpoint every this "
                     "many steps (0: a tenth of the steps, the learning "
                     "curve's points).")
flags.DEFINE_integer("calibration_steps", 40, "Steps of the timing run.")
flags.DEFINE_string("figures_dir", None, "Small JPG/PNG copies of the "
                    "figures (default <work_dir>/figures).")


@cli_main
def main(argv):
  check_argv(argv)
  run_experiment(
      FLAGS.work_dir, FLAGS.data_dir, FLAGS.categories, FLAGS.variants,
      preset=FLAGS.preset, hparams=FLAGS.hparams, seed=FLAGS.seed,
      budget_minutes=FLAGS.budget_minutes, num_steps=FLAGS.num_steps,
      num_per_category=FLAGS.num_per_category, num_samples=FLAGS.num_samples,
      level_l_samples_per_unit=FLAGS.level_l_samples,
      classifier_epochs=FLAGS.classifier_epochs,
      validate_every=FLAGS.validate_every,
      calibration_steps=FLAGS.calibration_steps,
      figures_dir=FLAGS.figures_dir, grid_per_category=FLAGS.grid_per_category)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
