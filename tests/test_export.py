"""export.py (model/inference/export.py): the SavedModel of the session's tiny
model loads with plain tf.saved_model.load in a process that cannot import
this repository and decodes what sample.py's sampler decodes; its folder
follows the output rules; explore.py's backends read it like a model folder.

The export is made once for the module; the process outside the repository
and ``saved_model_cli`` start together with it and run on the second core.
"""
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from data.dataset import load_dataset
from model.inference import export as export_lib
from model.inference import sampler
from model.inference.backends import ExportedModel, ModelFolder, open_model
from model.inference.explorer import Explorer
from model.storage.checkpoint import load_trained
from utils import ownership
from utils.errors import UserError

SEED, TEMPERATURE, MAX_LEN = 11, 0.4, 12

# Run with ``python -I`` (no PYTHONPATH, no script folder, no user site) from
# a folder outside the repository: only TensorFlow and NumPy are importable.
OUTSIDE = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf
    try:
      import model.inference.sampler
      sys.exit("the repository is importable")
    except ImportError:
      pass
    export_dir, inputs, outputs = sys.argv[1:]
    loaded = tf.saved_model.load(export_dir)
    d = np.load(inputs)
    sample = loaded.signatures["sample"](
        z=tf.constant(d["z"]), temperature=tf.constant(d["temperature"]),
        seed=tf.constant(d["seed"]), max_len=tf.constant(d["max_len"]))
    encode = loaded.signatures["encode"](images=tf.constant(d["images"]))
    unit = loaded.sample_unit(tf.constant("l"), tf.constant(0, tf.int32),
                              tf.constant(3, tf.int32), tf.constant(5, tf.int64),
                              tf.constant(0.3), tf.constant(8, tf.int32))
    try:
      loaded.sample_unit(tf.constant("k"), tf.constant(99, tf.int32),
                         tf.constant(3, tf.int32), tf.constant(5, tf.int64),
                         tf.constant(0.3), tf.constant(8, tf.int32))
      refused = ""
    except tf.errors.InvalidArgumentError as e:
      refused = e.message
    np.savez(outputs, strokes=sample["strokes"].numpy(),
             lengths=sample["lengths"].numpy(), m=encode["m"].numpy(),
             p_l=encode["p_l"].numpy(), unit_z=unit["z"].numpy(),
             unit_k=unit["k"].numpy(), unit_lengths=unit["lengths"].numpy(),
             refused=refused)
""")


def _clean_env():
  return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


@pytest.fixture(scope="module")
def exported(tiny_model, tmp_path_factory):
  """(export folder, inputs, outputs of the process outside the repository,
  saved_model_cli's listing)."""
  data_dir, model_dir, _ = tiny_model
  root = tmp_path_factory.mktemp("export")
  out = str(root / "exported")
  summary = export_lib.export(model_dir, out, max_len=MAX_LEN)
  hps, _ = load_trained(model_dir)
  test = load_dataset(data_dir, hps).splits["test"]
  inputs = str(root / "inputs.npz")
  z = np.random.default_rng(0).standard_normal((6, hps.z_size)).astype(np.float32)
  np.savez(inputs, z=z, temperature=np.float32(TEMPERATURE),
           seed=np.int64(SEED), max_len=np.int32(MAX_LEN),
           images=test.images[:5])
  outside = root / "elsewhere"
  outside.mkdir()
  (outside / "script.py").write_text(OUTSIDE)
  procs = {
      "outside": subprocess.Popen(
          [sys.executable, "-I", "script.py", out, inputs, str(root / "out.npz")],
          cwd=str(outside), env=_clean_env(), stdout=subprocess.PIPE,
          stderr=subprocess.PIPE, text=True),
      "cli": subprocess.Popen(
          [os.path.join(os.path.dirname(sys.executable), "saved_model_cli"),
           "show", "--all", "--dir", out], cwd=str(outside), env=_clean_env(),
          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)}
  results = {name: p.communicate(timeout=240) for name, p in procs.items()}
  for name, p in procs.items():
    assert p.returncode == 0, (name, results[name][1][-2000:])
  with np.load(str(root / "out.npz")) as d:
    outputs = {k: d[k] for k in d.files}
  return dict(out=out, summary=summary, inputs=np.load(inputs), outputs=outputs,
              listing=results["cli"][0], model_dir=model_dir, data_dir=data_dir)


def test_outside_the_repository_sample_equals_the_sampler(exported):
  """The same codes and seed give the strokes sample.py's sampler gives."""
  hps, model = load_trained(exported["model_dir"])
  d, o = exported["inputs"], exported["outputs"]
  strokes5, lengths = sampler.sample_strokes(
      model.stroke_decoder, d["z"], MAX_LEN, TEMPERATURE, seed=SEED)
  expected = sampler.to_stroke3(strokes5, lengths, hps.scale_factor)
  assert np.array_equal(o["lengths"], lengths)
  for b, seq in enumerate(expected):
    assert np.array_equal(o["strokes"][b, :lengths[b]], seq)
    assert not o["strokes"][b, lengths[b]:].any()
  m, _ = model.encode(tf.constant(d["images"], tf.float32)[..., None]
                      * (2.0 / 255.0) - 1.0)
  np.testing.assert_allclose(o["m"], m.numpy(), atol=1e-4)
  assert np.allclose(o["p_l"].sum(1), 1.0, atol=1e-4)


def test_sample_unit_and_its_refusal(exported):
  o = exported["outputs"]
  assert o["unit_z"].shape == (3, 8) and o["unit_lengths"].shape == (3,)
  assert set(o["unit_k"].tolist()) <= {0, 1, 2, 3}
  assert "index must be a live level-k component" in str(o["refused"])


def test_saved_model_cli_lists_the_signatures(exported):
  for name in export_lib.SIGNATURES:
    assert f"signature_def['{name}']" in exported["listing"], name


def test_assets_and_marker(exported):
  assets = os.path.join(exported["out"], "assets")
  info = json.load(open(os.path.join(assets, export_lib.INFO_NAME)))
  assert info["format"] == export_lib.FORMAT and info["max_len"] == MAX_LEN
  hierarchy = json.load(open(os.path.join(assets, export_lib.HIERARCHY_NAME)))
  assert np.asarray(hierarchy["q_kl"]).shape == (4, 2)
  assert os.path.isfile(os.path.join(assets, "model_config.json"))
  assert not ownership.foreign_files(exported["out"], export_lib.ROLE)


def test_explorer_reads_the_export_like_the_model_folder(exported):
  folder = ModelFolder(exported["model_dir"])
  saved = open_model(exported["out"])
  assert isinstance(saved, ExportedModel) and saved.max_len == MAX_LEN
  z = exported["inputs"]["z"]
  for a, b in zip(folder.sample(z, 0.3, 4, MAX_LEN), saved.sample(z, 0.3, 4, MAX_LEN)):
    assert np.array_equal(a, b)
  np.testing.assert_allclose(saved.hierarchy.q_kl, folder.hierarchy.q_kl)
  ex = Explorer(saved, exported["data_dir"], max_test=8)
  out = ex.sample_node("l", ex.live_l[0], 3, 0.3, 0)
  assert len(out.strokes) == 3 and len(ex.test) == 8


def test_out_dir_rules(exported, tmp_path):
  model_dir, data_dir = exported["model_dir"], exported["data_dir"]
  for inside in (os.path.join(model_dir, "e"), os.path.dirname(model_dir)):
    with pytest.raises(UserError, match="--out_dir=.*refusing to write there"):
      export_lib.check_out_dir(inside, model_dir, True)
  with pytest.raises(UserError, match="the data folder recorded in"):
    export_lib.check_out_dir(os.path.join(data_dir, "e"), model_dir, True)
  with pytest.raises(UserError, match="is not empty .*--overwrite"):
    export_lib.check_out_dir(exported["out"], model_dir, False)
  export_lib.check_out_dir(exported["out"], model_dir, True)   # an export: fine
  foreign = tmp_path / "mine"
  foreign.mkdir()
  (foreign / "notes.txt").write_text("mine")
  with pytest.raises(UserError, match="holds files this program did not write"):
    export_lib.check_out_dir(str(foreign), model_dir, True)
  with pytest.raises(UserError, match="--max_len=-1"):
    export_lib.export(model_dir, str(tmp_path / "x"), max_len=-1)


def test_a_failed_export_leaves_nothing_and_overwrite_replaces(exported, tmp_path,
                                                                 monkeypatch):
  out = str(tmp_path / "again")
  real_save = tf.saved_model.save

  def broken(*args, **kwargs):
    raise RuntimeError("disk trouble")
  monkeypatch.setattr(tf.saved_model, "save", broken)
  with pytest.raises(RuntimeError, match="disk trouble"):
    export_lib.export(exported["model_dir"], out)
  assert os.listdir(str(tmp_path)) == []
  monkeypatch.setattr(tf.saved_model, "save", real_save)
  shutil.copytree(exported["out"], out)   # an earlier export (manifest and all)
  export_lib.export(exported["model_dir"], out, overwrite=True, max_len=6)
  info = json.load(open(os.path.join(out, "assets", export_lib.INFO_NAME)))
  assert info["max_len"] == 6 and os.listdir(str(tmp_path)) == ["again"]
