"""Trains RPCL-pix2seqH (method.md §4-§5).

  python train.py --log_root=models/synth --data_dir=datasets/synthetic \\
      --preset=small --hparams="categories=[face,fish,flower,house,star],num_mixture=5"

The loop (validation every ``save_every`` epochs or ``--save_every_steps``
steps, restore-on-miss, early stopping, skipped non-finite steps) is
model/training/loop.py's.  ``model_config.json`` (hparams with the computed
max_seq_len and scale factor) is written next to the checkpoints;
``--resume_training`` continues from the latest checkpoint with that config
(a conflicting --preset/--hparams is refused).
"""
import os

from utils import quiet  # noqa: F401  (first: quiets TensorFlow's start-up)
from absl import app, flags

from hparams import CONFIG_NAME, PRESETS, _split_assignments, get_hparams
from hparams import load_config

flags.DEFINE_string("log_root", "models/default",
                    "Folder for checkpoints, model_config.json and tb/ logs.")
flags.DEFINE_string("data_dir", None,
                    "Folder with <category>.npz and <category>_png.npz files.")
flags.DEFINE_boolean("resume_training", False,
                     "Continue from the latest checkpoint in --log_root.")
flags.DEFINE_string("hparams", "",
                    "Overrides, e.g. 'categories=[bee,bus],num_mixture=4'.")
flags.DEFINE_enum("preset", "paper", list(PRESETS),
                  "Hyper-parameter preset applied before --hparams: paper = the "
                  "paper README's defaults; release = the released TF1 code's "
                  "(K = L = 16, batch 200, 8 categories); small / tiny fit a CPU; demo = the demo's "
                  "(small on the synthetic set, K = L = 16); real = the demo's on "
                  "aaron_sheep, omniglot and kanji.rdp200.")
flags.DEFINE_integer("seed", 0, "Seed of data order, augmentation, init, noise.")
flags.DEFINE_integer("num_steps", None, "Overrides hps.num_steps.")
flags.DEFINE_integer("max_epochs", None, "Stop after this many epochs.")
flags.DEFINE_integer("log_every", 20, "Steps between console/TensorBoard logs.")
flags.DEFINE_integer("save_every_steps", 0,
                     "If > 0: validate/checkpoint every this many steps instead "
                     "of every save_every epochs (short demos on small data).")
flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker"],
                  "tf.distribute strategy: default = one device; mirrored = "
                  "all local GPUs; multi_worker = several machines configured "
                  "by TF_CONFIG (docs/distributed.md).")
flags.DEFINE_boolean("overwrite", False,
                     "Allow starting afresh in a --log_root that holds a run "
                     "(deletes its checkpoints and tb/ logs).")

FLAGS = flags.FLAGS

from model.training.loop import log, train  # noqa: E402
from model.training.run_config import (  # noqa: E402
    NO_DATA_HINT, RESUMABLE_KEYS, config_conflicts)
from utils.errors import (  # noqa: E402
    UserError, check_argv, cli_main, parse_flags)
from model.training.threads import configure_threads  # noqa: E402


def hps_from_flags():
  """hparams from --preset/--hparams; on resume the stored config, refusing
  explicitly given values that conflict with it."""
  hps = get_hparams(FLAGS.preset, FLAGS.hparams)
  config_path = os.path.join(FLAGS.log_root, CONFIG_NAME)
  if not (FLAGS.resume_training and os.path.exists(config_path)):
    return hps
  stored = load_config(config_path)
  explicit = [k for k, _ in _split_assignments(FLAGS.hparams)]
  if FLAGS["preset"].present:
    explicit += list(PRESETS[FLAGS.preset])
  conflicts = config_conflicts(stored, hps, explicit)
  if conflicts:
    raise UserError(f"--resume_training: --preset/--hparams conflict with "
                    f"{config_path}: {', '.join(conflicts)}; drop them or use "
                    f"a new --log_root")
  given = {k: getattr(hps, k) for k in RESUMABLE_KEYS if k in explicit}
  return stored.replace(**given)


@cli_main
def main(argv):
  check_argv(argv)
  if not FLAGS.data_dir:
    raise UserError(NO_DATA_HINT)
  hps = hps_from_flags()
  configure_threads()   # before any TF op
  summary = train(hps, FLAGS.data_dir, FLAGS.log_root,
                  resume=FLAGS.resume_training, seed=FLAGS.seed,
                  num_steps=FLAGS.num_steps, max_epochs=FLAGS.max_epochs,
                  log_every=FLAGS.log_every,
                  save_every_steps=FLAGS.save_every_steps,
                  overwrite=FLAGS.overwrite, strategy=FLAGS.strategy)
  log(f"done: step {summary['step']}, stopped by {summary['stop_reason']}, best "
      f"valid lil {summary['best_valid_lil']:.4f}, {summary['steps_per_sec']:.2f} "
      f"steps/s; model in {FLAGS.log_root}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
