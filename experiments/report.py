"""Tables, plots and small figure files for experiments/real_data.py.

- :func:`read_scalars`, :func:`read_timed_scalars`: train.py's TensorBoard
  scalars, the latter with the training minutes at which each was written;
- :func:`read_live_counts`: live level-k / level-l counts over training
  (``train/num_live_k`` and ``train/pi_l/<i>``);
- :func:`read_learning_curve`: valid lil and the code's worth at every
  validation, over training minutes;
- :func:`plot_live_components`, :func:`plot_learning_curve`: one line per
  variant;
- :func:`results_markdown`: the results table;
- :func:`save_small_jpg`: figures for the README.
"""
import glob
import json
import os

import matplotlib
import numpy as np
from PIL import Image

from utils.io import atomic_path, atomic_write_text
from utils.metrics import live_mask

matplotlib.use("Agg")   # figures are files: no display needed
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

MAX_BYTES = 200 * 1024     # README figures stay below this


def _walk_events(tb_dir, keep):
  """(training minutes, step, tag, value) of every scalar summary under
  ``tb_dir`` whose tag ``keep`` accepts, in the order it was written.

  Each call of train() (a resumed part too) writes its own events file.  A
  file's minutes count from its first event (the writer's start, before
  the train step is traced), plus the minutes at which the earlier files
  had reached the step this one resumed from (its first summary's step:
  train() writes its config there), so neither the gaps between parts nor
  the steps an interrupted part made after its last checkpoint count.
  """
  # Lazy: demo.py imports this module but runs TensorFlow only in subprocesses.
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  reached = {}   # step -> minutes, over the files read so far
  files = sorted(glob.glob(os.path.join(tb_dir, "**", "events.out.tfevents.*"),
                           recursive=True), key=os.path.getmtime)
  for path in files:
    start = offset = None
    for record in tf.data.TFRecordDataset(path):   # what summary_iterator's
      event = tf.compat.v1.Event.FromString(record.numpy())   # warning advises
      step = int(event.step)
      start = event.wall_time if start is None else start
      if not event.summary.value:
        continue
      if offset is None:
        before = [s for s in reached if s <= step]
        offset = reached[max(before)] if before else 0.0
      minutes = offset + (event.wall_time - start) / 60.0
      reached[step] = minutes
      for value in event.summary.value:
        if not keep(value.tag):
          continue
        if value.HasField("tensor"):
          x = float(np.asarray(tf.make_ndarray(value.tensor)).reshape(-1)[0])
        else:
          x = float(value.simple_value)
        yield minutes, step, value.tag, x


def read_scalars(tb_dir, prefix="train/"):
  """{tag: {step: value}} of the scalar summaries under ``tb_dir``.

  A step that appears twice (training restored to a checkpoint and ran
  again) keeps the value written last.
  """
  out = {}
  for _, step, tag, x in _walk_events(tb_dir, lambda t: t.startswith(prefix)):
    out.setdefault(tag, {})[step] = x
  return out


def read_timed_scalars(tb_dir, tags):
  """{tag: {step: (value, training minutes)}} of ``tags`` (as read_scalars:
  the value written last; minutes as :func:`_walk_events` counts them)."""
  out = {}
  for minutes, step, tag, x in _walk_events(tb_dir, lambda t: t in tags):
    out.setdefault(tag, {})[step] = (x, minutes)
  return out


def read_live_counts(tb_dir):
  """{"step": [...], "live_k": [...], "live_l": [...]} over training.

  live_k is train.py's ``num_live_k`` (Hierarchy.num_live: pi_k > 0.1 / K);
  live_l counts pi_l above the same ``utils.metrics.live_mask`` threshold
  (0.1 / L), so both match the final counts of evaluate.py.
  """
  scalars = read_scalars(tb_dir)
  live_k = scalars.get("train/num_live_k", {})
  pi_tags = sorted((t for t in scalars if t.startswith("train/pi_l/")),
                   key=lambda t: int(t.rsplit("/", 1)[1]))
  steps = sorted(set(live_k) & set.intersection(
      *[set(scalars[t]) for t in pi_tags])) if pi_tags else sorted(live_k)
  live_l = []
  for s in steps:
    pi_l = np.array([scalars[t][s] for t in pi_tags])
    live_l.append(int(live_mask(pi_l).sum()) if pi_tags else -1)
  return {"step": steps, "live_k": [int(round(live_k[s])) for s in steps],
          "live_l": live_l}


def plot_live_components(curves, sizes, path):
  """curves: {variant: read_live_counts(...)}; sizes: {variant: (K, L)}."""
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), dpi=90)
  for ax, key, title in ((axes[0], "live_k", "live level-k components"),
                         (axes[1], "live_l", "live level-l units")):
    for name, c in curves.items():
      if c["step"]:
        k, l = sizes[name]
        ax.step(c["step"], c[key], where="post",
                label=f"{name} (K={k}, L={l})")
    ax.set_title(title)
    ax.set_xlabel("training step")
    ax.grid(alpha=0.3)
  return _save(fig, axes, path)


def _save(fig, axes, path):
  """The two-panel figure with its legend written to ``path`` (atomically,
  in the format of its extension); returns the path."""
  axes[0].legend(fontsize=8)
  fig.tight_layout()
  with atomic_path(path) as tmp:
    fig.savefig(tmp, format=os.path.splitext(path)[1][1:] or "png")
  plt.close(fig)
  return path


# The learning curve's scalars (model/training/loop.py writes them at every
# validation) and its table's columns.
CURVE_TAGS = {"valid_lil": "valid/lil", "worth": "valid/code_worth_per_sketch"}
CURVE_COLUMNS = ("variant", "step", "minutes", "valid_lil", "worth", "live_k",
                 "live_l")


def read_learning_curve(tb_dir, live=None):
  """Rows {step, minutes, valid_lil, worth, live_k, live_l}, one per
  validation: the validation lil, the code's worth in nats per sketch (on
  the same validation sketches each time) and the live counts last logged
  at or before the step (``live``: read_live_counts(tb_dir))."""
  series = read_timed_scalars(tb_dir, set(CURVE_TAGS.values()))
  live = read_live_counts(tb_dir) if live is None else live
  lil = series.get(CURVE_TAGS["valid_lil"], {})
  rows = []
  for step in sorted(lil):
    value, minutes = lil[step]
    row = dict(step=step, minutes=round(minutes, 2), valid_lil=value,
               worth=series.get(CURVE_TAGS["worth"], {}).get(step, (None,))[0])
    logged = [i for i, s in enumerate(live["step"]) if s <= step]
    for key in ("live_k", "live_l"):
      row[key] = live[key][logged[-1]] if logged else None
    rows.append(row)
  return rows


def plot_learning_curve(curves, path):
  """curves: {variant: read_learning_curve(...)}: the validation lil and the
  code's worth over training minutes, one line per variant."""
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), dpi=90)
  for ax, key, title in ((axes[0], "valid_lil", "validation lil"),
                         (axes[1], "worth", "code's worth (nats/sketch)")):
    for name, rows in curves.items():
      points = [(r["minutes"], r[key]) for r in rows if r[key] is not None]
      if points:
        ax.plot(*zip(*points), marker="o", markersize=3, label=name)
    ax.set_title(title)
    ax.set_xlabel("training minutes")
    ax.grid(alpha=0.3)
  return _save(fig, axes, path)


def _f(x, digits=3):
  return "-" if x is None else f"{x:.{digits}f}"


def table_row(name, r):
  """One variant's metrics as a flat dict (also the JSON table entry)."""
  ev = r.get("evaluation", {})
  cat = ev.get("clustering", {}).get("category", {})
  row = {"variant": name, "steps": r.get("steps"),
         "train_minutes": r.get("train_minutes"),
         "valid_lil": r.get("valid_lil"), "rec": ev.get("rec"),
         "code_worth": (ev.get("code_worth") or {}).get("nats_per_sketch"),
         "rec_per_category": ev.get("rec_per_category")}
  for k, v in ev.get("ret", {}).items():
    row[f"ret_{k}"] = v
  style = ev.get("clustering", {}).get("style", {})
  for level in ("level_l", "level_k"):
    for m in ("nmi", "ari", "purity"):
      row[f"{level}_{m}"] = cat.get(level, {}).get(m)
      row[f"style_{level}_{m}"] = style.get(level, {}).get(m)
  for level in ("k", "l"):
    row[f"live_{level}"] = ev.get(f"live_{level}")
    row[f"num_{level}"] = ev.get(f"num_{level}")
  return row


def results_markdown(rows):
  """The markdown results table of :func:`table_row` dicts."""
  head = ("| variant | steps | train min | valid lil | Rec | Ret@1 | Ret@10 | "
          "Ret@50 | code's worth (nats/sketch) | level-l NMI / ARI / purity | "
          "level-k NMI / ARI / purity | "
          "level-k vs style NMI / ARI / purity | live k | live l |")
  lines = [head, "|" + "---|" * (head.count("|") - 1)]
  for r in rows:
    lvl = lambda p: " / ".join(_f(r.get(f"{p}_{m}")) for m in ("nmi", "ari",
                                                               "purity"))
    live = lambda p: (f"{r.get('live_' + p)}/{r.get('num_' + p)}"
                      if r.get("live_" + p) is not None else "-")
    lines.append(
        f"| {r['variant']} | {r.get('steps', '-')} | "
        f"{_f(r.get('train_minutes'), 1)} | {_f(r.get('valid_lil'), 2)} | "
        f"{_f(r.get('rec'))} | {_f(r.get('ret_top1'))} | {_f(r.get('ret_top10'))}"
        f" | {_f(r.get('ret_top50'))} | {_f(r.get('code_worth'), 1)} | "
        f"{lvl('level_l')} | {lvl('level_k')} | "
        f"{lvl('style_level_k')} | {live('k')} | {live('l')} |")
  return "\n".join(lines) + "\n"


def write_results(rows, meta, md_path, json_path):
  atomic_write_text(json_path, json.dumps({"meta": meta, "variants": rows},
                                          indent=2) + "\n")
  text = "\n".join(f"- {k}: {v}" for k, v in meta.items())
  atomic_write_text(md_path, results_markdown(rows) + "\n" + text + "\n")
  return md_path, json_path


def save_small_jpg(src, dst, max_side=900, max_bytes=MAX_BYTES):
  """A resized JPG copy of ``src`` no larger than ``max_bytes``."""
  im = Image.open(src).convert("RGB")
  scale = min(1.0, max_side / max(im.size))
  quality = 85
  while True:
    size = (max(1, int(im.width * scale)), max(1, int(im.height * scale)))
    with atomic_path(dst) as tmp:
      im.resize(size, Image.LANCZOS).save(tmp, format="JPEG", quality=quality,
                                          optimize=True)
    if os.path.getsize(dst) <= max_bytes or max(size) < 200:
      return dst
    quality, scale = max(50, quality - 10), scale * (0.85 if quality <= 60 else 1)


# The demo's targets (demo.py prints them): (label, how to read it from evaluate's result, goal).
TARGETS = (
    ("Rec", lambda r: r.get("rec"), 0.90),
    ("Ret@10", lambda r: r.get("ret", {}).get("top10"), 0.30),
    ("level-k vs style NMI",
     lambda r: r["clustering"].get("style", {}).get("level_k", {}).get("nmi"), 0.90),
    ("level-l vs category purity",
     lambda r: r["clustering"]["category"]["level_l"]["purity"], 0.90),
    ("level-l vs category NMI",
     lambda r: r["clustering"]["category"]["level_l"]["nmi"], 0.80),
)


def target_lines(result, minutes, max_minutes=15.0):
  """One line per target: value, goal, met or missed."""
  lines = [f"  wall time {minutes:.1f} min <= {max_minutes:g}: "
           f"{'met' if minutes <= max_minutes else 'MISSED'}"]
  for label, read, goal in TARGETS:
    try:
      value = read(result)
    except (KeyError, TypeError):
      value = None
    state = "n/a" if value is None else ("met" if value >= goal else "MISSED")
    shown = "-" if value is None else f"{value:.3f}"
    lines.append(f"  {label} {shown} >= {goal:g}: {state}")
  live_k, live_l = result.get("live_k"), result.get("live_l")
  fewer = live_k is not None and live_l is not None and live_l < live_k
  lines.append(f"  live level-l units {live_l} < live level-k components {live_k}: "
               f"{'met' if fewer else 'MISSED'}")
  return lines
