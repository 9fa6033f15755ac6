"""visualization.py --projector (utils/projector.py): the files TensorBoard's
Embedding Projector opens, checked with tensorboard's own config proto and
TSV reader; the sprite's size limit."""
import os
import subprocess
import sys

from google.protobuf import text_format
import numpy as np
from PIL import Image
import pytest
from tensorboard.plugins.projector import projector_plugin
from tensorboard.plugins.projector import projector_config_pb2 as pb

from model.inference import synthesis
from tests.conftest import ROOT
from tests.test_visualization import CATEGORIES, write_samples
from utils import figures, projector
from utils.drawing import thumbnail
from utils.errors import UserError
from utils.samples_file import load_samples

N = 24


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  folder = str(tmp_path_factory.mktemp("proj") / "samples")
  category = (np.arange(N) % 2).astype(np.int32)
  category[5] = -1                                   # a sample without one
  ref_index = np.arange(N, dtype=np.int32)
  ref_index[7] = -1
  write_samples(folder, n=N, category=category, ref_index=ref_index)
  samples = load_samples(folder)
  out = figures.export_projector(samples, folder)
  return samples, out


def _config(folder):
  with open(os.path.join(folder, projector.CONFIG_NAME)) as f:
    return text_format.Parse(f.read(), pb.ProjectorConfig())


def test_config_parses_and_names_the_files(exported):
  samples, out = exported
  folder = out["folder"]
  assert folder == os.path.dirname(samples["path"])
  (emb,) = _config(folder).embeddings
  assert list(emb.tensor_shape) == [N, 8]
  for rel in (emb.tensor_path, emb.metadata_path, emb.sprite.image_path):
    assert not os.path.isabs(rel) and os.path.isfile(os.path.join(folder, rel))
  assert list(emb.sprite.single_image_dim) == [out["thumb"]] * 2


def test_codes_round_trip_through_the_projectors_reader(exported):
  samples, out = exported
  z = projector_plugin._read_tensor_tsv_file(
      os.path.join(out["folder"], projector.TENSOR_NAME))
  assert z.shape == samples["z"].shape
  np.testing.assert_allclose(z, samples["z"], rtol=1e-6, atol=1e-6)


def test_metadata_rows_match_the_codes(exported):
  samples, out = exported
  with open(os.path.join(out["folder"], projector.METADATA_NAME)) as f:
    rows = [line.rstrip("\n").split("\t") for line in f]
  assert rows[0] == ["sample", "category", "level_k", "level_l", "ref_index"]
  assert len(rows) - 1 == len(samples["z"]) == N
  for i, row in enumerate(rows[1:]):
    c = samples["category"][i]
    r = samples["ref_index"][i]
    assert row == [str(i), CATEGORIES[c] if c >= 0 else "none",
                   f"k{samples['label_k'][i]}", f"l{samples['label_l'][i]}",
                   str(r) if r >= 0 else "none"]


def test_sprite_is_a_square_grid_of_the_tinted_sketches(exported):
  samples, out = exported
  sprite = np.asarray(Image.open(os.path.join(out["folder"],
                                              projector.SPRITE_NAME)))
  thumb, cols = out["thumb"], int(np.ceil(np.sqrt(N)))
  assert thumb == projector.THUMB and sprite.shape == (cols * thumb, cols * thumb, 3)
  colours = figures.category_colours(samples)
  for i in (0, 5, N - 1):
    y, x = (i // cols) * thumb, (i % cols) * thumb
    want = np.asarray(thumbnail(samples["images"][i], thumb, colours[i]))
    np.testing.assert_array_equal(sprite[y:y + thumb, x:x + thumb], want)
  assert np.all(sprite[-thumb:, (N % cols) * thumb:] == 255)   # unused cells


@pytest.mark.parametrize("n", [1, 300, 2400, 20000, 1_000_000])
def test_sprite_stays_within_the_projector_limit(n):
  thumb, cols = projector.thumb_size(n)
  assert cols * cols >= n and cols * thumb <= projector.SPRITE_LIMIT
  assert thumb == min(projector.THUMB, projector.SPRITE_LIMIT // cols)
  assert thumb >= projector.MIN_THUMB


def test_too_many_samples_for_a_sprite_is_refused():
  with pytest.raises(UserError, match="sprite"):
    projector.thumb_size((projector.SPRITE_LIMIT // projector.MIN_THUMB + 1) ** 2)


def test_cli_prints_the_tensorboard_command(exported, tmp_path):
  samples, _ = exported
  src = os.path.dirname(samples["path"])
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  proc = subprocess.run(
      [sys.executable, "visualization.py", "--projector", f"--input_dir={src}",
       f"--output_dir={tmp_path}"], cwd=ROOT, env=env, capture_output=True,
      text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert f"tensorboard --logdir {tmp_path}" in proc.stdout
  assert sorted(f for f in os.listdir(tmp_path) if not f.startswith(".")) == \
      sorted(projector.FILES)                      # and no figures (no t-SNE)


def test_sample_overwrite_replaces_a_folder_with_projector_files(
    tiny_model, tmp_path):
  """The projector files are recorded in the samples folder's manifest, so
  sample.py --overwrite may replace the folder (and drops them)."""
  data_dir, model_dir, _ = tiny_model
  out = str(tmp_path / "s")
  synthesis.synthesize(model_dir, out, data_dir=data_dir, num_per_category=3)
  figures.export_projector(load_samples(out), out)
  synthesis.synthesize(model_dir, out, data_dir=data_dir, num_per_category=3,
                       overwrite=True)
  assert not os.path.exists(os.path.join(out, projector.CONFIG_NAME))
