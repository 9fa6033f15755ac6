"""Runs every benchmark and prints one markdown table.

  python -m benchmarks.run_all [--only train,memory] [--quick] [--no_write]

Each benchmark's ``run()`` executes in its own subprocess (own TF threads, own
peak memory); the table of results, the date and the machine (nproc, CPU
model, TF version, load average) is printed and written to
benchmarks/README.md (atomically; ``--no_write`` to skip).  ``--quick`` uses
smaller sizes (train: small preset only; memory: 2 categories) for a smoke
run; its table is not written unless ``--write_quick``.
"""
import datetime
import json
import os
import platform
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from utils import quiet  # noqa: E402,F401  (first: quiets TensorFlow's start-up)
from absl import app, flags  # noqa: E402

from utils.errors import UserError, cli_main, parse_flags  # noqa: E402

FLAGS = flags.FLAGS
if __name__ == "__main__":
  flags.DEFINE_list("only", [], "subset of raster,pipeline,sample,memory,train,"
                    "buckets")
  flags.DEFINE_boolean("quick", False, "smaller sizes (smoke run)")
  flags.DEFINE_boolean("no_write", False, "do not rewrite benchmarks/README.md")
  flags.DEFINE_boolean("write_quick", False, "write the README even if --quick")

MARK = "@@BENCH_RESULT@@"
README = os.path.join(ROOT, "benchmarks", "README.md")
# name -> (module, run() kwargs, quick kwargs)
BENCHES = {
    "raster": ("bench_raster", {}, dict(num=300)),
    "pipeline": ("bench_pipeline", {}, dict(batches=50)),
    "sample": ("bench_sample", {}, dict(num=200, subset=5)),
    "memory": ("bench_memory", {}, dict(categories=2, per_category=5000)),
    "train": ("bench_train", dict(sizes=["small", "paper"], reps=4, reps_big=2),
              dict(sizes=["small"], reps=2)),
    "buckets": ("bench_buckets", dict(batches=24), dict(batches=6)),
}
CHILD = ("import json, sys; sys.path.insert(0, {root!r}); "
         "from benchmarks import {module} as b; "
         "r = b.run(**json.loads({kwargs!r})); "
         "print({mark!r} + json.dumps(r, default=str))")


def run_one(name, quick=False):
  """Runs benchmark ``name`` in a subprocess; returns its result dict."""
  module, kwargs, quick_kwargs = BENCHES[name]
  code = CHILD.format(root=ROOT, module=module, mark=MARK,
                      kwargs=json.dumps(quick_kwargs if quick else kwargs))
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                        text=True, cwd=ROOT, check=False)
  lines = [l for l in proc.stdout.splitlines() if l.startswith(MARK)]
  if proc.returncode != 0 or not lines:
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    return {"error": " | ".join(tail)[-400:]}
  return json.loads(lines[-1][len(MARK):])


def machine():
  """nproc, CPU model, TF version, load average, date."""
  model = platform.processor() or "?"
  try:
    with open("/proc/cpuinfo") as f:
      model = next(l.split(":", 1)[1].strip() for l in f
                   if l.startswith("model name"))
  except (OSError, StopIteration):
    pass
  # Lazy: the benchmarks run in subprocesses; here only TF's version is read.
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  return dict(nproc=os.cpu_count(), cpu=model, tf=tf.__version__,
              python=platform.python_version(),
              load=" ".join(f"{x:.1f}" for x in os.getloadavg()),
              date=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"))


def _f(value, fmt="{:.1f}"):
  return "n/a" if value is None else fmt.format(value)


def rows(results):
  """(benchmark, measurement, value, target / note) rows of the table."""
  out = []
  add = lambda *r: out.append(r)
  r = results.get("raster")
  if r and "error" not in r:
    add("raster", f"data.raster, {r['workers']} workers (sketches/s)",
        _f(r["ours_per_s"], "{:.0f}"),
        f"{r['ratio']:.0f}x svgwrite+cairosvg ({r['ratio_cpu_1worker']:.0f}x per "
        f"core CPU time)")
  p = results.get("pipeline")
  t = results.get("train") or {}
  if p and "error" not in p:
    step = t.get("small_full_s")
    headroom = p["pipeline_batches_per_s"] * step if step else None
    add("pipeline", "tf.data training batches/s (small preset)",
        _f(p["pipeline_batches_per_s"]),
        f"headroom vs small train step: {_f(headroom, '{:.0f}')}x (target >= 10x)")
  s = results.get("sample")
  if s and "error" not in s:
    add("sample", "batched sampler (sketches/s)",
        _f(s["batched_sketches_per_s"]),
        f"{s['ratio_vs_eager']:.0f}x per-sketch eager loop (target >= 50x)")
  m = results.get("memory")
  if m and "error" not in m:
    add("memory", f"load_dataset peak RSS, {m['categories']} x "
        f"{m['per_category']} sketches + 48x48 images (MB)",
        _f(m["peak_rss_mb"], "{:.0f}"),
        f"limit {m['limit_mb']} MB: {'OK' if m['under_limit'] else 'EXCEEDED'}"
        f" (arrays {m['loaded_arrays_mb']:.0f} MB)")
  if t and "error" not in t:
    add("train", "sgemm 4096x4096 at the start (GFLOP/s)",
        _f(t.get("sgemm_gflops")), "the machine's matmul limit")
    for size in ("small", "paper"):
      if f"{size}_H" not in t:
        continue
      g = lambda k: t.get(f"{size}_{k}")
      tag = (f"{size} (H={g('H')} B={g('B')} T={g('T')} D={g('D')} "
             f"K={g('K')} L={g('L')})")
      for part, what in (("sgemm", "sgemm 4096^2, interleaved with the steps"),
                         ("lstm", "keras.layers.LSTM train step"),
                         ("rec", "our HyperLSTM recurrence fwd+bwd"),
                         ("rec_old", "the recurrence, old path (autodiff)"),
                         ("dec", "our stroke decoder train step"),
                         ("dec_ops", "the decoder step, TF ops (no C++ kernels)"),
                         ("enc", "our encoder fwd+bwd"),
                         ("enc_ops", "the encoder, TF ops (no C++ kernels)"),
                         ("full", "our full train step"),
                         ("full_ops", "the full step, TF ops (no C++ kernels)"),
                         ("full_in_ops", "the full step, instance norms as TF ops"),
                         ("full_old", "the full train step, old paths")):
        if g(part + "_gflops") is not None:
          note = f"{g(part + '_s') * 1e3:.0f} ms/call"
          if g(part + "_vs_sgemm") is not None:
            note += f", {100 * g(part + '_vs_sgemm'):.0f}% of sgemm"
          add("train", f"{tag}: {what} (GFLOP/s)", _f(g(part + "_gflops")), note)
      for part in ("rec", "full"):
        if g(part + "_speedup") is not None:
          add("train", f"{tag}: {part}: old / new time",
              _f(g(part + "_speedup"), "{:.2f}x"), "same math, one process")
      for part in ("rec", "dec", "enc", "full"):
        if g(part + "_fused_speedup") is not None:
          add("train", f"{tag}: {part}: TF ops / C++ kernels time",
              _f(g(part + "_fused_speedup"), "{:.2f}x"),
              "model/fast/native_ops.py, same math, one process")
      if g("full_norm_speedup") is not None:
        add("train", f"{tag}: full: instance norms as TF ops / C++ kernel time",
            _f(g("full_norm_speedup"), "{:.2f}x"),
            "model/fast/fused_norm.py, same math, one process")
      if g("dec_vs_lstm") is not None:
        add("train", f"{tag}: decoder / keras LSTM FLOP/s",
            _f(g("dec_vs_lstm"), "{:.2f}"), "target >= 0.8")
      if g("hier_share") is not None:
        add("train", f"{tag}: hierarchy update + losses share of the step",
            _f(100 * g("hier_share"), "{:.2f}%"), f"{g('hier_s') * 1e3:.1f} ms")
      if g("full_tracing_count") is not None:
        add("train", f"{tag}: train-step traces", str(g("full_tracing_count")),
            "1 = no retracing")
    add("train", "peak RSS of the train benchmark (MB)",
        _f(t.get("maxrss_mb"), "{:.0f}"), "all parts, both sizes")
  b = results.get("buckets")
  if b and "error" not in b:
    add("buckets", f"training sketches/s, 3 real sets, small preset, "
        f"length_buckets={b['length_buckets']}",
        _f(b["longest_sketches_per_s"]),
        f"{b['longest_vs_padded']:.2f}x padded batches "
        f"({_f(b['padded_sketches_per_s'])}/s); mean padded length "
        f"{b['longest_mean_padded_len']:.0f} vs {b['max_seq_len']}; no padding "
        f"at all: at most {b['no_padding_bound_vs_padded']:.2f}x (step "
        f"{b['fixed_ms']:.0f} ms + {b['per_point_ms']:.2f} ms/point)")
  for name, res in results.items():
    if "error" in res:
      add(name, "FAILED", "-", res["error"])
  return out


def table(results, info):
  lines = [f"Date {info['date']}; machine: {info['nproc']} CPUs ({info['cpu']}), "
           f"TensorFlow {info['tf']}, Python {info['python']}; load average at "
           f"start {info['load']} (shared machine: times are minima over "
           f"repetitions, ratios measured side by side in one process).", "",
           "| benchmark | measurement | value | target / note |",
           "|---|---|---|---|"]
  lines += [f"| {' | '.join(r)} |" for r in rows(results)]
  return "\n".join(lines)


MARKER = "<!-- latest results (written by benchmarks/run_all.py) -->"


def write_readme(text, path=README):
  """Replaces the section after MARKER of benchmarks/README.md (a tracked
  document: everything before the marker is kept byte for byte, the section
  after it is this program's).  Temporary file + rename; a README without the
  marker is refused, not rewritten."""
  try:
    with open(path) as f:
      head, found, _ = f.read().partition(MARKER)
  except OSError as exc:
    raise UserError(f"{path}: cannot read it ({exc.strerror})") from None
  if not found:
    raise UserError(f"{path}: no line {MARKER!r}, so no section of it is "
                    f"this program's; not rewriting it")
  tmp = f"{path}.tmp-run_all-{os.getpid()}"
  try:
    with open(tmp, "w") as f:
      f.write(head + MARKER + "\n\n" + text + "\n")
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def run(only=(), quick=False, log=print):
  info = machine()
  results = {}
  for name in BENCHES:
    if only and name not in only:
      continue
    log(f"running {name} ...")
    results[name] = run_one(name, quick)
  return info, results


@cli_main
def main(argv):
  del argv
  unknown = sorted(set(FLAGS.only) - set(BENCHES))
  if unknown:
    raise UserError(f"--only: unknown benchmark(s) {unknown}; expected some of "
                    f"{', '.join(BENCHES)}")
  info, results = run(FLAGS.only, FLAGS.quick)
  text = table(results, info)
  print(text)
  if not FLAGS.no_write and (not FLAGS.quick or FLAGS.write_quick):
    write_readme(text)
    print(f"written to {README}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
