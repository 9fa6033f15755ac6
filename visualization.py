"""Visualise generated sketches and the learned hierarchy (method.md §7).

  python visualization.py [--input_dir=outputs/samples] [--output_dir=DIR]

reads ``samples.npz`` written by sample.py and writes ``result.jpg`` (t-SNE of
the codes with each sketch pasted at its position), ``level_k.jpg`` /
``level_l.jpg`` (the t-SNE scatter coloured by level-k / level-l label) and
``tree.jpg`` (live level-l units -> their live level-k components, edges
labelled with q(k|l), each component shown by a few member sketches).

  python visualization.py --projector [--input_dir=...] [--output_dir=DIR]

writes instead the files of TensorBoard's Embedding Projector
(utils/projector.py) into the output folder: the codes, their metadata
(category, level-k, level-l, reference index), a sprite of the sketches and
projector_config.pbtxt; open them with ``tensorboard --logdir <output_dir>``
(PROJECTOR tab), where PCA, t-SNE and UMAP run in the browser -- so no t-SNE
is computed here.
"""
from utils import quiet  # noqa: F401  (first: quiets TensorFlow's start-up)
from absl import app, flags

from utils import figures
from utils.errors import check_argv, cli_main, parse_flags
from utils.samples_file import load_samples

FLAGS = flags.FLAGS
flags.DEFINE_string("input_dir", "outputs/samples",
                    "Folder with samples.npz written by sample.py.")
flags.DEFINE_string("output_dir", None, "Where to write the figures "
                    "(default: the input folder).")
flags.DEFINE_integer("seed", 0, "Seed of t-SNE and of the tree's sketch choice.")
flags.DEFINE_float("edge_threshold", 0.05,
                   "Smallest q(k|l) drawn as a tree edge.")
flags.DEFINE_integer("sketches_per_component", 4,
                     "Member sketches shown per level-k component in tree.jpg.")
flags.DEFINE_boolean("projector", False,
                     "Write the files of TensorBoard's Embedding Projector "
                     "(codes, metadata, sprite, projector_config.pbtxt) "
                     "instead of the JPEG figures.")


@cli_main
def main(argv):
  check_argv(argv, "use --input_dir/--output_dir")
  samples = load_samples(FLAGS.input_dir)
  if FLAGS.projector:
    out = figures.export_projector(samples, FLAGS.output_dir or FLAGS.input_dir)
    print(f"wrote {len(samples['z'])} codes, their metadata and a "
          f"{out['sprite_size'][0]}x{out['sprite_size'][1]} px sprite "
          f"({out['thumb']} px thumbnails) to {out['folder']}; view them with: "
          f"tensorboard --logdir {out['folder']}  (PROJECTOR tab)")
    return
  out = figures.visualize(samples, FLAGS.output_dir or FLAGS.input_dir,
                          seed=FLAGS.seed, edge_threshold=FLAGS.edge_threshold,
                          sketches_per_component=FLAGS.sketches_per_component)
  for name in ("result", "level_k", "level_l", "tree"):
    print(f"wrote {out[name]}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
