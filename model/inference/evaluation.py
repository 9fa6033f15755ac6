"""The evaluation metrics of evaluate.py (method.md §8).

- Rec: accuracy of a Sketch-a-Net-style classifier (model/inference/classifier.py,
  trained once on the model's categories and cached in
  ``<model_dir>/classifier/``) on the generated sketches, against their
  category;
- Ret@1/10/50: re-encoded generated sketches (z = m) ranked against the
  encoder means of the whole test split; hit = own reference in the top k;
- clustering: purity / NMI / ARI of the level-k and level-l labels of the
  test codes against the categories (and the style labels of the embedded
  synthetic data when ``<cat>_styles.npz`` exists); live component counts;
- the code's worth (model/inference/code_worth.py): the test split's mean stroke loss
  with the codes shuffled among the sketches minus with their own codes, in
  nats per sketch and per point (~0: the decoder ignores its code).

:func:`compute_metrics` is the core on arrays and callables;
:func:`evaluate` runs it on a model folder, a data folder and samples.npz.
"""
import json
import os

import numpy as np
import tensorflow as tf

from data.dataset import load_dataset
from data.images import to_unit_range
from model.inference import classifier as cls
from model.inference import code_worth
from model.storage.checkpoint import load_trained, recorded_data_dir
from utils import metrics, ownership, samples_file
from utils.errors import UserError
from utils.io import atomic_write_text, check_writable
from utils.progress import Progress

KS = metrics.DEFAULT_KS
STYLES_SUFFIX = "_styles.npz"


def encode_means(encode, images, batch_size=256, on_batch=None):
  """Encoder means of uint8 images (N, w, w) -> float32 (N, D) (z = m)."""
  out = []
  for start in range(0, len(images), batch_size):
    x = to_unit_range(images[start:start + batch_size])[..., None]
    out.append(np.asarray(encode(x)[0], np.float32))
    if on_batch:
      on_batch()
  return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def num_batches(n, batch_size):
  return -(-n // batch_size)


def load_style_labels(data_dir, categories, test_labels, num_per_category):
  """Per-sketch ground truth (category, style) of the test split, or (None,
  reason) when a category has no ``<cat>_styles.npz`` or it does not align."""
  parts = []
  for c, cat in enumerate(categories):
    path = os.path.join(data_dir, cat + STYLES_SUFFIX)
    if not os.path.isfile(path):
      return None, f"no {cat}{STYLES_SUFFIX}"
    try:
      with np.load(path, allow_pickle=False) as f:
        styles = np.asarray(f["test"])[:num_per_category]
    except (OSError, ValueError, KeyError) as e:
      raise UserError(f"{path!r} is not a styles npz with a 'test' key: {e}") from None
    if styles.shape != (int(np.sum(test_labels == c)),):
      return None, (f"{path!r} has {styles.shape[0]} test styles but the test "
                    f"split has {int(np.sum(test_labels == c))} {cat} sketches")
    parts.append(styles.astype(np.int64))
  combined = np.empty(len(test_labels), np.int64)
  for c, styles in enumerate(parts):
    combined[test_labels == c] = c * (1 << 20) + styles
  return combined, "ok"


def category_targets(samples, categories):
  """Each sample's category as an index into ``categories`` (-1 = none)."""
  names = samples["categories"] or list(categories)
  unknown = sorted(set(names) - set(categories))
  if unknown and np.any(samples["category"] >= 0):
    raise UserError(f"{samples['path']!r} has categories {unknown} the model "
                    f"was not trained on ({categories})")
  lookup = np.array([categories.index(n) if n in categories else -1
                     for n in names] + [-1])
  return np.where(samples["category"] >= 0, lookup[samples["category"]], -1)


def check_references(samples, test_images):
  """UserError if the samples' references are not this data's test split."""
  ref = samples["ref_index"]
  used = ref >= 0
  if np.any(ref[used] >= len(test_images)):
    raise UserError(f"{samples['path']!r}: ref_index up to {ref.max()} but the "
                    f"test split has {len(test_images)} sketches: sampled from "
                    f"another data_dir?")
  if "ref_images" in samples and np.any(used):
    diff = np.abs(samples["ref_images"][used].astype(np.int16)
                  - test_images[ref[used]].astype(np.int16)).mean(axis=(1, 2))
    if np.median(diff) > 8.0:
      raise UserError(f"{samples['path']!r}: its reference images differ from "
                      f"the test split of the data_dir (median |diff| "
                      f"{np.median(diff):.1f}): sampled from other data?")


def clustering_report(label_k, label_l, truths):
  """{truth name: {"level_k": scores, "level_l": scores}} (method.md §8)."""
  return {name: {"level_k": metrics.clustering_scores(label_k, truth),
                 "level_l": metrics.clustering_scores(label_l, truth)}
          for name, truth in truths.items()}


def compute_metrics(encode, posteriors, test, samples, categories,
                    predict=None, styles=None, batch_size=256, progress=None):
  """The metrics from arrays and callables (the testable core of evaluate).

  encode(images float32 (B,w,w,1) in [-1,1]) -> (m, s);
  posteriors(z) -> object with label_k, label_l; test = (images uint8, labels);
  samples = utils.samples_file.load_samples(...) or None; predict(images uint8) ->
  class indices (the Rec classifier) or None; styles: per test sketch or None.
  """
  tick = progress.update if progress else None
  test_images, test_labels = test
  gallery = encode_means(encode, test_images, batch_size, tick)
  post = posteriors(gallery)
  label_k, label_l = np.asarray(post.label_k), np.asarray(post.label_l)
  truths = {"category": test_labels}
  if styles is not None:
    truths["style"] = styles
  result = {"num_test": int(len(test_images)),
            "clustering": clustering_report(label_k, label_l, truths)}
  if samples is None:
    return result
  check_references(samples, test_images)
  target = category_targets(samples, categories)
  if predict is not None and np.any(target >= 0):
    pred = predict(samples["images"][target >= 0])
    result["rec"] = metrics.accuracy(pred, target[target >= 0])
    result["rec_per_category"] = {
        categories[c]: metrics.accuracy(pred[target[target >= 0] == c],
                                        target[target == c])
        for c in sorted(set(target[target >= 0].tolist()))}
    result["num_rec"] = int(np.sum(target >= 0))
  has_ref = samples["ref_index"] >= 0
  if np.any(has_ref):
    query = encode_means(encode, samples["images"][has_ref], batch_size, tick)
    ret = metrics.retrieval_at_k(query, gallery, samples["ref_index"][has_ref], KS)
    result["ret"] = {f"top{k}": v for k, v in ret.items()}
    result["num_ret"] = int(np.sum(has_ref))
  return result


def _classifier_splits(data, per_category):
  """(images, labels) per split, the training split capped per category."""
  out = {}
  for name in ("train", "valid", "test"):
    sp = data.splits[name]
    images, labels = sp.images, np.asarray(sp.labels)
    if name == "train" and per_category > 0:
      keep = np.concatenate([np.flatnonzero(labels == c)[:per_category]
                             for c in np.unique(labels)])
      images, labels = images[np.sort(keep)], labels[np.sort(keep)]
    out[name] = (images, labels)
  return out


def check_output(output, model_dir, data_dir):
  """Refuses an --output inside the model or data folder (or recorded data
  folder), a folder, a file this program's evaluate step did not write, or
  an unwritable place."""
  ownership.refuse_overlap("--output", output, [
      ("--model_dir", model_dir), ("--data_dir", data_dir),
      (f"the data folder recorded in {model_dir}", recorded_data_dir(model_dir))])
  ownership.check_replaceable(output, "evaluate", "--output")
  check_writable(output, "--output")


def evaluate(model_dir, data_dir, samples_dir="outputs/samples", output=None,
             classifier_epochs=5, classifier_per_category=20000,
             retrain_classifier=False, batch_size=256, seed=0, show_progress=True,
             code_worth_sketches=0):
  """Runs every metric for a trained model; writes and returns the result dict.

  ``code_worth_sketches``: the code's worth on a seeded subset of that many
  test sketches (0: the whole test split)."""
  if not output and not samples_dir:
    raise UserError("--output is required when --samples_dir is empty")
  output = output or os.path.join(samples_dir, "evaluation.json")
  check_output(output, model_dir, data_dir)   # before minutes of work
  hps, model = load_trained(model_dir)
  data = load_dataset(data_dir, hps)
  samples = samples_file.load_samples(samples_dir) if samples_dir else None
  test = data.splits["test"]
  styles, style_note = load_style_labels(data_dir, hps.categories, test.labels,
                                         hps.num_per_category)
  cache_dir = os.path.join(model_dir, "classifier")
  splits = _classifier_splits(data, classifier_per_category)
  cached = None if retrain_classifier else cls.load_classifier(
      cache_dir, hps.categories, hps.png_width)
  n_samples = 0 if samples is None else int(np.sum(samples["ref_index"] >= 0))
  need_classifier = samples is not None and bool(np.any(samples["category"] >= 0))
  total = (num_batches(len(test.images), batch_size)
           + code_worth.num_batches(test, hps, code_worth_sketches)
           + num_batches(n_samples, batch_size)
           + (0 if cached or not need_classifier else
              cls.train_steps(len(splits["train"][0]), classifier_epochs)))
  encode = tf.function(model.encode, reduce_retracing=True)
  with Progress(total, "evaluate", unit="batch", enabled=show_progress) as bar:
    predict, info = None, None
    if need_classifier:
      clf, info = cached or cls.get_classifier(
          cache_dir, hps.categories, splits, epochs=classifier_epochs, seed=seed,
          on_batch=bar.update, retrain=True)
      predict = lambda images: cls.predict_labels(clf, images)
    result = compute_metrics(encode, model.hierarchy.posteriors,
                             (test.images, test.labels), samples, hps.categories,
                             predict=predict, styles=styles,
                             batch_size=batch_size, progress=bar)
    result["code_worth"] = code_worth.code_worth(
        model, test, code_worth_sketches, on_batch=bar.update)
  pi_k, pi_l = np.asarray(model.hierarchy.pi_k()), np.asarray(model.hierarchy.pi_l)
  result.update({
      "model_dir": model_dir, "data_dir": data_dir, "samples_dir": samples_dir,
      "categories": list(hps.categories), "styles": style_note,
      "live_k": int(metrics.live_mask(pi_k).sum()), "num_k": int(pi_k.size),
      "live_l": int(metrics.live_mask(pi_l).sum()), "num_l": int(pi_l.size),
      "live_threshold": "pi > 0.1 / count"})
  if info is not None:
    result["classifier"] = {"test_accuracy": info["test_accuracy"],
                            "num_train": info["num_train"],
                            "epochs": info["epochs"], "cache": cache_dir}
  atomic_write_text(output, json.dumps(result, indent=2) + "\n", role="evaluate")
  result["output"] = output
  return result


def format_table(result):
  """A short human-readable summary of an evaluate() result."""
  rows = []
  if "rec" in result:
    rows.append(("Rec (classifier on generated)", f"{result['rec']:.3f}"))
  if "classifier" in result:
    rows.append(("  classifier test accuracy",
                 f"{result['classifier']['test_accuracy']:.3f}"))
  for k, v in result.get("ret", {}).items():
    rows.append((f"Ret {k}", f"{v:.3f}"))
  for truth, levels in result["clustering"].items():
    for level, s in levels.items():
      rows.append((f"{level} vs {truth} purity/NMI/ARI",
                   f"{s['purity']:.3f} / {s['nmi']:.3f} / {s['ari']:.3f}"))
  if "code_worth" in result:
    cw = result["code_worth"]
    rows.append(("code's worth (test, shuffled - own)", "n/a" if cw is None else
                 f"{cw['nats_per_sketch']:.3f} nats/sketch "
                 f"({cw['nats_per_point']:.4f} nats/point)"))
  if "live_k" in result:
    rows.append(("live level-k / level-l", f"{result['live_k']}/{result['num_k']}"
                 f"  {result['live_l']}/{result['num_l']}"))
  width = max(len(name) for name, _ in rows)
  return "\n".join(f"{name.ljust(width)}  {value}" for name, value in rows)
