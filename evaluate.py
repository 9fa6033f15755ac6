"""Evaluation metrics of the papers (method.md §8).

  python evaluate.py --model_dir=DIR --data_dir=DIR [--samples_dir=outputs/samples]
                     [--output=SAMPLES_DIR/evaluation.json]

Rec, Ret@1/10/50, the clustering scores and the code's worth of
model/inference/evaluation.py.
Writes a JSON file and prints a table.  ``--samples_dir=''`` skips Rec/Ret.
"""
from utils import quiet  # noqa: F401  (first: quiets TensorFlow's start-up)
from absl import app, flags

from utils.errors import (UserError, check_argv, cli_main, parse_flags,
                          require_flags)

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "Trained model folder (model_config.json "
                    "and checkpoints).")
flags.DEFINE_string("data_dir", None, "Data folder the model was trained on.")
flags.DEFINE_string("samples_dir", "outputs/samples", "Folder with sample.py's "
                    "samples.npz (conditional samples); '' skips Rec and Ret.")
flags.DEFINE_string("output", None, "JSON result (default "
                    "<samples_dir>/evaluation.json).")
flags.DEFINE_integer("classifier_epochs", 5, "Epochs of the Rec classifier.")
flags.DEFINE_integer("classifier_per_category", 20000, "Training images per "
                     "category for the Rec classifier (0 = all).")
flags.DEFINE_bool("retrain_classifier", False, "Ignore a cached classifier.")
flags.DEFINE_integer("batch_size", 256, "Batch size for encoding.")
flags.DEFINE_integer("classifier_seed", 0, "Seed of the classifier training.")


@cli_main
def main(argv):
  check_argv(argv)
  require_flags(FLAGS, "model_dir", "data_dir")
  for name in ("classifier_epochs", "batch_size"):
    if getattr(FLAGS, name) < 1:
      raise UserError(f"--{name}={getattr(FLAGS, name)} must be >= 1")
  if FLAGS.classifier_per_category < 0:
    raise UserError("--classifier_per_category must be >= 0 (0 = all)")
  # Lazy: --help and flag errors run without TensorFlow.
  from model.inference import evaluation  # pylint: disable=import-outside-toplevel
  result = evaluation.evaluate(
      FLAGS.model_dir, FLAGS.data_dir, FLAGS.samples_dir, FLAGS.output,
      FLAGS.classifier_epochs, FLAGS.classifier_per_category,
      FLAGS.retrain_classifier, FLAGS.batch_size, FLAGS.classifier_seed)
  print(evaluation.format_table(result))
  print(f"wrote {result['output']}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
