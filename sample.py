"""Sketch synthesis from a trained RPCL-pix2seqH model (method.md §6).

  python sample.py --model_dir=DIR --output_dir=outputs/samples \\
      --num_per_category=10 --conditional=True

Modes: conditional (codes = encoder means of random test references),
unconditional (z ~ N(0, I)), --level_k / --level_l (codes from a chosen
level-k Gaussian or level-l unit), --all_level_l (from every live unit, in
one folder), --analogy=A,B,C (z_C + z_B - z_A) and
--interpolate=A,B (codes along the line); A, B, C index the test split as
loaded with the model's hparams (categories in order, first
num_per_category each).  All sketches are decoded together by
model/inference/sampler.py.  The output folder (per-sketch SVG + 48x48 PNG,
samples.npz, grid.png) is built in a temporary folder and renamed into place.
"""
from utils import quiet  # noqa: F401  (first: quiets TensorFlow's start-up)
from absl import app, flags

from utils.errors import check_argv, cli_main, parse_flags, require_flags

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "Trained model folder (model_config.json + "
                    "checkpoint), the --log_root of train.py.")
flags.DEFINE_string("output_dir", "outputs/samples", "Where to write the samples "
                    "(visualization.py reads this folder by default).")
flags.DEFINE_string("data_dir", None, "Data folder for reference sketches; default: "
                    "the one recorded by train.py in the model folder.")
flags.DEFINE_integer("num_per_category", 10, "Sketches per category (conditional / "
                     "unconditional) or per requested component / analogy.")
flags.DEFINE_boolean("conditional", True, "Codes from test-split references (True) "
                     "or z ~ N(0, I) (False).")
flags.DEFINE_float("temperature", 0.24, "Sampling temperature tau > 0.")
flags.DEFINE_boolean("greedy", False,
                     "Argmax mixture / mean offsets / argmax pen.")
flags.DEFINE_integer("seed", 0,
                     "Seed of references, codes and decoding noise.")
flags.DEFINE_integer("level_k", None, "Draw codes from this level-k Gaussian.")
flags.DEFINE_integer("level_l", None, "Draw codes from this level-l unit.")
flags.DEFINE_boolean("all_level_l", False, "Draw num_per_category codes from "
                     "every live level-l unit (each unit's as --level_l gives).")
flags.DEFINE_string("analogy", None,
                    "A,B,C: test indices; decode z_C + (z_B - z_A).")
flags.DEFINE_string("interpolate", None,
                    "A,B: test indices; decode codes between.")
flags.DEFINE_integer("steps", 8, "Number of codes for --interpolate (>= 2).")
flags.DEFINE_list("categories", None,
                  "Conditional mode: only these categories.")
flags.DEFINE_integer("max_len", 0,
                     "Longest sketch in points (0: max_seq_len).")
flags.DEFINE_boolean("overwrite", False,
                     "Replace an existing non-empty output_dir.")


@cli_main
def main(argv):
  check_argv(argv)
  require_flags(FLAGS, "model_dir",
                hint="the folder train.py wrote (its --log_root)")
  # Lazy: --help and flag errors run without TensorFlow.
  from model.inference import synthesis  # pylint: disable=import-outside-toplevel
  summary = synthesis.synthesize(
      FLAGS.model_dir, FLAGS.output_dir, FLAGS.data_dir, FLAGS.num_per_category,
      FLAGS.conditional, FLAGS.temperature, FLAGS.greedy, FLAGS.seed,
      FLAGS.level_k, FLAGS.level_l, FLAGS.analogy, FLAGS.interpolate,
      FLAGS.steps, FLAGS.categories, FLAGS.max_len, FLAGS.overwrite,
      FLAGS.all_level_l)
  print(f"wrote {summary['num']} {summary['mode']} sketches to "
        f"{summary['output_dir']} (mean length {summary['mean_length']:.1f}, "
        f"{100 * summary['ended']:.0f}% ended before max_len)")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
