"""A trained model in the browser: the hierarchy, a drawing canvas, analogies.

  python explore.py --model_dir=outputs/demo/model

Starts a local web app (Gradio) on http://127.0.0.1:7860 with three tabs:
Hierarchy (the learned tree; fresh sketches from a chosen level-l unit or
level-k component), Draw (a canvas; the drawing becomes the encoder's 48x48
input exactly as the training images were made, then p(l|y), the top p(k|y),
reconstructions and the nearest test sketches) and Analogy and
interpolation (test sketches or the drawing; z_C + (z_B - z_A) and the codes
from A to B, decoded).  --model_dir is a model folder of train.py or a
SavedModel of export.py.  The model is loaded once; every action decodes its
sketches in one call of the batched sampler.  No public share link is ever
made and the page takes no file from the browser; --host other than
127.0.0.1 serves the page, without any login, to whoever reaches the port.
The logic is model/inference/explorer.py, the page explorer_ui.py.
"""
from utils import quiet  # noqa: F401  (first: quiets TensorFlow's start-up)
from absl import app, flags

from model.inference import explorer, explorer_ui
from model.inference.backends import open_model
from utils.errors import (UserError, check_argv, cli_main, parse_flags,
                          require_flags)

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "A model folder (train.py's --log_root) "
                    "or a SavedModel written by export.py.")
flags.DEFINE_string("data_dir", None, "Data folder of the test sketches (gallery, "
                    "nearest sketches); default: the one the model records.")
flags.DEFINE_string("host", "127.0.0.1", "Address to serve on (127.0.0.1: this "
                    "machine only).")
flags.DEFINE_integer("port", 7860, "Port to serve on.")
flags.DEFINE_integer("max_test", 0, "Use at most this many test sketches (a "
                     "fixed seeded subset; 0: all).")


@cli_main
def main(argv):
  check_argv(argv)
  require_flags(FLAGS, "model_dir", hint="a model folder or an export.py folder")
  if not 1 <= FLAGS.port <= 65535:
    raise UserError(f"--port={FLAGS.port}: expected 1..65535")
  if FLAGS.max_test < 0:
    raise UserError(f"--max_test={FLAGS.max_test}: expected 0 (all) or more")
  ex = explorer.Explorer(open_model(FLAGS.model_dir), FLAGS.data_dir,
                         FLAGS.max_test)
  page = explorer_ui.build_app(ex)
  print(f"explore: http://{FLAGS.host}:{FLAGS.port} (Ctrl+C stops it)",
        flush=True)
  try:
    explorer_ui.launch(page, FLAGS.host, FLAGS.port)
  except OSError as e:
    raise UserError(f"cannot serve on {FLAGS.host}:{FLAGS.port}: {e}") from None


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
