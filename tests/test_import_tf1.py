"""model/tf1/import_tf1.py: a checkpoint written as the released TF1 code names
its variables (tests/release_tf1.py) becomes a model folder that load_trained,
sample.py and evaluate.py read, with every variable consumed, every weight
assigned, and the networks computing what the release's equations compute
from the TF1 arrays (an independent TF / NumPy forward pass here)."""
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from data import strokes as S
import hparams as hp
from model.storage.checkpoint import CheckpointState, build_model, load_trained
from model.tf1 import tf1_layout
from model.tf1.import_tf1 import import_checkpoint
from tests.cli_harness import run_in_process
from tests.conftest import TINY_CATS
from tests.release_tf1 import release_graph, write_release_checkpoint

P = "RPCL-pix2seq/"
CELL = P + "decoder/rnn/HyperLSTMCell/"
SMALL = (f"dec_rnn_size=16,z_size=8,hyper_num_units=8,hyper_embedding_size=4,"
         f"num_output_mixture=3,num_mixture=3,categories=[{','.join(TINY_CATS)}],"
         f"max_seq_len=12,batch_size=4")


def small(dec_model="hyper"):
  return hp.get_hparams("release", SMALL + f",dec_model={dec_model}")


def graph_shapes(graph):
  with graph.as_default():
    return {v.op.name: tuple(v.shape.as_list())
            for v in tf.compat.v1.global_variables()}


# --- names and shapes at the release configuration ---------------------------

def test_release_names_and_shapes_and_the_map_cover_the_model(monkeypatch):
  hps = hp.get_hparams("release", "max_seq_len=4")
  graph, _ = release_graph(hps, values=False)     # names/shapes only
  shapes = graph_shapes(graph)
  expected = tf1_layout.release_shapes(hps)
  trainable = tf1_layout.trainable_names(hps)
  assert len(expected) == 102 and len(trainable) == 97
  slots = {f"{P}{t}/{s}" for t in trainable for s in ("Adam", "Adam_1")}
  powers = {f"RPCL-pix2seq{x}/beta{i}_power" for x in ("", "_1") for i in (1, 2)}
  assert set(shapes) == set(expected) | slots | powers
  assert all(shapes[k] == v for k, v in expected.items())
  for name, shape in [(CELL + "W_xh", (133, 8192)), (CELL + "W_hh", (2048, 8192)),
                      (CELL + "LayerNormLSTMCell/W_xh", (2181, 1024)),
                      (CELL + "hyper_oh/beta/super_linear_w", (32, 2048)),
                      (P + "init_state/linear/fc_w", (128, 2 * (2048 + 256))),
                      (P + "decoder/fc/linear/fc_w", (2048, 123)),
                      (P + "deconv/deconv0/filter", (3, 3, 128, 256)),
                      (P + "encoder/layer_2/combine/conv0/InstanceNorm/gamma", (64,)),
                      (P + "latent_ij", (16, 16)), (P + "latent_i", (16, 1))]:
    assert shapes[name] == shape, name
  arch = tf1_layout.infer_architecture(shapes)
  assert {k: v for k, (v, _) in arch.items()} == dict(
      z_size=128, num_mixture=16, num_sub=1, dec_model="hyper",
      dec_rnn_size=2048, hyper_num_units=256, hyper_embedding_size=32,
      num_output_mixture=20, png_width=48)
  # our model at these sizes (the slow (2048, 2048) orthogonal draws -> zeros)
  monkeypatch.setattr(keras.initializers.Orthogonal, "__call__",
                      lambda self, shape, dtype=None: tf.zeros(shape, dtype))
  model = build_model(hps)
  assignments = tf1_layout.weight_map(model)
  targets = [id(a.variable) for a in assignments]
  assert sorted(targets) == sorted(id(v) for v in model.trainable_variables
                                   + model.hierarchy.weights)
  used = {s for a in assignments for s in a.sources}
  assert used == set(expected) - set(tf1_layout.NON_WEIGHTS)
  total = 0
  for a in assignments:   # every map yields our shape from the release's
    out = a.combine([np.zeros(expected[s], np.float32) for s in a.sources])
    assert out.shape == tuple(a.variable.shape), a.variable.path
    total += out.size
  # every release element lands once (the inner W_xh is split in two)
  assert total == sum(int(np.prod(expected[s])) for s in used)


# --- the full import at small sizes --------------------------------------------

@pytest.fixture(scope="module")
def imported(tmp_path_factory, tiny_data):
  root = tmp_path_factory.mktemp("tf1")
  longest = max(len(x) for cat in TINY_CATS for split in S.load_strokes_npz(
      os.path.join(tiny_data, f"{cat}.npz")).values() for x in split)
  values = write_release_checkpoint(str(root / "release"), small(),
                                    config_changes=dict(max_seq_len=longest))
  out = str(root / "model")
  code, stdout, stderr = run_in_process("model.tf1.import_tf1", [
      f"--checkpoint={root / 'release'}", f"--out_dir={out}",
      f"--data_dir={tiny_data}"])
  assert code == 0, stderr
  return values, out, stdout, tiny_data


def np_in(x, gamma, beta):
  mean, var = tf.nn.moments(x, [1, 2], keepdims=True)
  return (x - mean) * tf.math.rsqrt(var + 1e-6) * gamma + beta


def release_encoder(t, x):
  """Cnn.py / model.py's encoder from the TF1 arrays ``t``."""
  def norm(scope, y):
    return np_in(y, t[scope + "/InstanceNorm/gamma"], t[scope + "/InstanceNorm/beta"])
  for b in (1, 2):
    s = f"{P}encoder/layer_{b}/"
    total = sum(norm(f"{s}dcn{i}/conv0", tf.nn.atrous_conv2d(
        x, t[f"{s}dcn{i}/conv0/filter"], rate, "SAME"))
                for i, rate in ((1, 1), (2, 2), (3, 5)))
    x = tf.nn.relu(norm(s + "combine/conv0", tf.nn.conv2d(
        tf.nn.relu(total), t[s + "combine/conv0/filter"], 2, "SAME")))
  for i in (0, 1):
    s = f"{P}encoder/conv{i}"
    x = tf.nn.relu(norm(s, tf.nn.conv2d(x, t[s + "/filter"], 2, "SAME")))
  x = tf.reshape(x, [x.shape[0], -1])
  fc = lambda s: x @ t[f"{P}encoder/{s}/linear/fc_w"] + t[f"{P}encoder/{s}/linear/fc_b"]
  return fc("fc_mu"), tf.nn.softplus(fc("fc_sigma2")) + 1e-10


def release_image_decoder(t, z):
  x = tf.nn.relu(z @ t[P + "deconv/fc1/linear/fc_w"] + t[P + "deconv/fc1/linear/fc_b"])
  x = tf.reshape(x, [-1, 3, 3, 256])
  for i, cout in enumerate((128, 64, 32, 1)):
    s = f"{P}deconv/deconv{i}"
    b, h = x.shape[0], x.shape[1]
    x = tf.nn.conv2d_transpose(x, t[s + "/filter"], [b, 2 * h, 2 * h, cout], 2, "SAME")
    x = np_in(x, t[s + "/InstanceNorm/gamma"], t[s + "/InstanceNorm/beta"])
    x = tf.tanh(x) if i == 3 else tf.nn.relu(x)
  return x


def sig(x):
  return 1 / (1 + np.exp(-x))


def ln(x, gamma, beta, parts):
  """rnn.py layer_norm_all (parts = 4) / layer_norm (parts = 1), eps 1e-3."""
  y = x.reshape(len(x), parts, -1)
  y = (y - y.mean(-1, keepdims=True)) / np.sqrt(y.var(-1, keepdims=True) + 1e-3)
  return y.reshape(len(x), -1) * gamma + beta


def lstm_step(t, c, x, state):
  """rnn.py LSTMCell under prefix c: state [c | h]."""
  cc, h = np.split(state, 2, 1)
  i, j, f, o = np.split(np.concatenate([x, h], 1) @ np.concatenate(
      [t[c + "W_xh"], t[c + "W_hh"]]) + t[c + "bias"], 4, 1)
  new_c = cc * sig(f + 1) + sig(i) * np.tanh(j)
  new_h = np.tanh(new_c) * sig(o)
  return new_h, np.concatenate([new_c, new_h], 1)


def ln_step(t, c, x, state):
  """rnn.py LayerNormLSTMCell under prefix c: state [h | c]."""
  h, cc = np.split(state, 2, 1)
  g = ln(np.concatenate([x, h], 1) @ np.concatenate([t[c + "W_xh"], t[c + "W_hh"]]),
         t[c + "ln_all/ln_gamma"], t[c + "ln_all/ln_beta"], 4)
  i, j, f, o = np.split(g, 4, 1)
  new_c = cc * sig(f + 1) + sig(i) * np.tanh(j)
  new_h = np.tanh(ln(new_c, t[c + "ln_c/ln_gamma"], t[c + "ln_c/ln_beta"], 1)) * sig(o)
  return new_h, np.concatenate([new_h, new_c], 1)


def hyper_step(t, c, units, x, state):
  """rnn.py HyperLSTMCell: state [h | hyper_h | c | hyper_c]."""
  total_h, total_c = np.split(state, 2, 1)
  h, cc = total_h[:, :units], total_c[:, :units]
  hyper_h, hyper_state = ln_step(
      t, c + "LayerNormLSTMCell/", np.concatenate([x, h], 1),
      np.concatenate([total_h[:, units:], total_c[:, units:]], 1))

  def hyper_norm(layer, gate, bias):
    g = f"{c}hyper_{gate}/"
    zw = hyper_h @ t[g + "zw/super_linear_w"] + t[g + "zw/super_linear_b"]
    out = (zw @ t[g + "alpha/super_linear_w"]) * layer
    if bias:
      out = out + (hyper_h @ t[g + "zb/super_linear_w"]) @ t[g + "beta/super_linear_w"]
    return out

  xs = np.split(x @ t[c + "W_xh"], 4, 1)
  hs = np.split(h @ t[c + "W_hh"], 4, 1)
  bs = np.split(t[c + "bias"], 4)
  gates = [hyper_norm(xs[q], gx, False) + hyper_norm(hs[q], gh, True) + bs[q]
           for q, (gx, gh) in enumerate(zip(tf1_layout.GATES_X, tf1_layout.GATES_H))]
  i, j, f, o = np.split(ln(np.concatenate(gates, 1), t[c + "ln_all/ln_gamma"],
                           t[c + "ln_all/ln_beta"], 4), 4, 1)
  new_c = cc * sig(f + 1) + sig(i) * np.tanh(j)
  new_h = np.tanh(ln(new_c, t[c + "ln_c/ln_gamma"], t[c + "ln_c/ln_beta"], 1)) * sig(o)
  hh, hc = np.split(hyper_state, 2, 1)
  return new_h, np.concatenate([new_h, hh, new_c, hc], 1)


def release_cell_step(t, hps, x, state):
  c = tf1_layout.cell_prefix(hps.dec_model)
  if hps.dec_model == "lstm":
    return lstm_step(t, c, x, state)
  if hps.dec_model == "layer_norm":
    return ln_step(t, c, x, state)
  return hyper_step(t, c, hps.dec_rnn_size, x, state)


def check_decoder(t, hps, model, seed=0):
  """Two decoding steps: the release's equations vs our stroke decoder."""
  rng = np.random.default_rng(seed)
  z = rng.normal(size=(3, hps.z_size)).astype(np.float32)
  xs = [np.eye(5, dtype=np.float32)[[2, 2, 2]],
        np.c_[rng.normal(size=(3, 2)), np.eye(3)[[0, 1, 0]]].astype(np.float32)]
  state = np.tanh(z @ t[P + "init_state/linear/fc_w"] + t[P + "init_state/linear/fc_b"])
  dec = model.stroke_decoder
  ours = dec.initial_state(z)
  for x5 in xs:
    h, state = release_cell_step(t, hps, np.concatenate([x5, z], 1), state)
    want = h @ t[P + "decoder/fc/linear/fc_w"] + t[P + "decoder/fc/linear/fc_b"]
    raw, ours = dec.step(x5, z, ours)
    np.testing.assert_allclose(raw.numpy(), want, rtol=2e-4, atol=2e-5)


def test_import_maps_every_variable_and_the_networks_agree(imported):
  t, out, stdout, _ = imported
  assert "imported 300 TF1 variables" in stdout and "+ the Adam state" in stdout
  hps, model = load_trained(out)
  assert (hps.dec_model, hps.dec_rnn_size, hps.hyper_num_units,
          hps.hyper_embedding_size, hps.num_output_mixture, hps.z_size) == (
              "hyper", 16, 8, 4, 3, 8)
  assert hps.num_components == hps.num_units == 3 and hps.max_seq_len > 12
  assert hps.categories == TINY_CATS and hps.batch_size == 4
  assert hps.de_weight == 1.0 and hps.scale_factor > 0   # from --data_dir
  # GMM state
  np.testing.assert_array_equal(model.hierarchy.mu.numpy(), t[P + "latent_mu"])
  np.testing.assert_array_equal(model.hierarchy.sigma2.numpy(), t[P + "latent_sigma2"])
  np.testing.assert_array_equal(model.hierarchy.pi_l.numpy(), t[P + "latent_i"][:, 0])
  np.testing.assert_array_equal(model.hierarchy.q_kl.numpy(), t[P + "latent_ij"])
  # networks, from the TF1 arrays by the release's equations
  x = np.random.default_rng(1).uniform(-1, 1, (2, 48, 48, 1)).astype(np.float32)
  m, s = model.encode(x)
  want_m, want_s = release_encoder(t, x)
  np.testing.assert_allclose(m, want_m, rtol=1e-3, atol=1e-3)
  np.testing.assert_allclose(s, want_s, rtol=1e-3, atol=1e-4)
  z = np.random.default_rng(2).normal(size=(2, 8)).astype(np.float32)
  np.testing.assert_allclose(model.image_decoder(z), release_image_decoder(t, z),
                             atol=2e-4)
  check_decoder(t, hps, model)
  # the step (para.npz count = 3 Adam steps) and the Adam moments, restored
  # as train.py --resume_training would
  fresh = build_model(hps)
  state = CheckpointState(fresh, out)
  state.restore()
  assert state.semi_mask.numpy().shape == (6,)   # para.npz's train_label_mask
  assert int(fresh.global_step.numpy()) == 3 and state.epoch.numpy() == 2
  opt = fresh.optimizer
  assert int(opt.iterations.numpy()) == 3
  index = opt._get_variable_index(fresh.stroke_decoder.cell.w_in)  # pylint: disable=protected-access
  inner = CELL + "LayerNormLSTMCell/W_xh"
  for store, slot in ((opt._momentums, "Adam"), (opt._velocities, "Adam_1")):  # pylint: disable=protected-access
    want = np.concatenate([t[f"{P}{CELL}W_xh/{slot}"],
                           t[f"{P}{inner}/{slot}"][:13]], axis=1)
    np.testing.assert_array_equal(store[index].numpy(), want)
  for a, b in zip(fresh.trainable_variables, model.trainable_variables):
    np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("dec_model", ["lstm", "layer_norm"])
def test_other_cells_and_the_step_from_beta2_power(dec_model, tmp_path):
  hps = small(dec_model)
  t = write_release_checkpoint(str(tmp_path / "rel"), hps, steps=5, para=False,
                               eval_copy=dec_model == "lstm")
  report = import_checkpoint(str(tmp_path / "rel"), str(tmp_path / "out"))
  assert report["optimizer"] and report["step"] == 5   # 0.999^(5+1)
  assert report["consumed"] == sorted(t)
  got, model = load_trained(str(tmp_path / "out"))
  assert got.dec_model == dec_model
  check_decoder(t, got, model, seed=3)


def test_sample_loads_the_imported_model(imported, tmp_path):
  _, out, _, data = imported
  code, _, err = run_in_process("sample.py", [
      f"--model_dir={out}", f"--output_dir={tmp_path / 's'}",
      "--num_per_category=1", "--max_len=6"])
  assert code == 0, err
  with np.load(tmp_path / "s" / "samples.npz") as f:
    assert len(f["label_k"]) == 2 and f["images"].shape == (2, 48, 48)


def bad(tmp_path, **kwargs):
  """(exit code, stderr) of the CLI on a release checkpoint made with kwargs."""
  folder = str(tmp_path / "rel")
  config_changes = kwargs.pop("config_changes", None)
  write_release_checkpoint(folder, small(), adam=kwargs.pop("adam", False),
                           config_changes=config_changes, **kwargs)
  code, _, err = run_in_process("model.tf1.import_tf1", [
      f"--checkpoint={folder}", f"--out_dir={tmp_path / 'out'}"])
  return code, err


@pytest.mark.parametrize("case,needle", [
    (dict(drop=[CELL + "hyper_oh/beta/super_linear_w"]),
     f"lacks variable {CELL}hyper_oh/beta/super_linear_w"),
    (dict(reshape={P + "deconv/fc1/linear/fc_b": [7]}),
     f"variable {P}deconv/fc1/linear/fc_b has shape (7,), expected (2304,)"),
    (dict(extra=[CELL + "extra_w"]), f"has variable {CELL}extra_w"),
    (dict(config_changes=dict(dec_rnn_size=64)),
     f"says dec_rnn_size=64 but the checkpoint has dec_rnn_size=16 ({CELL}W_hh"),
    (dict(config_changes=dict(num_layer_j=5)), "says num_layer_j=5"),
    (dict(config=False), "max_seq_len is unknown"),
    (dict(drop=[P + "latent_ij"]), f"lacks variable {P}latent_ij"),
])
def test_bad_checkpoints_give_one_line(case, needle, tmp_path):
  code, err = bad(tmp_path, **case)
  assert code == 2, err
  assert needle in err and err.count("\n") == 1, err
  assert not os.path.exists(tmp_path / "out")


def test_bad_arguments(tmp_path, imported):
  _, out, _, _ = imported
  release = os.path.join(os.path.dirname(out), "release")
  (tmp_path / "ck").mkdir()
  for args, needle in [
      ([f"--checkpoint={tmp_path / 'ck'}", f"--out_dir={tmp_path / 'o'}"],
       "holds no checkpoint"),
      ([f"--checkpoint={release}", f"--out_dir={os.path.join(release, 'o')}"],
       "lies inside --checkpoint"),
      ([f"--checkpoint={tmp_path / 'nope'}", f"--out_dir={tmp_path / 'o'}"],
       "neither a checkpoint folder"),
      ([f"--checkpoint={out}", f"--out_dir={tmp_path / 'o'}"], "no variable under RPCL-pix2seq/"),
      ([f"--checkpoint={out}", f"--out_dir={out}"], "is not an empty folder"),
      ([f"--out_dir={tmp_path / 'o'}"], "--checkpoint is required")]:
    code, _, err = run_in_process("model.tf1.import_tf1", args)
    assert code == 2 and needle in err and err.count("\n") == 1, (args, err)
  assert json.load(open(os.path.join(out, hp.CONFIG_NAME)))["dec_model"] == "hyper"
