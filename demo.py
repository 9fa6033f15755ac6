"""The main job end to end on the embedded synthetic dataset.

    python demo.py

1. generates the synthetic sketch dataset (5 categories x 2-3 styles) if absent;
2. trains the ``demo`` preset (resumes if a run exists; skips if finished);
3. samples conditionally (test references) and from every live level-l unit;
4. draws result.jpg, level_k.jpg, level_l.jpg and tree.jpg;
5. evaluates (Rec, Ret@1/10/50, clustering of level-k/level-l labels);
6. prints where every output is and the headline metrics.

Running it again reuses what exists.  Everything lands under --work_dir.
"""
import json
import os
import subprocess
import sys
import time

from absl import app, flags

from utils import quiet  # noqa: F401  (first: quiets TensorFlow's start-up)
from utils.errors import UserError, check_argv, cli_main, parse_flags
from utils.metrics import live_mask
from utils.samples_file import load_samples
from hparams import CONFIG_NAME, SYNTHETIC_CATEGORIES as CATEGORIES
from data import synthetic
from experiments import report

# The Rec classifier of the demo: 2 epochs on 2000 images per category reach
# test accuracy 1.000 on the synthetic set in ~15 s (evaluate.py's defaults,
# 5 x 20000, take 2.5 minutes of the demo's 15 for the same accuracy).
CLASSIFIER_EPOCHS = 2
CLASSIFIER_PER_CATEGORY = 2000
VALIDATE_EVERY = 500   # steps between validations (500 sketches, ~5 s each)

FLAGS = flags.FLAGS
flags.DEFINE_string("work_dir", "outputs/demo", "Where the model and outputs go.")
flags.DEFINE_string("data_dir", "datasets/synthetic",
                    "The embedded dataset (generated here if absent).")
flags.DEFINE_integer("num_steps", 2000, "Training steps of the demo preset.")
flags.DEFINE_string("hparams", "", "Extra hparams on top of the demo preset.")
flags.DEFINE_integer("num_per_category", 60,
                     "Conditional samples per category (and per level-l unit).")
flags.DEFINE_integer("seed", 0, "Seed of every step.")
flags.DEFINE_boolean("evaluate", True, "Run the evaluation (trains a classifier).")


def banner(text):
  sys.stderr.write(f"\n=== {text} ===\n")
  sys.stderr.flush()


def ensure_data(data_dir, seed):
  """Step 1: the synthetic dataset, generated only when files are missing."""
  needed = [f"{c}{suffix}.npz" for c in CATEGORIES
            for suffix in ("", "_png", "_styles")]
  if all(os.path.exists(os.path.join(data_dir, n)) for n in needed):
    banner(f"data: reusing {data_dir}")
    return
  banner(f"data: generating the synthetic dataset in {data_dir}")
  synthetic.generate(data_dir, seed=seed, categories=CATEGORIES)


def command(script, **flags_):
  """``python <script> --k=v ...`` with this interpreter."""
  return [sys.executable, script] + [f"--{k}={v}" for k, v in flags_.items()]


def call(cmd):
  """Runs a step as its own process (exactly what a user would type)."""
  sys.stderr.write("$ " + " ".join(cmd[1:]) + "\n")
  sys.stderr.flush()
  proc = subprocess.run(cmd)
  if proc.returncode != 0:
    raise UserError(f"step failed (exit {proc.returncode}): {' '.join(cmd[1:])}")


def ensure_model(data_dir, model_dir, num_steps, overrides, seed):
  """Step 2: train the demo preset, resuming an earlier run if there is one."""
  resume = os.path.exists(os.path.join(model_dir, CONFIG_NAME))
  banner(f"train: demo preset, {num_steps} steps "
         f"({'resuming' if resume else 'new run'} in {model_dir})")
  call(command("train.py", log_root=model_dir, data_dir=data_dir, preset="demo",
               hparams=overrides, num_steps=num_steps, seed=seed,
               save_every_steps=VALIDATE_EVERY, resume_training=resume))


def live_units(samples_dir):
  """The live level-l units recorded in a samples.npz (its pi_l)."""
  pi_l = load_samples(samples_dir)["pi_l"]
  return [int(l) for l in live_mask(pi_l).nonzero()[0]]


def sample_all(model_dir, out_dir, n, seed):
  """Step 3: conditional samples, then samples from every live level-l unit
  in one folder (pruned units are skipped)."""
  banner("sample: conditional (test-split references)")
  paths = {"conditional": os.path.join(out_dir, "samples"),
           "level_l": os.path.join(out_dir, "samples_level_l")}
  call(command("sample.py", model_dir=model_dir, output_dir=paths["conditional"],
               num_per_category=n, conditional=True, seed=seed, overwrite=True))
  units = live_units(paths["conditional"])
  banner(f"sample: every live level-l unit ({', '.join(map(str, units))})")
  call(command("sample.py", model_dir=model_dir, output_dir=paths["level_l"],
               num_per_category=max(2, n // len(CATEGORIES)), all_level_l=True,
               seed=seed, overwrite=True))
  return paths


def headline(result):
  """The numbers a researcher looks at first."""
  clus = result.get("clustering", {})

  def fmt(level, by="category"):
    c = clus.get(by, {}).get(level)
    return (f"NMI {c['nmi']:.3f} ARI {c['ari']:.3f} purity {c['purity']:.3f}"
            if c else "n/a")
  ret = result.get("ret", {})
  return "\n".join([
      f"  Rec (category kept)         {result.get('rec', float('nan')):.3f}",
      "  Ret top1/10/50 (style kept) " + " / ".join(f"{v:.3f}" for v in ret.values()),
      f"  level-l vs category         {fmt('level_l')}",
      f"  level-k vs category         {fmt('level_k')}",
      f"  level-k vs style            {fmt('level_k', 'style')}",
      f"  live level-k / level-l      {result.get('live_k')}/{result.get('num_k')}"
      f" / {result.get('live_l')}/{result.get('num_l')}",
      "  code's worth                {nats_per_sketch:.3f} nats/sketch "
      "({nats_per_point:.4f} nats/point)".format(**(result.get("code_worth") or dict(
          nats_per_sketch=float("nan"), nats_per_point=float("nan"))))])


def run(work_dir, data_dir, num_steps, overrides, n, seed, do_eval=True):
  """The whole demo; returns a dict of outputs (importable for tests)."""
  start = time.time()
  model_dir = os.path.join(work_dir, "model")
  ensure_data(data_dir, seed)
  ensure_model(data_dir, model_dir, num_steps, overrides, seed)
  samples = sample_all(model_dir, work_dir, n, seed)
  banner("visualise: t-SNE and the learned tree")
  call(command("visualization.py", input_dir=samples["conditional"],
               output_dir=samples["conditional"], seed=seed))
  figures = {name: os.path.join(samples["conditional"], name + ".jpg")
             for name in ("result", "level_k", "level_l", "tree")}
  result = None
  if do_eval:
    banner("evaluate: Rec, Ret@k, clustering")
    output = os.path.join(work_dir, "evaluation.json")
    call(command("evaluate.py", model_dir=model_dir, data_dir=data_dir,
                 samples_dir=samples["conditional"], output=output,
                 classifier_epochs=CLASSIFIER_EPOCHS,
                 classifier_per_category=CLASSIFIER_PER_CATEGORY))
    with open(output) as f:
      result = dict(json.load(f), output=output)
  minutes = (time.time() - start) / 60
  print(f"\nDemo finished in {minutes:.1f} min.")
  print(f"  model + checkpoints   {model_dir}")
  print(f"  TensorBoard           tensorboard --logdir {os.path.join(model_dir, 'tb')}")
  for name, path in samples.items():
    print(f"  samples {name:14}{path}  (grid.png, svg/, png/, samples.npz)")
  for name, path in figures.items():
    print(f"  {name + '.jpg':22}{path}")
  if result is not None:
    print(f"  evaluation            {result['output']}")
    print("Headline metrics:\n" + headline(result))
    print("Targets:\n" + "\n".join(report.target_lines(result, minutes)))
  return dict(model_dir=model_dir, samples=samples, figures=figures,
              evaluation=result, minutes=minutes)


@cli_main
def main(argv):
  check_argv(argv)
  run(FLAGS.work_dir, FLAGS.data_dir, FLAGS.num_steps, FLAGS.hparams,
      FLAGS.num_per_category, FLAGS.seed, FLAGS.evaluate)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
