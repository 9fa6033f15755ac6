"""Real-data experiment and ablations (the logic: experiments/ablation.py).

  python -m experiments.real_data --work_dir runs/real \\
      --data_dir ../shared/data --categories aaron_sheep,omniglot,kanji.rdp200 \\
      --budget_minutes 10 --seed 0 [--variants full,em,flat,single] \\
      [--preset small] [--hparams ...] [--figures_dir docs/results]

1. copies ``<cat>.npz`` (and ``<cat>_png.npz`` when present) from --data_dir
   into ``<work_dir>/data`` (--data_dir is only read) and renders the missing
   ``_png.npz`` files with data.seq2png;
2. trains every variant with the same seed and the same number of steps:
   ``full`` (two-level hierarchy + RPCL), ``em`` (two-level, EM only),
   ``flat`` (flat GMM, L = K) and ``single`` (one Gaussian); num_mixture = 2 x
   the number of categories.  Unless --num_steps is given, the step count is
   --budget_minutes x the steps/s of a short timing run of the first variant
   (stored in ``budget.json`` and reused by reruns, so variants stay equal);
3. reads the live level-k / level-l counts from the TensorBoard logs and plots
   them (``live_components.png``);
4. per variant: conditional samples of the test split (sample.py),
   visualisation (visualization.py) and metrics (evaluate.py); for the full
   variant samples from each live level-l unit.  ``results.md`` and
   ``results.json`` hold the table.
A variant whose ``train_summary.json`` exists (same steps) is not retrained,
so an interrupted run continues where it stopped.  The same command runs on
QuickDraw files from ``python -m data.quickdraw`` (other --data_dir /
--categories).
"""
from utils import quiet  # noqa: F401  (first: quiets TensorFlow's start-up)
from absl import app, flags

from experiments.ablation import VARIANTS, run_experiment
from utils.errors import check_argv, cli_main, require_flags

FLAGS = flags.FLAGS
flags.DEFINE_string("work_dir", None, "Output folder (data copy, models, "
                    "results).")
flags.DEFINE_string("data_dir", None, "Folder with <category>.npz stroke files "
                    "(read only).")
flags.DEFINE_list("categories", None, "Comma-separated category names.")
flags.DEFINE_list("variants", list(VARIANTS), "Subset of "
                  f"{','.join(VARIANTS)}.")
flags.DEFINE_float("budget_minutes", 10.0, "Training minutes per variant "
                   "(turned into a step count once).")
flags.DEFINE_integer("num_steps", 0, "Training steps per variant (0: from "
                     "--budget_minutes).")
flags.DEFINE_integer("seed", 0, "Seed of training, sampling and t-SNE.")
flags.DEFINE_enum("preset", "small", ["paper", "release", "small", "demo", "tiny"],
                  "hparams preset.")
flags.DEFINE_string("hparams", "", "Extra hparams overrides (not hierarchy/"
                    "rpcl: those are the variants).")
flags.DEFINE_integer("num_per_category", 2500, "Sketches per category and "
                     "split (0: the preset's).")
flags.DEFINE_integer("num_samples", 100, "Conditional samples per category.")
flags.DEFINE_integer("level_l_samples", 10, "Samples per live level-l unit "
                     "(full variant).")
flags.DEFINE_integer("classifier_epochs", 5, "Epochs of the Rec classifier.")
flags.DEFINE_integer("validate_every", 0, "Validate/checkpoint every this "
                     "many steps (0: once, at the end).")
flags.DEFINE_integer("calibration_steps", 12, "Steps of the timing run.")
flags.DEFINE_string("figures_dir", None, "Small JPG/PNG copies of the "
                    "figures (default <work_dir>/figures).")


@cli_main
def main(argv):
  check_argv(argv)
  require_flags(FLAGS, "work_dir", "data_dir", "categories")
  run_experiment(FLAGS.work_dir, FLAGS.data_dir, FLAGS.categories,
                 FLAGS.variants, FLAGS.preset, FLAGS.hparams, FLAGS.seed,
                 FLAGS.budget_minutes, FLAGS.num_steps, FLAGS.num_per_category,
                 FLAGS.num_samples, FLAGS.level_l_samples,
                 FLAGS.classifier_epochs, FLAGS.validate_every,
                 FLAGS.calibration_steps, FLAGS.figures_dir)


if __name__ == "__main__":
  app.run(main)
