"""Rasteriser speed and fidelity: data.raster vs the reference SVG + cairo path.

The reference (RPCL-pix2seq's seq2png) writes each sketch as an SVG path with
svgwrite, rasterises it with cairosvg, converts it to grayscale with Pillow and
resizes it to png_width x png_width, one sketch at a time.  This script times
both on the same sketches (the first --num training sketches of
../shared/data/aaron_sheep.npz when present, else the synthetic generator) and
prints sketches/second, the speed ratio and the mean / max absolute pixel
difference.  It needs cairosvg (not a project requirement): if missing it is
pip-installed into this interpreter, and Debian's libcairo2 is apt-installed
when the shared library is absent.

  python -m benchmarks.bench_raster [--num 2000] [--png_width 48]
"""
import ctypes.util
import importlib
import io
import os
import shutil
import subprocess
import sys
import time

from absl import app
from absl import flags

import numpy as np

FLAGS = flags.FLAGS
flags.DEFINE_integer("num", 2000, "sketches to render with each pipeline")
flags.DEFINE_integer("png_width", 48, "image side in pixels")
flags.DEFINE_integer("workers", 2, "processes for data.raster.render_many")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

import svgwrite  # pylint: disable=wrong-import-position
from PIL import Image  # pylint: disable=wrong-import-position

from data import raster, synthetic  # pylint: disable=wrong-import-position
from utils.errors import (  # pylint: disable=wrong-import-position
    UserError, cli_main, parse_flags)

SHEEP = os.path.join(os.path.dirname(ROOT), "shared", "data", "aaron_sheep.npz")


def ensure_cairosvg():
  """Imports cairosvg, installing it (and libcairo2) if needed; returns it."""
  try:
    return importlib.import_module("cairosvg")
  except (ImportError, OSError):
    pass
  if ctypes.util.find_library("cairo") is None:
    print("bench_raster: libcairo2 not found; running apt-get install -y "
          "libcairo2", flush=True)
    if shutil.which("apt-get") is None:
      raise UserError("the reference pipeline needs the cairo library "
                      "(Debian package libcairo2) and apt-get is not available")
    subprocess.run(["apt-get", "install", "-y", "libcairo2"], check=True)
  print("bench_raster: cairosvg not installed; running pip install cairosvg "
        "(benchmark only, not a project requirement)", flush=True)
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", "cairosvg"],
                 check=True)
  importlib.invalidate_caches()
  return importlib.import_module("cairosvg")


def reference_render(stroke3, width, cairosvg):
  """The reference seq2png for one sketch: SVG path -> cairo -> L -> resize."""
  data = np.asarray(stroke3, dtype=np.float64)
  pts = np.cumsum(data[:, :2], axis=0)
  lo = np.minimum(pts.min(axis=0), 0.0)
  size = np.maximum(pts.max(axis=0), 0.0) - lo
  norm = max(size.max(), raster.MIN_NORM)
  scale = (width - 2 * raster.MARGIN) / norm
  start = (0.5 * (norm - size) - lo) * scale + raster.MARGIN
  dwg = svgwrite.Drawing(size=(width, width))
  dwg.add(dwg.rect(insert=(0, 0), size=(width, width), fill="white"))
  path, lift, command = "M%s,%s " % tuple(start), 1, "m"
  for dx, dy, pen in data:
    command = "m" if lift == 1 else ("l" if command != "l" else "")
    path += "%s%s,%s " % (command, dx * scale, dy * scale)
    lift = pen
  dwg.add(dwg.path(path).stroke("black", 1).fill("none"))
  png = cairosvg.svg2png(bytestring=dwg.tostring().encode("utf-8"))
  img = Image.open(io.BytesIO(png)).convert("L")
  return np.asarray(img.resize((width, width), Image.BILINEAR))


def load_sketches(num):
  """The first ``num`` training sketches of aaron_sheep, else synthetic ones."""
  if os.path.exists(SHEEP):
    seqs = np.load(SHEEP, allow_pickle=True, encoding="latin1")["train"]
    return list(seqs[:num]), "aaron_sheep.npz (train)"
  seqs = synthetic.generate_sketches(num, seed=0)[0]
  return seqs, "synthetic"


def _timed(fn):
  """(result, wall seconds, CPU seconds of this process)."""
  start, cpu = time.perf_counter(), time.process_time()
  out = fn()
  return out, time.perf_counter() - start, time.process_time() - cpu


def run(num=2000, width=48, workers=2):
  """Times both pipelines on the same sketches; returns a dict of results."""
  cairosvg = ensure_cairosvg()
  seqs, source = load_sketches(num)
  raster.render_many(seqs[:64], width, workers=1)          # warm-up
  reference_render(seqs[0], width, cairosvg)
  ref, t_ref, c_ref = _timed(lambda: np.stack(
      [reference_render(s, width, cairosvg) for s in seqs]))
  one, t_one, c_one = _timed(lambda: raster.render_many(seqs, width, workers=1))
  ours, t_ours, _ = _timed(lambda: raster.render_many(seqs, width, workers))
  assert np.array_equal(one, ours)
  diff = np.abs(ours.astype(np.int16) - ref.astype(np.int16))
  n = len(seqs)
  return {
      "source": source, "num": n, "png_width": width, "workers": workers,
      "reference_per_s": n / t_ref, "ours_per_s": n / t_ours,
      "ours_1worker_per_s": n / t_one,
      "ratio": t_ref / t_ours, "ratio_1worker": t_ref / t_one,
      # CPU seconds per sketch, single process: robust to other load.
      "ratio_cpu_1worker": c_ref / c_one,
      "reference_cpu_ms": 1e3 * c_ref / n, "ours_cpu_ms": 1e3 * c_one / n,
      "mean_abs_diff": float(diff.mean()), "max_abs_diff": int(diff.max()),
      "frac_pixels_diff_gt_16": float((diff > 16).mean()),
  }


def report(res):
  return "\n".join([
      f"raster benchmark: {res['num']} sketches from {res['source']}, "
      f"{res['png_width']}x{res['png_width']}",
      f"  reference (svgwrite+cairosvg+Pillow): {res['reference_per_s']:9.1f} "
      "sketches/s",
      f"  data.raster, 1 worker:                {res['ours_1worker_per_s']:9.1f}"
      f" sketches/s  ({res['ratio_1worker']:.0f}x)",
      f"  data.raster, {res['workers']} workers:               "
      f"{res['ours_per_s']:9.1f} sketches/s  ({res['ratio']:.0f}x)",
      f"  CPU time per sketch: reference {res['reference_cpu_ms']:.3f} ms, "
      f"data.raster {1e3 * res['ours_cpu_ms']:.1f} us "
      f"({res['ratio_cpu_1worker']:.0f}x per core)",
      f"  mean |diff| {res['mean_abs_diff']:.3f} grey levels, max "
      f"{res['max_abs_diff']}, pixels differing by > 16: "
      f"{100 * res['frac_pixels_diff_gt_16']:.3f}%",
  ])


@cli_main
def main(argv):
  del argv
  if FLAGS.num < 1 or FLAGS.png_width < 8 or FLAGS.workers < 1:
    raise UserError("--num and --workers must be >= 1 and --png_width >= 8")
  print(report(run(FLAGS.num, FLAGS.png_width, FLAGS.workers)))


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
