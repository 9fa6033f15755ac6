"""Dataset loading, image augmentation, the tf.data pipeline and the semi mask."""
import os

import numpy as np
import pytest

from data import images as I
from data import strokes as S
from data.dataset import Split, load_dataset
from data.pipeline import (bucket_boundaries, make_dataset, num_batches,
                           semi_mask)
from data.raster import render_many
from hparams import get_hparams
from tests.conftest import SHARED_DATA
from utils.errors import UserError

W = 16


def obj(seqs):
  a = np.empty(len(seqs), dtype=object)
  a[:] = list(seqs)
  return a


def make_sketch(rng, n):
  s = rng.integers(-30, 31, size=(n, 3)).astype(np.int16)
  s[:, 2] = (rng.random(n) < 0.2)
  s[-1, 2] = 1
  return s


def write_category(folder, name, sizes, rng, lengths=(5, 30), width=W, png=True):
  splits = {k: [make_sketch(rng, int(rng.integers(*lengths))) for _ in range(n)]
            for k, n in zip(S.SPLITS, sizes)}
  np.savez(os.path.join(folder, f"{name}.npz"), **{k: obj(v) for k, v in splits.items()})
  if png:
    imgs = {k: rng.integers(0, 256, size=(len(v), width, width)).astype(np.uint8)
            for k, v in splits.items()}
    np.savez(os.path.join(folder, f"{name}_png.npz"), **imgs)
  return splits


def hps_for(cats, **kw):
  over = ",".join([f"categories=[{','.join(cats)}]", f"png_width={W}"] +
                  [f"{k}={v}" for k, v in kw.items()])
  return get_hparams("tiny", over)


# ---------------------------------------------------------------- dataset
def test_load_dataset_labels_limits_scale(tmp_path):
  rng = np.random.default_rng(0)
  a = write_category(tmp_path, "a", (30, 5, 6), rng)
  b = write_category(tmp_path, "b", (25, 4, 7), rng)
  b["test"][0] = make_sketch(rng, 60)  # the longest sketch is in the test split
  b["test"][0][0, 0] = 5000            # clamped to 1000 before scaling
  np.savez(tmp_path / "b.npz", **{k: obj(v) for k, v in b.items()})
  hps = hps_for(["b", "a"], num_per_category=20, batch_size=8)
  d = load_dataset(str(tmp_path), hps)
  assert d.categories == ["b", "a"] and d.max_seq_len == 60
  tr = d.splits["train"]
  assert len(tr) == 40 and tr.images.shape == (40, W, W) and tr.images.dtype == np.uint8
  np.testing.assert_array_equal(tr.labels, [0] * 20 + [1] * 20)
  np.testing.assert_array_equal(d.splits["test"].labels, [0] * 7 + [1] * 6)
  raw_train = b["train"][:20] + a["train"][:20]
  xy = np.concatenate([s[:, :2].ravel() for s in raw_train]).astype(np.float64)
  assert d.scale_factor == pytest.approx(np.std(xy), rel=1e-6)
  np.testing.assert_allclose(tr.strokes[21][:, :2], a["train"][1][:, :2] / d.scale_factor,
                             rtol=1e-6)
  t0 = d.splits["test"].strokes[0]
  assert t0[0, 0] == pytest.approx(1000 / d.scale_factor, rel=1e-6)
  raw = np.load(tmp_path / "a_png.npz")
  np.testing.assert_array_equal(d.splits["valid"].images[4:], raw["valid"][:5])

  d2 = load_dataset(str(tmp_path), hps.replace(scale_factor=2.5, max_seq_len=20))
  assert d2.scale_factor == 2.5 and d2.max_seq_len == 20
  for sp in d2.splits.values():
    assert all(len(s) <= 20 for s in sp.strokes)
    assert len(sp.strokes) == len(sp.images) == len(sp.labels)
  kept = [s for s in raw_train if len(s) <= 20]
  assert len(d2.splits["train"]) == len(kept)
  np.testing.assert_allclose(d2.splits["train"].strokes[0][:, :2], kept[0][:, :2] / 2.5)


def dataset_error(folder, hps, match):
  with pytest.raises(UserError, match=match) as e:
    load_dataset(str(folder), hps)
  assert "\n" not in str(e.value)
  return str(e.value)


def test_dataset_bad_input(tmp_path):
  rng = np.random.default_rng(1)
  hps = hps_for(["a"], batch_size=4)
  msg = dataset_error(tmp_path / "missing", hps, "does not exist")
  assert "data.synthetic" in msg and "data.quickdraw" in msg
  dataset_error(tmp_path, hps, "no .npz files")
  write_category(tmp_path, "a", (10, 3, 3), rng)
  msg = dataset_error(tmp_path, hps_for(["a", "zebra"], batch_size=4),
                      "'zebra'.*not found")
  assert "available: a" in msg
  write_category(tmp_path, "c", (10, 3, 3), rng, png=False)
  dataset_error(tmp_path, hps_for(["c"], batch_size=4), "c_png.npz.*data.seq2png")
  dataset_error(tmp_path, hps_for(["a"], batch_size=11), "batch_size=11 is larger")
  dataset_error(tmp_path, hps.replace(png_width=32), r"shape \(16, 16\).*png_width=32")
  good = dict(np.load(tmp_path / "a_png.npz"))
  np.savez(tmp_path / "a_png.npz", train=good["train"][:9], valid=good["valid"],
           test=good["test"])
  dataset_error(tmp_path, hps, "9 images but the stroke file has 10")
  np.savez(tmp_path / "a_png.npz", train=good["train"], valid=good["valid"])
  dataset_error(tmp_path, hps, "no key 'test'")
  (tmp_path / "a_png.npz").write_bytes(b"PK\x03\x04garbage")
  dataset_error(tmp_path, hps, "truncated or corrupt")


@pytest.mark.skipif(not os.path.isdir(SHARED_DATA), reason="no shared data")
def test_real_files_through_pipeline(tmp_path):
  cats = ["aaron_sheep", "omniglot", "kanji.rdp200"]
  for cat in cats:  # subsets keeping each file's own element dtype
    raw = np.load(os.path.join(SHARED_DATA, f"{cat}.npz"), allow_pickle=True,
                  encoding="latin1")
    sub = {k: raw[k][:n] for k, n in zip(S.SPLITS, (300, 60, 60))}
    np.savez(tmp_path / f"{cat}.npz", **sub)
    np.savez(tmp_path / f"{cat}_png.npz", **{
        k: render_many([np.asarray(s, np.float32) for s in v], 48) for k, v in sub.items()})
  hps = get_hparams("small", f"categories=[{','.join(cats)}],batch_size=32")
  d = load_dataset(str(tmp_path), hps)
  assert len(d.splits["train"]) == 900 and d.max_seq_len >= 100
  ds = make_dataset(d.splits["train"], hps, d.max_seq_len, training=True, seed=0)
  bounds = bucket_boundaries([len(x) for x in d.splits["train"].strokes],
                             hps.length_buckets, d.max_seq_len)   # small: on
  assert bounds[-1] == d.max_seq_len and len(bounds) > 1
  labels = []
  for x5, n, img, lab in ds:
    assert x5.shape[1] - 1 == n.numpy().max() <= bounds[-1]   # its longest
    assert x5.shape[::2] == (32, 5) and img.shape == (32, 48, 48, 1)
    labels.append(lab.numpy())
  assert sorted(np.unique(np.concatenate(labels))) == [0, 1, 2]
  assert sum(map(len, labels)) == 896


# ---------------------------------------------------------------- images
def test_rescale_is_exact_area_resampling():
  rng = np.random.default_rng(2)
  img = rng.integers(0, 256, size=(48, 48)).astype(np.uint8)
  # ratio 0.75: the output spans source [-8, 56] (64 px) -> 48 px; reference:
  # pad white, upsample 3x by repetition, average 4x4 blocks.
  padded = np.full((64, 64), 255.0)
  padded[8:56, 8:56] = img
  up = padded.repeat(3, 0).repeat(3, 1)
  ref = up.reshape(48, 4, 48, 4).mean(axis=(1, 3))
  out = I.random_rescale(img, 0.75)
  assert np.abs(out.astype(float) - ref).max() <= 0.5 + 1e-6
  np.testing.assert_array_equal(I.random_rescale(img, 1.0), img)
  ink = 255.0 - np.full((48, 48), 255.0)
  ink[14:34, 14:34] = 200  # central ink: total ink scales with ratio^2
  src = (255 - ink).astype(np.uint8)
  for r in (0.98, 0.9, 0.6):
    got = (255.0 - I.random_rescale(src, r)).sum() / ink.sum()
    assert got == pytest.approx(r * r, rel=0.01)


def test_rotate_translate_geometry():
  img = np.full((48, 48), 255, np.uint8)
  img[10:30, 20] = 0
  img[24, 5:13] = 0
  shifted = np.full_like(img, 255)
  shifted[2:, 3:] = img[:-2, :-3]
  np.testing.assert_array_equal(I.rotate_translate(img, 0.0, 3.0, 2.0), shifted)
  np.testing.assert_array_equal(I.rotate_translate(img, 90.0, 0.0, 0.0), np.rot90(img))


def test_augment_images_batch_equals_single_and_white_stays_white():
  rng = np.random.default_rng(3)
  imgs = rng.integers(0, 256, size=(6, 48, 48)).astype(np.uint8)
  hps = get_hparams("small", "png_rotate_angle=20,png_translate_dist=4")
  batch = I.augment_images(imgs, hps, np.random.default_rng(7))
  r = np.random.default_rng(7)
  np.testing.assert_array_equal(batch, [I.augment_image(x, hps, r) for x in imgs])
  assert not np.array_equal(batch, imgs)
  white = np.full((3, 48, 48), 255, np.uint8)
  np.testing.assert_array_equal(I.augment_images(white, hps, rng), white)
  assert I.augment_image(imgs[0], hps, rng).dtype == np.uint8


def test_to_unit_range():
  np.testing.assert_allclose(I.to_unit_range(np.array([0, 255, 51], np.uint8)),
                             [-1.0, 1.0, 51 / 255 * 2 - 1], atol=1e-6)


# ---------------------------------------------------------------- pipeline
def toy_split(n, rng, max_len=20):
  strokes = [S.apply_scale([make_sketch(rng, int(rng.integers(3, max_len + 1)))], 10.0)[0]
             for _ in range(n)]
  imgs = rng.integers(0, 256, size=(n, W, W)).astype(np.uint8)
  return Split(strokes, imgs, np.arange(n, dtype=np.int32))  # label = index


def collect(ds):
  return [tuple(t.numpy() for t in b) for b in ds]


def test_eval_pipeline_exact_in_order_with_remainder():
  rng = np.random.default_rng(4)
  sp = toy_split(10, rng)
  hps = hps_for(["a"], batch_size=4)
  batches = collect(make_dataset(sp, hps, 20, training=False, seed=0))
  assert [len(b[1]) for b in batches] == [4, 4, 2] == [
      4, 4, num_batches(10, 4, False) - 1]
  x5, n, img, lab = (np.concatenate(z) for z in zip(*batches))
  np.testing.assert_array_equal(lab, np.arange(10))
  np.testing.assert_array_equal(x5, S.to_stroke5(sp.strokes, 20))
  np.testing.assert_array_equal(n, [len(s) for s in sp.strokes])
  np.testing.assert_array_equal(img[..., 0], I.to_unit_range(sp.images))
  assert x5.dtype == np.float32 and n.dtype == np.int32 and lab.dtype == np.int32


def test_training_pipeline_shapes_and_stroke5_layout():
  rng = np.random.default_rng(5)
  sp = toy_split(37, rng)
  hps = hps_for(["a"], batch_size=8, augment_stroke_prob=0.5,
                png_rotate_angle=10, png_translate_dist=2, length_buckets=0)
  ds = make_dataset(sp, hps, 20, training=True, seed=1)
  assert ds.element_spec[0].shape == (8, 21, 5) and ds.element_spec[2].shape == (8, W, W, 1)
  batches = collect(ds)
  assert len(batches) == 4
  for x5, n, img, lab in batches:
    np.testing.assert_array_equal(x5[:, 0], np.tile([0, 0, 1, 0, 0], (8, 1)))
    for row, length, i in zip(x5, n, lab):
      body = row[1:length + 1]
      np.testing.assert_array_equal(body[:, 2] + body[:, 3], 1)
      assert (body[:, 4] == 0).all() and body[-1, 3] == 1
      np.testing.assert_array_equal(row[length + 1:], np.tile([0, 0, 0, 0, 1],
                                                              (20 - length, 1)))
      orig = sp.strokes[i]
      assert length <= len(orig) and body[:, 3].sum() == orig[:, 2].sum()
    assert img.min() >= -1 and img.max() <= 1


def test_pipeline_deterministic_per_seed_and_reshuffled_per_epoch():
  rng = np.random.default_rng(6)
  sp = toy_split(40, rng)
  hps = hps_for(["a"], batch_size=8, augment_stroke_prob=0.3)

  def two_epochs(seed, first_epoch=0):
    ds = make_dataset(sp, hps, 20, training=True, seed=seed, first_epoch=first_epoch)
    return collect(ds), collect(ds)

  a0, a1 = two_epochs(3)
  b0, b1 = two_epochs(3)
  for x, y in zip(a0 + a1, b0 + b1):
    for u, v in zip(x, y):
      np.testing.assert_array_equal(u, v)
  order0 = np.concatenate([b[3] for b in a0])
  order1 = np.concatenate([b[3] for b in a1])
  assert len(set(order0)) == 40 and len(set(order1)) == 40  # each example once
  assert not np.array_equal(order0, order1)
  assert not np.array_equal(order0, np.arange(40))
  c0, _ = two_epochs(4)
  assert not np.array_equal(order0, np.concatenate([b[3] for b in c0]))
  resumed, _ = two_epochs(3, first_epoch=1)  # a resumed run continues epoch 1
  for x, y in zip(resumed, a1):
    np.testing.assert_array_equal(x[0], y[0])
  # augmentation changed the strokes compared with the stored ones
  x5, n, _, lab = a0[0]
  assert any(not np.array_equal(x5[j, 1:n[j] + 1, :2], sp.strokes[lab[j]][:, :2])
             for j in range(8))



def test_bucket_boundaries():
  lengths = np.arange(1, 101)   # quantiles 25.75, 50.5, 75.25
  np.testing.assert_array_equal(bucket_boundaries(lengths, 4, 130),
                                [32, 56, 80, 130])
  np.testing.assert_array_equal(bucket_boundaries(lengths, 4, 60), [32, 56, 60])
  np.testing.assert_array_equal(bucket_boundaries(lengths, 1, 100), [100])
  np.testing.assert_array_equal(bucket_boundaries([5] * 9, 3, 20), [8, 20])


@pytest.mark.parametrize("jit", [False, True])
def test_length_buckets_pad_each_batch_to_its_longest_or_bucket(jit):
  rng = np.random.default_rng(7)
  n, bsz = 150, 12
  labels = np.arange(n, dtype=np.int32) % 3       # category 2: long sketches
  strokes = [S.apply_scale([make_sketch(rng, int(rng.integers(3, 12 + 14 * c)))],
                           10.0)[0] for c in labels]
  ids = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None], (n, W, W))
  sp = Split(strokes, np.ascontiguousarray(ids), labels)   # image = its index
  lengths = np.array([len(x) for x in strokes])
  hps = hps_for(["a", "b", "c"], batch_size=bsz, augment_stroke_prob=0.3,
                length_buckets=3, jit_compile=jit, png_scale_ratio=1.0)
  index = lambda batch: np.rint((batch[2][:, 0, 0, 0] + 1) * 127.5).astype(int)
  bounds = bucket_boundaries(lengths, 3, 40)
  ds = make_dataset(sp, hps, 40, training=True, seed=2)
  assert ds.element_spec[0].shape.as_list() == [bsz, None, 5]
  plain = make_dataset(sp, hps.replace(length_buckets=0), 40, training=True,
                       seed=2)
  for epoch, plain_epoch in zip((collect(ds), collect(ds)),
                                (collect(plain), collect(plain))):
    # the same sketches as the unbucketed epoch (same remainder dropped)
    got = np.concatenate([index(b) for b in epoch])
    np.testing.assert_array_equal(np.sort(got), np.sort(np.concatenate(
        [index(b) for b in plain_epoch])))
    assert len(epoch) == n // bsz and len(set(got)) == len(got)
    for batch in epoch:
      x5, lens, _, cats = batch
      lab = index(batch)
      np.testing.assert_array_equal(cats, labels[lab])
      assert len(set(cats)) == 3   # every batch mixes the categories
      pad = x5.shape[1] - 1       # XLA: the smallest boundary holding the batch
      assert pad == (bounds[np.searchsorted(bounds, lengths[lab].max())]
                     if jit else lens.max())
      assert (lens <= lengths[lab]).all()
      np.testing.assert_array_equal(x5[:, 0], np.tile([0, 0, 1, 0, 0], (bsz, 1)))
      for row, length in zip(x5, lens):
        np.testing.assert_array_equal(row[length + 1:, 4], 1)
    # sketches of similar within-category length share batches: the batches'
    # longest sketches are much shorter than in random batches
    longest = lambda batches: np.mean([lengths[index(b)].max() for b in batches])
    assert longest(epoch) < 0.8 * longest(plain_epoch)
  again = collect(make_dataset(sp, hps, 40, training=True, seed=2))
  for x, y in zip(again, collect(make_dataset(sp, hps, 40, training=True, seed=2))):
    for u, v in zip(x, y):
      np.testing.assert_array_equal(u, v)
  evaluation = collect(make_dataset(sp, hps, 40, training=False, seed=0))
  assert all(b[0].shape[1] == 41 for b in evaluation)   # eval: unchanged


# ---------------------------------------------------------------- semi mask
def test_semi_mask():
  labels = np.repeat([0, 1, 2], [50, 30, 20])
  rng = np.random.default_rng(7)
  m = semi_mask(labels, 0.1, False, rng)
  assert m.dtype == bool and m.sum() == 10
  m = semi_mask(labels, 0.1, True, rng)
  assert [m[labels == c].sum() for c in range(3)] == [5, 3, 2]
  assert semi_mask(labels, 0.0, True, rng).sum() == 0
  assert semi_mask(labels, 1.0, False, rng).all()
  assert not np.array_equal(semi_mask(labels, 0.5, False, rng),
                            semi_mask(labels, 0.5, False, rng))


def test_training_split_smaller_than_batch_is_an_error():
  sp = toy_split(5, np.random.default_rng(8))
  with pytest.raises(UserError, match="batch_size=8 is larger than the split"):
    make_dataset(sp, hps_for(["a"], batch_size=8), 20, training=True, seed=0)
  assert len(collect(make_dataset(sp, hps_for(["a"], batch_size=8), 20,
                                  training=False, seed=0))) == 1
