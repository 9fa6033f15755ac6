"""Where the train step's time goes: graph nodes per recurrence step and a
TF profiler breakdown by part of the model.

  python -m benchmarks.profile_step [--preset small] [--steps 2] [--trace_dir DIR]

1. Node counts of the compiled train step's ``tf.while_loop`` bodies (the
   forward recurrence and its gradient), as traced (before grappler), i.e.
   the graph nodes executed per time step.
2. A host trace (``tf.profiler``, host_tracer_level 3) of ``--steps`` train
   steps on a fixed batch (max_seq_len 130), aggregated by part: forward loop,
   backward loop, encoder / image decoder / stroke decoder outside the loop
   (forward and backward), Adam, the rest.  Times are op times summed over the
   executor threads; tracing every op adds overhead, so read the shares, not the
   absolute milliseconds (benchmarks/bench_train.py times the step untraced).
"""
import collections
import glob
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
if __name__ == "__main__":
  flags.DEFINE_string("preset", "small", "hparams preset")
  flags.DEFINE_string("hparams", "", "overrides on top of the preset")
  flags.DEFINE_integer("steps", 2, "traced train steps")
  flags.DEFINE_string("trace_dir", "", "where the trace goes (default: a temp dir)")

import tensorflow as tf  # noqa: E402
from tensorflow.tsl.profiler.protobuf import xplane_pb2  # noqa: E402

from data.random_batch import random_batch  # noqa: E402
from hparams import get_hparams  # noqa: E402
from model.storage.checkpoint import build_model  # noqa: E402
from model.training.threads import configure_threads  # noqa: E402

CONTROL_FLOW = {"While", "StatelessWhile", "If", "StatelessIf",
                "PartitionedCall", "StatefulPartitionedCall"}


def loop_body_nodes(concrete_fn):
  """{function name: node count} of every while-loop body in the step's graph."""
  lib = concrete_fn.graph.as_graph_def().library
  return {f.signature.name: len(f.node_def) for f in lib.function
          if "while_body" in f.signature.name or "_grad_body" in f.signature.name}


def category(op_name):
  """The part of the model an op (by its scoped name) belongs to.  Names nest
  under the train step's tf.cond ("cond/...", "gradient_tape/cond/..."): a
  part is any scope starting with its layer name, backward when under
  gradient_tape."""
  backward = op_name.startswith("gradient_tape")
  scopes = op_name.split("/")
  has = lambda part: any(s.startswith(part) for s in scopes)
  if "while" in scopes and has("stroke_decoder"):
    return "recurrence " + ("backward" if backward else "forward") + " (loop)"
  for part in ("image_decoder", "encoder", "stroke_decoder"):
    if has(part):
      return part + (" backward" if backward else " forward")
  if "adam" in op_name.lower():
    return "Adam"
  return "rest (hierarchy, losses, clipping, checks)"


def aggregate(trace_dir, steps):
  """-> (wall ms/step, {category: (ms/step, ops/step, {op type: ms/step})})."""
  path = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"),
                          recursive=True))[-1]
  space = xplane_pb2.XSpace()
  with open(path, "rb") as f:
    space.ParseFromString(f.read())
  plane = [p for p in space.planes if p.name == "/host:CPU"][0]
  times, counts = collections.Counter(), collections.Counter()
  types = collections.defaultdict(collections.Counter)
  wall = 0.0
  for line in plane.lines:
    for event in line.events:
      name = plane.event_metadata[event.metadata_id].name
      if not line.name.startswith("tf_") and name == "train_step":
        wall += event.duration_ps / 1e9
      if not line.name.startswith("tf_") or ":" not in name or "::" in name:
        continue
      op_name, op_type = name.rsplit(":", 1)
      if op_type in CONTROL_FLOW:
        continue
      part = category(op_name)
      ms = event.duration_ps / 1e9 / steps
      times[part] += ms
      counts[part] += 1.0 / steps
      types[part][op_type.replace("_Mkl", "").replace("Native", "")] += ms
  return wall / steps, {k: (v, counts[k], types[k]) for k, v in times.items()}


def run(preset="small", overrides="", steps=2, trace_dir="", log=print):
  configure_threads()   # as train.py and bench_train.py
  hps = get_hparams(preset, ",".join(x for x in ("max_seq_len=130,"
                                                 "warmup_steps=0", overrides)
                                     if x))
  model = build_model(hps)
  batch = random_batch(hps)
  fn = model.compiled_train_step()
  for _ in range(2):
    fn(batch)["total"].numpy()
  nodes = loop_body_nodes(fn.get_concrete_function(batch))
  log(f"while-loop bodies (nodes per time step, before grappler), "
      f"{hps.dec_model} H={hps.dec_rnn_size} B={hps.batch_size}:")
  for name, n in sorted(nodes.items(), key=lambda kv: kv[1]):
    log(f"  {n:5d}  {name}")
  trace_dir = trace_dir or tempfile.mkdtemp(prefix="profile_step_")
  opts = tf.profiler.experimental.ProfilerOptions(host_tracer_level=3)
  tf.profiler.experimental.start(trace_dir, options=opts)
  for _ in range(steps):
    fn(batch)["total"].numpy()
  tf.profiler.experimental.stop()
  wall, parts = aggregate(trace_dir, steps)
  total = sum(v[0] for v in parts.values())
  log(f"traced step: {wall:.0f} ms wall, {total:.0f} ms of op time "
      f"(both threads); trace in {trace_dir}")
  log("| part | op ms/step | share | ops/step | top op types (ms/step) |")
  log("|---|---|---|---|---|")
  for part, (ms, n, kinds) in sorted(parts.items(), key=lambda kv: -kv[1][0]):
    top = ", ".join(f"{k} {v:.0f}" for k, v in kinds.most_common(5))
    log(f"| {part} | {ms:.0f} | {100 * ms / total:.0f}% | {n:.0f} | {top} |")
  return nodes, wall, parts


def main(argv):
  del argv
  run(FLAGS.preset, FLAGS.hparams, FLAGS.steps, FLAGS.trace_dir)


if __name__ == "__main__":
  app.run(main)
