"""Batched sampler vs the reference's per-sketch, per-step loop.

  python -m benchmarks.bench_sample [--num 1000] [--subset 20] [--max_len 100]

The same StrokeDecoder (small preset, fresh weights) is used by both:
- batched: model/inference/sampler.sample_strokes, all ``num`` sketches in one compiled
  tf.while_loop (plain graph and XLA);
- per-sketch loop, as the TF1 reference sampled: one sketch at a time, one
  ``decoder.step`` call per point (eager here; the reference did one
  session.run per point), sampling in NumPy.  It is timed on ``subset``
  sketches and extrapolated to ``num`` (it would take minutes otherwise).
  A variant calling a tf.function-compiled step per point (closest to
  session.run) is timed too.

The end-of-sketch logit is pushed down so that every sketch runs the full
``max_len`` steps in both loops: untrained weights would otherwise stop at
random, and the comparison is per point.  Prints sketches/s and the ratios.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from hparams import get_hparams  # noqa: E402
from model.inference import sampler  # noqa: E402
from model.networks.stroke_decoder import StrokeDecoder  # noqa: E402


def build_decoder(hps):
  dec = StrokeDecoder(hps)
  dec.build()
  bias = dec.out_dense.bias.numpy()
  bias[2] = -30.0   # p3 never wins: full-length sketches
  dec.out_dense.bias.assign(bias)
  return dec


def np_next_row(params, tau, rng):
  """The reference's NumPy sampling of one point (sketch-rnn style)."""
  def adjust(log_p):
    p = np.exp((log_p - log_p.max()) / tau)
    return p / p.sum()
  get = lambda v: np.asarray(v)[0]
  k = rng.choice(len(get(params.log_pi)), p=adjust(get(params.log_pi)))
  pen = rng.choice(3, p=adjust(get(params.log_pen)))
  sx, sy, r = get(params.sigma_x)[k] * tau, get(params.sigma_y)[k] * tau, get(params.rho)[k]
  cov = [[sx * sx, r * sx * sy], [r * sx * sy, sy * sy]]
  dx, dy = rng.multivariate_normal([get(params.mu_x)[k], get(params.mu_y)[k]], cov)
  row = np.zeros((1, 5), np.float32)
  row[0, :2], row[0, 2 + pen] = (dx, dy), 1.0
  return row


def per_sketch_loop(dec, z, max_len, tau, step_fn, seed=0):
  """One sketch at a time, one step call per point; returns lengths."""
  rng = np.random.default_rng(seed)
  lengths = []
  for i in range(len(z)):
    zi = tf.constant(z[i:i + 1])
    states = dec.initial_state(zi)
    x = np.array([sampler.S0], np.float32)
    n = max_len
    for t in range(max_len):
      raw, states = step_fn(tf.constant(x), zi, states)
      x = np_next_row(dec.split_params(raw), tau, rng)
      if x[0, 4] == 1:
        n = t
        break
    lengths.append(n)
  return np.array(lengths)


def _timed(fn):
  start = time.perf_counter()
  out = fn()
  return out, time.perf_counter() - start


def run(num=1000, subset=20, max_len=100, temperature=0.24, preset="small",
        verbose=True):
  """Times both samplers; returns a dict of sketches/s and ratios."""
  hps = get_hparams(preset)
  dec = build_decoder(hps)
  z = np.random.default_rng(0).normal(size=(num, hps.z_size)).astype(np.float32)
  res = dict(num=num, subset=subset, max_len=max_len, preset=preset,
             dec_model=hps.dec_model, dec_rnn_size=hps.dec_rnn_size)
  for name, jit in (("batched", False), ("batched_xla", True)):
    sampler.sample_strokes(dec, z[:8], max_len, temperature, jit_compile=jit)  # trace
    (_, lengths), sec = _timed(lambda: sampler.sample_strokes(
        dec, z, max_len, temperature, seed=1, jit_compile=jit))
    assert np.all(lengths == max_len)
    res[name + "_sketches_per_s"] = num / sec
    res[name + "_seconds"] = sec

  eager_step = lambda x, zi, s: dec.step(x, zi, s, training=False)
  graph_step = tf.function(eager_step)
  per_sketch_loop(dec, z[:1], 2, temperature, graph_step)  # trace
  for name, fn in (("per_sketch_eager", eager_step),
                   ("per_sketch_graph", graph_step)):
    lengths, sec = _timed(lambda: per_sketch_loop(dec, z[:subset], max_len,
                                                  temperature, fn))
    assert np.all(lengths == max_len)
    res[name + "_sketches_per_s"] = subset / sec
    res[name + "_seconds_extrapolated"] = sec * num / subset

  best = max(res["batched_sketches_per_s"], res["batched_xla_sketches_per_s"])
  res["ratio_vs_eager"] = best / res["per_sketch_eager_sketches_per_s"]
  res["ratio_vs_graph_step"] = best / res["per_sketch_graph_sketches_per_s"]
  if verbose:
    print(f"{preset} preset ({hps.dec_model}, H={hps.dec_rnn_size}, "
          f"M={hps.num_output_mixture}), {max_len} points per sketch, "
          f"tau={temperature}, {os.cpu_count()} CPU cores")
    for name in ("batched", "batched_xla"):
      print(f"  {name:<18} {num} sketches in {res[name + '_seconds']:.2f} s: "
            f"{res[name + '_sketches_per_s']:9.1f} sketches/s")
    for name in ("per_sketch_eager", "per_sketch_graph"):
      print(f"  {name:<18} timed on {subset} sketches, extrapolated to {num}: "
            f"{res[name + '_seconds_extrapolated']:.0f} s: "
            f"{res[name + '_sketches_per_s']:9.2f} sketches/s")
    print(f"  speed-up (best batched) vs per-sketch eager step: "
          f"{res['ratio_vs_eager']:.0f}x (target >= 50x); vs per-sketch "
          f"compiled step (~session.run): {res['ratio_vs_graph_step']:.0f}x")
  return res


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num", type=int, default=1000)
  parser.add_argument("--subset", type=int, default=20)
  parser.add_argument("--max_len", type=int, default=100)
  parser.add_argument("--temperature", type=float, default=0.24)
  parser.add_argument("--preset", default="small")
  args = parser.parse_args()
  run(args.num, args.subset, args.max_len, args.temperature, args.preset)
