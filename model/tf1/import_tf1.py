"""Imports a checkpoint of the released TF1 code (e.g. the authors' pretrained
8-category model) into a model folder that sample.py, visualization.py and
evaluate.py load.

  python -m model.tf1.import_tf1 --checkpoint RELEASE_DIR --out_dir MODEL \\
      [--data_dir DATA] [--hparams max_seq_len=N,...]

``--checkpoint`` is the release's ``--log_root`` (its latest checkpoint, with
the ``model_config.json`` and ``para.npz`` the release writes there) or one
checkpoint prefix (``DIR/vector-12``).  Every variable is accounted for: the
weights and the GMM state are mapped onto ours (model/tf1/tf1_layout.py), the
Adam moments onto our Adam's, ``beta1/2_power`` and para.npz's step count give
the step, and ``num_of_steps`` (fed, never stored) is ignored; a missing,
mis-shaped or unknown variable is a one-line error naming it.

The hyper-parameters: the architecture is read off the checkpoint's shapes,
the rest comes from the release's model_config.json over the ``release``
preset, then ``--hparams``; the config or --hparams contradicting a shape is
an error.  The release does not save its stroke scale factor:
``--data_dir`` computes it (and max_seq_len when no config gives it) from the
training data, otherwise sample.py writes strokes in normalised units.
"""
import json
import math
import os
import shutil
import sys
import tempfile

from utils import quiet  # noqa: F401  (first: quiets TensorFlow's start-up)
import numpy as np
import tensorflow as tf
from absl import app, flags

from data import strokes as S
from data.dataset import check_data_dir, stroke_path
from hparams import (CONFIG_NAME, HParams, _split_assignments, get_hparams,
                     save_config)
from model.storage.checkpoint import CheckpointState, build_model, write_train_info
from model.tf1.tf1_layout import (NON_WEIGHTS, SCOPE, infer_architecture,
                                  release_shapes, trainable_names, weight_map)
from utils import ownership
from utils.errors import (UserError, check_argv, cli_main, parse_flags,
                          require_flags)

FLAGS = flags.FLAGS
if __name__ == "__main__":   # importing this module defines no flag
  flags.DEFINE_string("checkpoint", None, "The release's checkpoint folder (its "
                      "--log_root) or a checkpoint prefix such as DIR/vector-12.")
  flags.DEFINE_string("out_dir", None, "New model folder to write "
                      "(model_config.json + checkpoint).")
  flags.DEFINE_string("config", None, "The release's model_config.json; default: "
                      "the one in the checkpoint's folder, if any.")
  flags.DEFINE_string("hparams", "", "Overrides applied last, e.g. "
                      "'max_seq_len=130'.")
  flags.DEFINE_string("data_dir", None, "Training data of the checkpoint: gives "
                      "scale_factor (and max_seq_len if unknown), recorded for "
                      "sample.py / evaluate.py.")
  flags.DEFINE_boolean("optimizer", True, "Also import the Adam state, when the "
                       "checkpoint has it (to continue training).")

RELEASE_ONLY_KEYS = ("num_layer_j", "num_layer_i", "de_weight")
POWER_NAMES = ("beta1_power", "beta2_power")
SLOTS = ("Adam", "Adam_1")
ADAM_BETA2 = 0.999


def _more(items):
  return f" (and {len(items) - 1} more)" if len(items) > 1 else ""


def open_checkpoint(path):
  """(CheckpointReader, prefix, folder or None) of a folder or a prefix."""
  folder = None
  if os.path.isdir(path):
    folder, prefix = path, tf.train.latest_checkpoint(path)
    if prefix is None:
      raise UserError(f"--checkpoint={path!r} holds no checkpoint (expected the "
                      f"release's 'checkpoint' file and vector-N.index)")
  elif os.path.isfile(path + ".index"):
    prefix = path
  else:
    raise UserError(f"--checkpoint={path!r} is neither a checkpoint folder nor "
                    f"a checkpoint prefix (no {path}.index)")
  try:
    reader = tf.train.load_checkpoint(prefix)
    shapes = reader.get_variable_to_shape_map()
  except (tf.errors.OpError, ValueError) as e:
    raise UserError(f"checkpoint {prefix!r} is unreadable: "
                    f"{str(e).strip().splitlines()[0][:200]}") from None
  if not any(name.startswith(SCOPE + "/") for name in shapes):
    example = sorted(shapes)[0] if shapes else "nothing"
    raise UserError(f"checkpoint {prefix!r} is not one of the released "
                    f"RPCL-pix2seqH TF1 code: no variable under {SCOPE}/ (it "
                    f"has {example})")
  return reader, prefix, folder, {k: tuple(v) for k, v in shapes.items()}


def read_release_config(path):
  try:
    with open(path) as f:
      data = json.load(f)
  except (OSError, ValueError) as e:
    raise UserError(f"release config {path!r} is not readable JSON: {e}") from None
  if not isinstance(data, dict):
    raise UserError(f"release config {path!r} is not a JSON object")
  return data


def _coerce(key, value, default, where):
  try:
    if isinstance(default, bool):
      if value not in (True, False, 0, 1):
        raise ValueError
      return bool(value)
    if isinstance(default, int):
      if float(value) != int(value):
        raise ValueError
      return int(value)
    if isinstance(default, float):
      return float(value)
    if isinstance(default, list):
      if not isinstance(value, list):
        raise ValueError
      return [str(v) for v in value]
    return str(value)
  except (TypeError, ValueError):
    raise UserError(f"{where}: {key}={value!r} is not a valid "
                    f"{type(default).__name__}") from None


def build_hparams(shapes, config_path=None, overrides=""):
  """The ``release`` preset, the architecture read off ``shapes``, the
  release's config (if any), then ``overrides`` (see the module doc)."""
  arch = infer_architecture(shapes)
  base = get_hparams("release")
  changes = {}
  if config_path:
    data = read_release_config(config_path)
    k, l = arch["num_sub"][0] * arch["num_mixture"][0], arch["num_mixture"][0]
    for key, want in (("num_layer_j", k), ("num_layer_i", l)):
      if key in data and data[key] != want:
        raise UserError(f"{config_path} says {key}={data[key]!r} but the "
                        f"checkpoint has {want} ({arch['num_mixture'][1]})")
    fields = HParams.__dataclass_fields__
    for key, value in data.items():
      if key in fields and key not in RELEASE_ONLY_KEYS:   # de_weight: unused
        changes[key] = _coerce(key, value, getattr(base, key), config_path)
    for key, (value, evidence) in arch.items():
      if key in changes and changes[key] != value:
        raise UserError(f"{config_path} says {key}={changes[key]!r} but the "
                        f"checkpoint has {key}={value!r} ({evidence})")
  changes.update({key: value for key, (value, _) in arch.items()})
  hps = base.replace(**changes).parse(overrides or "")
  for key, _ in _split_assignments(overrides or ""):
    if key in arch and getattr(hps, key) != arch[key][0]:
      raise UserError(f"--hparams sets {key}={getattr(hps, key)!r} but the "
                      f"checkpoint has {key}={arch[key][0]!r} ({arch[key][1]})")
  return hps


def fill_from_data(hps, data_dir):
  """max_seq_len (if unknown) and scale_factor from the training data, as
  data/dataset.py computes them (first num_per_category per split)."""
  check_data_dir(data_dir)
  longest, train = 0, []
  for cat in hps.categories:
    path = stroke_path(data_dir, cat)
    if not os.path.isfile(path):
      raise UserError(f"--data_dir: stroke file {path!r} of category {cat!r} "
                      f"not found")
    seqs = S.load_strokes_npz(path)
    for split in S.SPLITS:
      kept = S.clean_strokes(seqs[split][:hps.num_per_category])
      longest = max([longest] + [len(s) for s in kept])
      if split == "train":
        train.extend(kept)
  changes = {"scale_factor": float(S.compute_scale_factor(train))}
  if hps.max_seq_len < 1:
    changes["max_seq_len"] = int(longest)
  return hps.replace(**changes)


def summary(hps):
  return (f"dec_model={hps.dec_model}, dec_rnn_size={hps.dec_rnn_size}, "
          f"z_size={hps.z_size}, K={hps.num_components}, L={hps.num_units}")


def check_names(shapes, hps, prefix):
  """Every variable of ``shapes`` is the release's (weights, GMM state,
  num_of_steps, Adam slots and powers) with the expected shape, and none of
  the release's is missing.  Returns (has Adam slots, names of the powers)."""
  expected = release_shapes(hps)
  missing = sorted(set(expected) - set(shapes))
  if missing:
    raise UserError(f"checkpoint {prefix!r} lacks variable {missing[0]}"
                    f"{_more(missing)}, which the release's model creates at "
                    f"{summary(hps)}")
  slots = find_slots(shapes, trainable_names(hps))
  powers = sorted(s for s in shapes if s.rsplit("/", 1)[-1] in POWER_NAMES)
  want = dict(expected, **{s: expected[t] for s, (t, _) in slots.items()})
  wrong = sorted(name for name in want if shapes[name] != want[name])
  if wrong:
    name = wrong[0]
    raise UserError(f"checkpoint {prefix!r}: variable {name} has shape "
                    f"{shapes[name]}, expected {want[name]} at {summary(hps)}"
                    f"{_more(wrong)}")
  unknown = sorted(set(shapes) - set(expected) - set(slots) - set(powers))
  if unknown:
    raise UserError(f"checkpoint {prefix!r} has variable {unknown[0]}"
                    f"{_more(unknown)}, which the release's model does not "
                    f"create at {summary(hps)}")
  found = {(t, suffix) for t, suffix in slots.values()}
  if slots and len(found) != 2 * len(trainable_names(hps)):
    lack = sorted(f"{t}/{x}" for t in trainable_names(hps) for x in SLOTS
                  if (t, x) not in found)
    raise UserError(f"checkpoint {prefix!r} has Adam slots but none for {lack[0]}"
                    f"{_more(lack)} (pass --optimizer=False to skip them)")
  return slots, powers


def find_slots(shapes, trainable):
  """{slot name: (variable, "Adam" | "Adam_1")} of the Adam slots in
  ``shapes``.  TF1 names a slot <current variable scope>/<variable>/Adam(_1):
  the release creates its optimiser inside RPCL-pix2seq, so its slots are
  RPCL-pix2seq/RPCL-pix2seq/.../Adam; any scope prefix is accepted."""
  trainable = set(trainable)
  out = {}
  for name in shapes:
    base, _, suffix = name.rpartition("/")
    if suffix not in SLOTS:
      continue
    parts = base.split("/")
    for cut in range(len(parts)):
      if "/".join(parts[cut:]) in trainable:
        out[name] = ("/".join(parts[cut:]), suffix)
        break
  return out


def slot_reader(slots):
  """{(variable, suffix): slot name}, preferring the release's own prefix."""
  out = {}
  for name, key in sorted(slots.items()):
    if key not in out or name == f"{SCOPE}/{key[0]}/{key[1]}":
      out[key] = name
  return out


def step_count(reader, powers, para):
  """Training steps done: para.npz's count, else from Adam's beta2_power =
  0.999^(steps + 1); None when neither is there."""
  if para is not None and "count" in para:
    return int(para["count"])
  candidates = [p for p in powers if p.endswith("/beta2_power")]
  if f"{SCOPE}/beta2_power" in candidates:   # the training model's optimiser
    candidates = [f"{SCOPE}/beta2_power"]
  if not candidates:
    return None
  b2 = float(min(reader.get_tensor(p) for p in candidates))
  if b2 <= 0.0:   # underflowed: at least this many steps
    b2 = float(np.finfo(np.float32).tiny)
  return max(int(round(math.log(min(b2, 1.0)) / math.log(ADAM_BETA2))) - 1, 0)


def read_para(folder):
  """The release's para.npz (train_label_mask, best_valid_loss, epoch, count)."""
  path = os.path.join(folder, "para.npz") if folder else None
  if not path or not os.path.isfile(path):
    return None
  try:
    with np.load(path) as f:
      return {k: f[k] for k in f.files}
  except (OSError, ValueError) as e:
    raise UserError(f"{path!r} is not a readable npz: {e}") from None


def assign_weights(model, reader, assignments, slots):
  """Assigns every mapped weight (and, with ``slots`` from find_slots, the
  Adam moments)."""
  opt = model.optimizer
  slot_names = slot_reader(slots)
  for a in assignments:
    value = a.combine([reader.get_tensor(s) for s in a.sources])
    assert tuple(value.shape) == tuple(a.variable.shape), a.variable.path
    a.variable.assign(value.astype(a.variable.dtype))
    if slots and a.variable.trainable:
      index = opt._get_variable_index(a.variable)   # pylint: disable=protected-access
      for store, suffix in ((opt._momentums, "Adam"), (opt._velocities, "Adam_1")):  # pylint: disable=protected-access
        store[index].assign(a.combine(
            [reader.get_tensor(slot_names[(s, suffix)]) for s in a.sources]))


def import_checkpoint(checkpoint, out_dir, config=None, overrides="",
                      data_dir=None, optimizer=True):
  """Writes ``out_dir`` from the release's ``checkpoint``; returns a report
  dict (hps, prefix, consumed TF1 names, number of weights, optimizer, step)."""
  out_dir = os.path.abspath(out_dir)
  if os.path.lexists(out_dir) and (not os.path.isdir(out_dir) or os.listdir(out_dir)):
    raise UserError(f"--out_dir={out_dir!r} exists and is not an empty folder: "
                    f"choose a new folder for the imported model")
  reader, prefix, folder, shapes = open_checkpoint(checkpoint)
  ownership.refuse_overlap("--out_dir", out_dir, [("--checkpoint", folder),
                                                  ("--data_dir", data_dir)])
  if config is None and folder and os.path.isfile(os.path.join(folder, "model_config.json")):
    config = os.path.join(folder, "model_config.json")
  hps = build_hparams(shapes, config, overrides)
  if data_dir:
    hps = fill_from_data(hps, data_dir)
  if hps.max_seq_len < 1:
    raise UserError("max_seq_len is unknown (no release model_config.json): "
                    "give --config, --data_dir or --hparams=max_seq_len=N")
  slots, powers = check_names(shapes, hps, prefix)
  para = read_para(folder)

  model = build_model(hps)
  assignments = weight_map(model)
  targets = {id(a.variable) for a in assignments}
  wanted = {id(v) for v in model.trainable_variables + model.hierarchy.weights}
  assert targets == wanted and len(targets) == len(assignments), "incomplete map"
  use_slots = bool(slots) and optimizer
  assign_weights(model, reader, assignments, slots if use_slots else {})
  step = step_count(reader, powers, para)
  if step is not None:
    model.global_step.assign(step)
    if use_slots:
      model.optimizer.iterations.assign(step)
  consumed = {s for a in assignments for s in a.sources} | set(NON_WEIGHTS)
  consumed |= set(powers) | set(slots)
  assert consumed == set(shapes), sorted(set(shapes) - consumed)[:3]

  parent = os.path.dirname(out_dir)
  os.makedirs(parent, exist_ok=True)
  ownership.remove_leftovers(parent)
  tmp = tempfile.mkdtemp(prefix=ownership.temp_prefix(os.path.basename(out_dir)),
                         dir=parent)
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(tmp, 0o777 & ~umask)   # mkdtemp makes it private
  try:
    state = CheckpointState(model, tmp)
    if para is not None:
      state.semi_mask.assign(np.asarray(para.get("train_label_mask", []), bool))
      state.epoch.assign(int(para.get("epoch", 0)))
      state.best_loss.assign(float(para.get("best_valid_loss", np.inf)))
    state.save()
    save_config(os.path.join(tmp, CONFIG_NAME), hps)
    if data_dir:
      write_train_info(tmp, data_dir)
    if os.path.isdir(out_dir):
      os.rmdir(out_dir)   # empty (checked above)
    os.rename(tmp, out_dir)
  except OSError as e:
    shutil.rmtree(tmp, ignore_errors=True)
    raise UserError(f"cannot write --out_dir={out_dir!r}: {e}") from None
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return dict(hps=hps, prefix=prefix, consumed=sorted(consumed),
              num_weights=len(assignments), optimizer=use_slots, step=step)


@cli_main
def main(argv):
  check_argv(argv)
  require_flags(FLAGS, "checkpoint", "out_dir")
  report = import_checkpoint(FLAGS.checkpoint, FLAGS.out_dir, FLAGS.config,
                             FLAGS.hparams, FLAGS.data_dir, FLAGS.optimizer)
  hps = report["hps"]
  print(f"imported {len(report['consumed'])} TF1 variables of {report['prefix']} "
        f"into {report['num_weights']} weight and GMM-state tensors"
        f"{' + the Adam state' if report['optimizer'] else ''}, step "
        f"{report['step'] if report['step'] is not None else 'unknown (0)'}; "
        f"{summary(hps)}")
  print(f"wrote {FLAGS.out_dir}: python sample.py --model_dir={FLAGS.out_dir}")
  if hps.scale_factor <= 0:
    sys.stderr.write("note: the release does not save its stroke scale factor: "
                     "sample.py writes normalised strokes (give --data_dir to "
                     "compute it)\n")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
