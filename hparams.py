"""All hyper-parameters of RPCL-pix2seqH in one place (method.md §9).

The defaults are the paper's.  ``--hparams`` strings use the original form
``categories=[bee,bus],dec_model=hyper,num_mixture=8``; presets for this
CPU are overlays applied before the string.  Bad keys, types or values raise
:class:`HParamsError` (a UserError) naming the key and what is allowed.
"""
import dataclasses
import json
import sys
from typing import List

from utils.errors import UserError
from utils.io import atomic_write_text

CONFIG_NAME = "model_config.json"
CONFIG_VERSION = 1
# Keys older model_config.json files may hold that no longer mean anything:
# dropped on reading (is_training: the mode is set by the program).
RETIRED_KEYS = ("is_training",)
# Initial q(k|l) (model/hierarchy.py initial_state): "block" gives every one of
# unit l's num_sub components the bonus K, "anchor" only its anchor (the first
# of the block); with num_sub = 1 both are the release's 1 + K I.
Q_INITS = ("block", "anchor")
# Conv / deconv filter initialisers (model/networks/encoder.py filter_initializer).
CONV_INITS = ("release", "he")
# What a validation that does not improve does (model/training/loop.py): "restore"
# the last checkpoint (the release), or "keep" training from where it is.
ON_MISS = ("restore", "keep")


class HParamsError(UserError):
  """A malformed or out-of-range hyper-parameter."""


@dataclasses.dataclass
class HParams:
  # --- the original public interface (method.md §9) ---
  categories: List[str] = dataclasses.field(default_factory=lambda: ["bee", "bus"])
  num_steps: int = 1000001            # total steps (early stopping may end sooner)
  save_every: int = 1                 # epochs per validation / checkpoint
  dec_rnn_size: int = 2048            # H, decoder LSTM units
  dec_model: str = "hyper"            # lstm | layer_norm | hyper
  max_seq_len: int = -1               # -1: computed from the data
  z_size: int = 128                   # D, latent code size
  batch_size: int = 128
  num_mixture: int = 5                # L, level-l units (~ number of categories)
  learning_rate: float = 0.001
  decay_rate: float = 0.9999
  min_learning_rate: float = 0.00001
  grad_clip: float = 1.0              # per-element gradient clip
  de_weight: float = 1.0              # weight of the image (deconv) loss; 1.0 is
                                      # the release (its de_weight=0.5 is unused)
  use_recurrent_dropout: bool = True
  recurrent_dropout_prob: float = 0.90  # keep probability
  use_input_dropout: bool = False
  input_dropout_prob: float = 0.90
  use_output_dropout: bool = False
  output_dropout_prob: float = 0.9
  random_scale_factor: float = 0.10
  augment_stroke_prob: float = 0.10
  png_scale_ratio: float = 0.98
  png_rotate_angle: float = 0.0
  png_translate_dist: float = 0.0
  png_width: int = 48
  num_sub: int = 2                    # initial level-k components per unit
  semi_percent: float = 0.0
  semi_balanced: bool = False
  num_per_category: int = 70000
  # --- constants of the reference exposed as hparams ---
  num_output_mixture: int = 20        # M, bivariate Gaussians of the stroke head
  hyper_num_units: int = 256          # HyperLSTM's small LSTM
  hyper_embedding_size: int = 32
  eta: float = 0.05                   # hierarchy moving-average rate
  gamma: float = 1e-4                 # rival de-learning rate
  em_steps: int = 100                 # steps 0..em_steps are all EM
  rpcl_every: int = 3                 # afterwards step % rpcl_every == 0 is RPCL
  warmup_steps: int = 1000            # de/lil alternation before this step
  kl_factor: float = 0.1              # weight of (ij + gaussian) losses
  patience: int = 5                   # consecutive validation misses to stop
  scale_factor: float = 0.0           # 0: computed from the training split
  # --- ablations (experiments/real_data.py) ---
  rpcl: bool = True                   # False: EM only, no rival penalisation
  hierarchy: str = "two_level"        # two_level | flat | single
  q_init: str = "block"               # initial q(k|l) bonus: block | anchor
  # --- training choices for short budgets (the release's are the defaults) ---
  conv_init: str = "release"          # conv filters: release (std sqrt(2/3)) | he
  on_miss: str = "restore"            # validation miss: restore the checkpoint | keep
  eval_sketches: int = 0              # >0: validate / test on this many sketches
  # --- speed switches ---
  jit_compile: bool = False           # XLA-compile the train step
  recurrence: str = "auto"            # decoder over a sequence: autodiff (the
                                      # cell's math, differentiated by TF) |
                                      # fused (hand-written backward, HyperLSTM)
                                      # | auto (fused on CPU, where measured
                                      # faster); model/networks/recurrence.py
  length_buckets: int = 0             # >0: training batches padded per length bucket
  precision: str = "float32"          # float32 | mixed_float16 | mixed_bfloat16

  @property
  def num_components(self):
    """K, the number of level-k Gaussians."""
    if self.hierarchy == "single":
      return 1
    return self.num_mixture * self.num_sub

  @property
  def num_units(self):
    """L, the number of level-l units."""
    if self.hierarchy == "single":
      return 1
    if self.hierarchy == "flat":
      return self.num_components
    return self.num_mixture

  def replace(self, **changes):
    new = dataclasses.replace(self, **changes)
    new.validate()
    return new

  def to_dict(self):
    return dataclasses.asdict(self)

  def parse(self, text):
    """Returns a copy with the ``key=value,...`` overrides of ``text`` applied."""
    changes = {}
    for key, raw in _split_assignments(text):
      changes[key] = _convert(key, raw)
    return self.replace(**changes)

  def validate(self):
    """Raises HParamsError for any out-of-range value."""
    def need(cond, key, allowed):
      if not cond:
        raise HParamsError(
            f"hparam {key}={getattr(self, key)!r} is invalid: expected {allowed}")

    need(isinstance(self.categories, list) and len(self.categories) > 0
         and all(isinstance(c, str) and c for c in self.categories),
         "categories", "a non-empty list of names, e.g. [bee,bus]")
    need(len(set(self.categories)) == len(self.categories), "categories",
         "no repeated names")
    for key in ("num_steps", "save_every", "dec_rnn_size", "z_size",
                "batch_size", "num_mixture", "num_sub", "num_per_category",
                "num_output_mixture", "hyper_num_units", "hyper_embedding_size",
                "rpcl_every", "patience"):
      need(getattr(self, key) >= 1, key, "an integer >= 1")
    for key in ("em_steps", "warmup_steps", "length_buckets", "eval_sketches"):
      need(getattr(self, key) >= 0, key, "an integer >= 0")
    need(self.max_seq_len == -1 or self.max_seq_len >= 1, "max_seq_len",
         "-1 (computed) or an integer >= 1")
    need(self.dec_model in ("lstm", "layer_norm", "hyper"), "dec_model",
         "one of lstm, layer_norm, hyper")
    need(self.hierarchy in ("two_level", "flat", "single"), "hierarchy",
         "one of two_level, flat, single")
    need(self.recurrence in ("auto", "autodiff", "fused"), "recurrence",
         "one of auto, autodiff, fused")
    need(self.q_init in Q_INITS, "q_init", "one of " + ", ".join(Q_INITS))
    need(self.conv_init in CONV_INITS, "conv_init", "one of " + ", ".join(CONV_INITS))
    need(self.on_miss in ON_MISS, "on_miss", "one of " + ", ".join(ON_MISS))
    need(self.precision in ("float32", "mixed_float16", "mixed_bfloat16"),
         "precision", "one of float32, mixed_float16, mixed_bfloat16")
    need(self.png_width >= 16 and self.png_width % 16 == 0, "png_width",
         "a positive multiple of 16 (the encoder halves it four times)")
    for key in ("recurrent_dropout_prob", "input_dropout_prob",
                "output_dropout_prob"):
      need(0.0 < getattr(self, key) <= 1.0, key, "a keep probability in (0, 1]")
    for key in ("learning_rate", "min_learning_rate", "grad_clip"):
      need(getattr(self, key) > 0, key, "a number > 0")
    need(self.min_learning_rate <= self.learning_rate, "min_learning_rate",
         "a number <= learning_rate")
    need(0.0 < self.decay_rate <= 1.0, "decay_rate", "a number in (0, 1]")
    need(0.0 < self.eta <= 1.0, "eta", "a number in (0, 1]")
    need(0.0 <= self.gamma < 1.0, "gamma", "a number in [0, 1)")
    need(self.de_weight >= 0, "de_weight", "a number >= 0")
    need(self.kl_factor >= 0, "kl_factor", "a number >= 0")
    need(0.0 <= self.random_scale_factor < 1.0, "random_scale_factor",
         "a number in [0, 1)")
    need(0.0 <= self.augment_stroke_prob <= 1.0, "augment_stroke_prob",
         "a probability in [0, 1]")
    need(0.0 < self.png_scale_ratio <= 1.0, "png_scale_ratio",
         "a ratio in (0, 1]")
    need(0.0 <= self.png_rotate_angle <= 180.0, "png_rotate_angle",
         "degrees in [0, 180]")
    need(0.0 <= self.png_translate_dist < self.png_width / 2,
         "png_translate_dist", "pixels in [0, png_width/2)")
    need(0.0 <= self.semi_percent <= 1.0, "semi_percent", "a fraction in [0, 1]")
    need(self.scale_factor >= 0, "scale_factor", "0 (computed) or a number > 0")
    return self


# The released TF1 code's 8 categories (its train.py defaults).
SYNTHETIC_CATEGORIES = ["house", "star", "face", "fish", "flower"]
# The three human-drawn sets of ../shared/data (the real preset).
REAL_CATEGORIES = ["aaron_sheep", "omniglot", "kanji.rdp200"]
RELEASE_CATEGORIES = ["bee", "bus", "car", "cat", "flower", "giraffe", "horse",
                      "pig"]

# Presets, applied on top of the paper defaults before the user's --hparams
# string.  "paper" is the defaults unchanged (the paper README's list);
# "release" is the released TF1 code's configuration: K = L = 16 (its
# num_layer_j = num_layer_i = 16), q(k|l) = 1 + 16 I column-normalised,
# batch 200, its 8 categories (every other default already matches it);
# "small", "demo", "real" and "tiny" are for a 2-core CPU.
_SMALL = dict(dec_rnn_size=256, z_size=32, batch_size=64,
              hyper_num_units=64, hyper_embedding_size=16,
              num_output_mixture=10, num_per_category=5000,
              learning_rate=0.003, em_steps=100, warmup_steps=100,
              save_every=1, length_buckets=4)
# What made the demo learn fast (README, "The demo preset"), shared by the
# demo and real presets.
_FAST = dict(_SMALL, num_mixture=16, num_sub=1, q_init="anchor", em_steps=500,
             use_recurrent_dropout=False, conv_init="he",
             random_scale_factor=0.0, augment_stroke_prob=0.0,
             on_miss="keep", eval_sketches=500, patience=100)
PRESETS = {
    "paper": {},
    "release": dict(categories=list(RELEASE_CATEGORIES), batch_size=200,
                    num_mixture=16, num_sub=1, q_init="anchor"),
    "small": dict(_SMALL),
    # the demo: small on the embedded synthetic set, K = L = 16 as the release
    # (q = 1 + K I), EM until the codes have separated, then RPCL; tuned to
    # learn fast in 15 CPU minutes (README, "The demo preset"): filters that
    # Adam moves at the pace of the rest (conv_init=he), no stroke
    # augmentation (the image is not augmented alike), validation on 500
    # sketches that never throws steps away.
    "demo": dict(_FAST, categories=list(SYNTHETIC_CATEGORIES)),
    # the three real sets (../shared/data) for an hour of 2 CPU cores (README,
    # "The real preset"): the demo's choices, and every sheep of the training
    # split with as many omniglot and kanji sketches, so the categories weigh
    # alike in each batch and in the hierarchy's priors.
    "real": dict(_FAST, categories=list(REAL_CATEGORIES),
                 num_per_category=7400),
    "tiny": dict(dec_rnn_size=32, z_size=8, batch_size=16,
                 hyper_num_units=16, hyper_embedding_size=4,
                 num_output_mixture=3, num_per_category=64,
                 em_steps=10, warmup_steps=20, use_recurrent_dropout=False,
                 length_buckets=4),
}


def get_hparams(preset="paper", overrides=""):
  """The defaults, then ``PRESETS[preset]``, then the ``--hparams`` string."""
  if preset not in PRESETS:
    raise HParamsError(f"unknown preset {preset!r}: expected one of "
                       f"{', '.join(sorted(PRESETS))}")
  preset_values = {k: list(v) if isinstance(v, list) else v
                   for k, v in PRESETS[preset].items()}   # no shared lists
  return HParams().replace(**preset_values).parse(overrides or "")


def _split_assignments(text):
  """Splits ``a=1,b=[x,y],c=z`` at commas outside brackets."""
  text = (text or "").strip()
  if not text:
    return []
  parts, depth, cur = [], 0, []
  for ch in text:
    if ch == "[":
      depth += 1
    elif ch == "]":
      depth -= 1
      if depth < 0:
        raise HParamsError(f"malformed --hparams {text!r}: unbalanced ']'")
    if ch == "," and depth == 0:
      parts.append("".join(cur))
      cur = []
    else:
      cur.append(ch)
  if depth != 0:
    raise HParamsError(f"malformed --hparams {text!r}: unbalanced '['")
  parts.append("".join(cur))
  out = []
  for part in parts:
    part = part.strip()
    if not part:
      continue
    if "=" not in part:
      raise HParamsError(
          f"malformed --hparams entry {part!r}: expected key=value")
    key, value = part.split("=", 1)
    out.append((key.strip(), value.strip()))
  return out


_FIELDS = {f.name: f for f in dataclasses.fields(HParams)}


def _convert(key, raw):
  """Converts the string ``raw`` to the type of hparam ``key``."""
  if key not in _FIELDS:
    raise HParamsError(f"unknown hparam {key!r}; known: {', '.join(_FIELDS)}")
  kind = type(getattr(HParams(), key))
  if kind is list:
    if not (raw.startswith("[") and raw.endswith("]")):
      raise HParamsError(
          f"hparam {key}={raw!r} is not a list: expected e.g. {key}=[bee,bus]")
    items = [s.strip().strip("'\"") for s in raw[1:-1].split(",")]
    if any(not s for s in items):
      raise HParamsError(f"hparam {key}={raw!r} has an empty list item")
    return items
  if kind is bool:
    low = raw.lower()
    if low in ("true", "1", "yes"):
      return True
    if low in ("false", "0", "no"):
      return False
    raise HParamsError(f"hparam {key}={raw!r} is not a boolean: expected True or False")
  try:
    if kind is int:
      value = float(raw)
      if value != int(value):
        raise ValueError
      return int(value)
    if kind is float:
      return float(raw)
  except ValueError:
    raise HParamsError(
        f"hparam {key}={raw!r} is not a{'n integer' if kind is int else ' number'}"
    ) from None
  return raw.strip("'\"")


def save_config(path, hps):
  """Writes ``hps`` as JSON (atomically) to ``path`` (usually model_config.json)."""
  payload = dict(hps.to_dict(), config_version=CONFIG_VERSION)
  atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n",
                    role="train")


def load_config(path, warn=True):
  """Reads a model_config.json; missing keys get defaults (and a warning)."""
  try:
    with open(path) as f:
      data = json.load(f)
  except FileNotFoundError:
    raise UserError(f"no model config at {path!r}: train a model first "
                    f"(python train.py --log_root=DIR ...)") from None
  except (OSError, ValueError) as e:
    raise UserError(f"model config {path!r} is not readable JSON: {e}") from None
  if not isinstance(data, dict):
    raise UserError(f"model config {path!r} is not a JSON object")
  data.pop("config_version", None)
  for key in RETIRED_KEYS:
    data.pop(key, None)
  unknown = sorted(set(data) - set(_FIELDS))
  if unknown:
    raise UserError(f"model config {path!r} has unknown keys {unknown}: "
                    f"written by a newer version?")
  missing = sorted(set(_FIELDS) - set(data))
  if missing and warn:
    sys.stderr.write(f"warning: {path} lacks {', '.join(missing)} "
                     f"(older version); using defaults for them\n")
  try:
    return HParams(**data).validate()
  except TypeError as e:
    raise UserError(f"model config {path!r} is malformed: {e}") from None
