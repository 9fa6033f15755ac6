"""A trained model as a portable TensorFlow SavedModel.

  python export.py --model_dir=outputs/demo/model --out_dir=exports/demo

Writes a SavedModel with the serving signatures encode, posteriors, sample,
sample_unit and hierarchy, and the hparams and the hierarchy's parameters as
assets (model/inference/export.py lists them).  It loads with plain
``tf.saved_model.load`` anywhere TensorFlow is installed, without this
repository, and ``sample`` gives the sketches sample.py draws for the same
codes and seed.  ``saved_model_cli show --all --dir OUT`` lists the
signatures.  --out_dir may not be in the model or its data folder; it is
built beside its final place and renamed; --overwrite replaces only an
earlier export (every file recorded by export.py and unchanged).
"""
from utils import quiet  # noqa: F401  (first: quiets TensorFlow's start-up)
from absl import app, flags

from model.inference import export
from utils.errors import check_argv, cli_main, parse_flags, require_flags

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "Trained model folder (train.py's "
                    "--log_root).")
flags.DEFINE_string("out_dir", None, "Folder of the SavedModel.")
flags.DEFINE_integer("max_len", 0, "Longest sketch the export decodes, in points "
                     "(0: the model's max_seq_len).")
flags.DEFINE_boolean("overwrite", False, "Replace an earlier export in out_dir.")


@cli_main
def main(argv):
  check_argv(argv)
  require_flags(FLAGS, "model_dir", hint="the folder train.py wrote (its --log_root)")
  require_flags(FLAGS, "out_dir", hint="where to write the SavedModel")
  summary = export.export(FLAGS.model_dir, FLAGS.out_dir, FLAGS.overwrite,
                          FLAGS.max_len)
  print(f"wrote {summary['out_dir']} ({summary['bytes'] / 1e6:.1f} MB, step "
        f"{summary['step']}, sketches up to {summary['max_len']} points); "
        f"signatures: {', '.join(summary['signatures'])}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
