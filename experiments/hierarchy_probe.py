"""The latent hierarchy alone on codes from a known two-level truth.

  python -m experiments.hierarchy_probe [--shapes 5x2,8x3,16x1,13x1,8x2]
      [--q_inits block,anchor] [--rpcl true,false] [--grow_steps 0,1000]
      [--num_steps 4000] [--seeds 0] [--hparams eta=0.05,...] [--out probe.json]

Drives only model/hierarchy.py's ``Hierarchy`` layer, as
model/rpcl_model.py's train step does (``update(z, m, s, step)`` with the
step counter 0, 1, 2, ..., so the same EM/RPCL schedule, hps from
hparams.get_hparams of the ``small`` preset plus overrides), on batches of
codes whose truth is the synthetic set's: 5 categories x 2-3 styles = 13
styles (data/synthetic.py CATEGORIES), each style a Gaussian cluster in
D = z_size dimensions, the styles of a category close to each other and the
categories far apart.  Encoder means m = scale(step) * style mean + noise,
variances s constant, codes y = m + sqrt(s) eps (the reparameterisation).
``grow_steps`` > 0 imitates an encoder still learning: the cluster means are
scaled by a factor growing linearly from ``scale0`` to 1 over that many
steps, so the clusters start overlapping and separate over training, and the
encoder variance moves geometrically from ``var0`` to its final value.

The codes are static: nothing pulls them toward the components (the real
model's Gaussian KL does), so this isolates what the closed-form update does
with a given geometry.  Reported per configuration: live level-k / level-l
counts over steps, level-k vs style and level-l vs category purity / NMI of
the test codes' labels (as evaluate.py, from the encoder means), each live
unit's members (q(k|l) > MEMBER_Q) and whether they changed from the initial
assignment, and q(k|l) at the end.  Deterministic given the seed.
"""
import itertools
import json
import time

from utils import quiet  # noqa: F401  (first: quiets TensorFlow's start-up)
import numpy as np
import tensorflow as tf
from absl import app, flags

from data.synthetic import CATEGORIES
from hparams import get_hparams
from model.hierarchy import Hierarchy
from utils import metrics
from utils.errors import UserError, check_argv, cli_main, parse_flags
from utils.io import atomic_write_text

FLAGS = flags.FLAGS
if __name__ == "__main__":
  flags.DEFINE_list("shapes", ["5x2", "8x3", "16x1", "13x1", "8x2"],
                    "num_mixture x num_sub pairs (L x components per unit).")
  flags.DEFINE_list("q_inits", ["block", "anchor"], "q_init values.")
  flags.DEFINE_list("rpcl", ["true", "false"], "rpcl values.")
  flags.DEFINE_list("grow_steps", ["0", "1000"], "Steps over which the "
                    "cluster means grow from --scale0 to 1 (0: fixed).")
  flags.DEFINE_list("seeds", ["0"], "Seeds (truth, batches and init).")
  flags.DEFINE_integer("num_steps", 4000, "Hierarchy updates per run.")
  flags.DEFINE_string("hparams", "", "Extra overrides of the small preset "
                      "(eta, gamma, em_steps, rpcl_every, z_size, batch_size).")
  flags.DEFINE_float("scale0", 0.1, "Initial mean scale when growing.")
  flags.DEFINE_float("cat_std", 1.0, "Per-dimension std of category centres.")
  flags.DEFINE_float("style_std", 0.3, "Per-dimension std of a style's offset "
                     "from its category centre.")
  flags.DEFINE_float("noise_std", 0.1, "Per-dimension std of encoder means "
                     "around their style mean.")
  flags.DEFINE_float("enc_var", 0.01, "Encoder variance s (every dimension).")
  flags.DEFINE_float("pull", 0.0, "Fraction of the way each code moves to "
                     "its posterior mean of the components before an update "
                     "(imitates the Gaussian KL's pull on the encoder).")
  flags.DEFINE_float("var0", None, "Initial encoder variance when growing "
                     "(default --enc_var: constant).")
  flags.DEFINE_string("out", None, "JSON file for every run's results.")

MEMBER_Q = 0.1        # q(k|l) above this: k is a member of unit l
LOG_EVERY = 50        # steps per compiled chunk / curve point


def style_table():
  """[(category index, category, style name)] of the 13 synthetic styles."""
  return [(c, cat, st) for c, (cat, (_, styles)) in enumerate(CATEGORIES.items())
          for st in styles]


def make_truth(dim, seed, cat_std=1.0, style_std=0.3, noise_std=0.1,
               enc_var=0.01):
  """The two-level truth: category centres ~ N(0, cat_std^2 I), style means
  = centre + N(0, style_std^2 I); per-code mean noise ``noise_std``, encoder
  variance ``enc_var``.  Returns a dict of NumPy arrays and floats."""
  rng = np.random.default_rng([int(seed), 7])
  table = style_table()
  style_cat = np.array([c for c, _, _ in table], np.int64)
  centres = rng.normal(0.0, cat_std, (len(CATEGORIES), dim))
  means = centres[style_cat] + rng.normal(0.0, style_std, (len(table), dim))
  return dict(means=means, style_cat=style_cat, noise_std=float(noise_std),
              enc_var=float(enc_var),
              names=[f"{cat}/{st}" for _, cat, st in table])


def mean_scale(step, grow_steps, scale0):
  """scale0 -> 1 linearly over ``grow_steps`` steps, then 1."""
  if grow_steps <= 0:
    return 1.0
  return scale0 + (1.0 - scale0) * min(1.0, step / grow_steps)


def encoder_variance(step, grow_steps, var0, var):
  """var0 -> var geometrically over ``grow_steps`` steps, then var."""
  if grow_steps <= 0 or var0 is None:
    return var
  frac = min(1.0, step / grow_steps)
  return float(var0 ** (1.0 - frac) * var ** frac)


def draw_codes(rng, truth, num, scales, variances=None):
  """(m, s, y, style, category) for ``num`` codes per entry of ``scales``
  (and of ``variances``, default the truth's enc_var): category uniform, then
  style uniform within it (as data/synthetic.py)."""
  scales = np.asarray(scales, np.float64)
  if variances is None:
    variances = np.full(scales.size, truth["enc_var"])
  style_cat = truth["style_cat"]
  num_cat = int(style_cat.max()) + 1
  cat = rng.integers(num_cat, size=(scales.size, num))
  pick = rng.random((scales.size, num))
  style = np.empty_like(cat)
  for c in range(num_cat):
    members = np.flatnonzero(style_cat == c)
    idx = np.minimum((pick * members.size).astype(np.int64), members.size - 1)
    style = np.where(cat == c, members[idx], style)
  dim = truth["means"].shape[1]
  m = (scales[:, None, None] * truth["means"][style]
       + rng.normal(0.0, truth["noise_std"], (scales.size, num, dim)))
  s = np.broadcast_to(np.asarray(variances, np.float64)[:, None, None],
                      m.shape)
  y = m + np.sqrt(s) * rng.normal(size=m.shape)
  as32 = lambda a: a.astype(np.float32)
  return as32(m), as32(s), as32(y), style, cat


def make_hps(num_mixture, num_sub, q_init, rpcl, extra=""):
  """The small preset's hps with the hierarchy shape and switches set."""
  text = (f"num_mixture={num_mixture},num_sub={num_sub},q_init={q_init},"
          f"rpcl={str(bool(rpcl)).lower()}")
  return get_hparams("small", text + ("," + extra if extra else ""))


def members(q, threshold=MEMBER_Q):
  """Per unit, the sorted tuple of components with q(k|l) > threshold."""
  q = np.asarray(q)
  return [tuple(int(k) for k in np.flatnonzero(q[:, l] > threshold))
          for l in range(q.shape[1])]


def live_counts(layer):
  """(live level-k, live level-l) with evaluate.py's 0.1/count threshold."""
  pi_k = layer.pi_k().numpy()
  pi_l = layer.pi_l.numpy()
  return int(metrics.live_mask(pi_k).sum()), int(metrics.live_mask(pi_l).sum())


def _chunk_fn(layer):
  """A tf.function running layer.update over a chunk of batches.

  ``pull`` in [0, 1) imitates the Gaussian KL's pull of the encoder toward
  the components: each code (m and y alike) first moves that fraction of the
  way to sum_k post_k mu_k under the current state; 0 leaves the codes as
  drawn (the update then sees exactly the static codes)."""
  @tf.function(autograph=True, reduce_retracing=True)
  def run(ys, ms, ss, start, pull=tf.constant(0.0)):
    for i in tf.range(tf.shape(ys)[0]):
      y, m = ys[i], ms[i]
      post = layer.posteriors(y).post_k
      shift = pull * (tf.linalg.matmul(post, tf.cast(layer.mu, tf.float32)) - m)
      layer.update(y + shift, m + shift, ss[i], start + tf.cast(i, tf.int64))
  return run


def run_probe(hps, truth, num_steps, seed=0, grow_steps=0, scale0=0.1,
              var0=None, pull=0.0, num_test=100, log_every=LOG_EVERY):
  """Trains a fresh Hierarchy(hps, seed) for ``num_steps`` updates on batches
  of hps.batch_size codes and scores it.  Returns a JSON-able dict."""
  if truth["means"].shape[1] != hps.z_size:
    raise ValueError(f"truth has D={truth['means'].shape[1]}, "
                     f"hps.z_size={hps.z_size}")
  layer = Hierarchy(hps, seed=seed)
  initial = members(layer.q_kl.numpy())
  sub = hps.num_components // hps.num_units
  block = [tuple(range(l * sub, (l + 1) * sub)) for l in range(hps.num_units)]
  rng = np.random.default_rng([int(seed), 11])
  run = _chunk_fn(layer)
  curve = dict(step=[0], live_k=[], live_l=[])
  lk, ll = live_counts(layer)
  curve["live_k"].append(lk)
  curve["live_l"].append(ll)
  history, switches, last_switch = initial, 0, 0
  step = 0
  while step < num_steps:
    n = min(log_every, num_steps - step)
    scales = [mean_scale(step + i, grow_steps, scale0) for i in range(n)]
    var = [encoder_variance(step + i, grow_steps, var0, truth["enc_var"])
           for i in range(n)]
    m, s, y, _, _ = draw_codes(rng, truth, hps.batch_size, scales, var)
    run(tf.constant(y), tf.constant(m), tf.constant(s),
        tf.constant(step, tf.int64), tf.constant(float(pull), tf.float32))
    step += n
    now = members(layer.q_kl.numpy())
    changes = sum(a != b for a, b in zip(now, history))
    switches += changes
    last_switch = step if changes else last_switch
    history = now
    lk, ll = live_counts(layer)
    curve["step"].append(step)
    curve["live_k"].append(lk)
    curve["live_l"].append(ll)
  return dict(curve=curve, member_switches=int(switches),
              last_switch_step=int(last_switch),
              **score(layer, truth, block, rng, num_test))


def score(layer, truth, block, rng, num_test):
  """Final labels of fresh test codes (encoder means, full scale) against the
  truth, plus each live unit's members and its q(k|l); a unit ``changed``
  when a member lies outside its initial block (the components it owned)."""
  m, _, _, style, cat = draw_codes(rng, truth, num_test * len(truth["names"]),
                                   [1.0])
  out = layer.posteriors(tf.constant(m[0]))
  label_k, label_l = out.label_k.numpy(), out.label_l.numpy()
  style, cat = style[0], cat[0]
  q = layer.q_kl.numpy()
  pi_k, pi_l = layer.pi_k().numpy(), layer.pi_l.numpy()
  live_k, live_l = metrics.live_mask(pi_k), metrics.live_mask(pi_l)
  # Each component's majority style among the test codes it labels.
  comp_style = {}
  for k in np.unique(label_k):
    comp_style[int(k)] = int(np.bincount(style[label_k == k]).argmax())
  final = members(q)
  units = []
  for l in np.flatnonzero(live_l):
    mem = final[l]
    names = [truth["names"][comp_style[k]] if k in comp_style else "-"
             for k in mem]
    cats = {n.split("/")[0] for n in names if n != "-"}
    units.append(dict(unit=int(l), pi=float(pi_l[l]), members=list(mem),
                      q=[round(float(q[k, l]), 3) for k in mem],
                      styles=names, one_category=len(cats) <= 1,
                      changed=not set(mem) <= set(block[l])))
  return dict(
      live_k=int(live_k.sum()), live_l=int(live_l.sum()),
      used_k=int(np.unique(label_k).size), used_l=int(np.unique(label_l).size),
      k_vs_style=dict(nmi=metrics.nmi(label_k, style),
                      purity=metrics.purity(label_k, style)),
      l_vs_category=dict(nmi=metrics.nmi(label_l, cat),
                         purity=metrics.purity(label_l, cat)),
      k_vs_category_nmi=metrics.nmi(label_k, cat),
      units_changed=int(sum(u["changed"] for u in units)),
      units=units, q_kl=np.round(q, 4).tolist())


def meets_targets(result):
  """The issue's hierarchy targets: level-k vs style NMI >= 0.9, level-l vs
  category purity >= 0.9 and NMI >= 0.8, fewer live units than components."""
  return (result["k_vs_style"]["nmi"] >= 0.9
          and result["l_vs_category"]["purity"] >= 0.9
          and result["l_vs_category"]["nmi"] >= 0.8
          and result["live_l"] < result["live_k"])


def parse_shape(text):
  """'LxS' -> (L, S)."""
  try:
    l, s = (int(v) for v in text.lower().split("x"))
    if l < 1 or s < 1:
      raise ValueError
  except ValueError:
    raise UserError(f"--shapes entry {text!r} is invalid: expected LxS with "
                    "integers >= 1, e.g. 5x2") from None
  return l, s


def parse_bool(text):
  if text.lower() not in ("true", "false"):
    raise UserError(f"--rpcl entry {text!r} is invalid: expected true or false")
  return text.lower() == "true"


def parse_int(text, flag):
  try:
    return int(text)
  except ValueError:
    raise UserError(f"--{flag} entry {text!r} is invalid: expected an "
                    "integer") from None


def table_row(cfg, r):
  k, l = r["k_vs_style"], r["l_vs_category"]
  return (f"| {cfg['shape']} | {cfg['q_init']} | {cfg['rpcl']} | "
          f"{cfg['grow_steps']} | {cfg['seed']} | {r['live_k']} | "
          f"{r['live_l']} | {k['nmi']:.2f} | {k['purity']:.2f} | "
          f"{l['nmi']:.2f} | {l['purity']:.2f} | {r['units_changed']} | "
          f"{r['member_switches']} | {r['last_switch_step']} | "
          f"{'yes' if meets_targets(r) else 'no'} |")


TABLE_HEAD = ("| LxS | q_init | rpcl | grow | seed | live k | live l | "
              "k~style NMI | k~style pur | l~cat NMI | l~cat pur | "
              "units changed | member switches | last switch | targets |\n"
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def summarise(results):
  """Means over seeds per configuration (everything but the seed equal):
  [(config without seed, dict of means, seeds meeting the targets, runs)]."""
  groups = {}
  for entry in results:
    cfg = {k: v for k, v in entry["config"].items()
           if k not in ("seed", "seconds")}
    groups.setdefault(json.dumps(cfg, sort_keys=True), (cfg, []))[1].append(
        entry["result"])
  out = []
  for cfg, runs in groups.values():
    mean = lambda f: float(np.mean([f(r) for r in runs]))
    out.append((cfg, dict(
        live_k=mean(lambda r: r["live_k"]), live_l=mean(lambda r: r["live_l"]),
        k_style_nmi=mean(lambda r: r["k_vs_style"]["nmi"]),
        l_cat_nmi=mean(lambda r: r["l_vs_category"]["nmi"]),
        l_cat_purity=mean(lambda r: r["l_vs_category"]["purity"]),
        changed=mean(lambda r: r["units_changed"] / max(1, r["live_l"]))),
        sum(meets_targets(r) for r in runs), len(runs)))
  return out


SUMMARY_HEAD = ("| LxS | q_init | rpcl | grow | live k | live l | k~style NMI | "
                "l~cat NMI | l~cat pur | units changed | targets met |\n"
                "|---|---|---|---|---|---|---|---|---|---|---|")


def summary_row(cfg, m, met, runs):
  return (f"| {cfg['shape']} | {cfg['q_init']} | {cfg['rpcl']} | "
          f"{cfg['grow_steps']} | {m['live_k']:.1f} | {m['live_l']:.1f} | "
          f"{m['k_style_nmi']:.2f} | {m['l_cat_nmi']:.2f} | "
          f"{m['l_cat_purity']:.2f} | {m['changed']:.0%} | {met}/{runs} |")


@cli_main
def main(argv):
  check_argv(argv)
  if FLAGS.num_steps < 1:
    raise UserError(f"--num_steps={FLAGS.num_steps} is invalid: expected >= 1")
  shapes = [parse_shape(t) for t in FLAGS.shapes]
  rpcls = [parse_bool(t) for t in FLAGS.rpcl]
  grows = [parse_int(t, "grow_steps") for t in FLAGS.grow_steps]
  seeds = [parse_int(t, "seeds") for t in FLAGS.seeds]
  for q_init in FLAGS.q_inits:
    if q_init not in ("block", "anchor"):
      raise UserError(f"--q_inits entry {q_init!r} is invalid: expected "
                      "block or anchor")
  results = []
  print(TABLE_HEAD)
  for seed, (l, s), q_init, rpcl, grow in itertools.product(
      seeds, shapes, FLAGS.q_inits, rpcls, grows):
    hps = make_hps(l, s, q_init, rpcl, FLAGS.hparams)
    truth = make_truth(hps.z_size, seed, FLAGS.cat_std, FLAGS.style_std,
                       FLAGS.noise_std, FLAGS.enc_var)
    start = time.time()
    r = run_probe(hps, truth, FLAGS.num_steps, seed, grow, FLAGS.scale0,
                  FLAGS.var0, FLAGS.pull)
    cfg = dict(shape=f"{l}x{s}", q_init=q_init, rpcl=rpcl, grow_steps=grow,
               seed=seed, hparams=FLAGS.hparams, seconds=time.time() - start,
               codes=dict(cat_std=FLAGS.cat_std, style_std=FLAGS.style_std,
                          noise_std=FLAGS.noise_std, enc_var=FLAGS.enc_var,
                          var0=FLAGS.var0, scale0=FLAGS.scale0,
                          pull=FLAGS.pull, num_steps=FLAGS.num_steps))
    print(table_row(cfg, r), flush=True)
    for u in r["units"]:
      print(f"    unit {u['unit']} pi={u['pi']:.3f}: " + ", ".join(
          f"{k}:{n}({q})" for k, n, q in zip(u["members"], u["styles"],
                                               u["q"])))
    results.append(dict(config=cfg, result=r))
  print("\nmeans over seeds (units changed: share of live units holding a "
        "component outside their initial block)\n" + SUMMARY_HEAD)
  for row in summarise(results):
    print(summary_row(*row))
  if FLAGS.out:
    atomic_write_text(FLAGS.out, json.dumps(results, indent=1))


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
