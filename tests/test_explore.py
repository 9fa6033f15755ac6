"""explore.py: the functions behind every tab (model/inference/explorer.py)
called directly, then the page itself started on a free port of 127.0.0.1 and
driven through gradio_client (model/inference/explorer_ui.py).

One Explorer over the session's tiny model (tests/conftest.py: tiny_model)
serves every test of the module; a stub backend with a pruned unit checks
the refusals that need no model.
"""
import contextlib
import json
import socket

import numpy as np
import pytest
from gradio_client import Client

from data.raster import render
from data.simplify import drawing_to_stroke3
from model.inference import explorer_ui
from model.inference.backends import HierarchyParams, ModelFolder, open_model
from model.inference.explorer import (MAX_POINTS, PER_PAGE, Explorer,
                                      read_drawing)
from utils.errors import UserError

HOUSE = [[[10, 90], [10, 40], [90, 40], [90, 90], [10, 90]],
         [[5, 42], [50, 5], [95, 42]]]


@pytest.fixture(scope="module")
def ex(tiny_model):
  data_dir, model_dir, _ = tiny_model
  return Explorer(ModelFolder(model_dir), data_dir)


# --- Hierarchy ----------------------------------------------------------------

def test_tree_rows_and_figure(ex):
  rows = ex.tree_rows()
  assert rows and {r[0] for r in rows} == set(ex.live_l)
  assert {r[2] for r in rows} == set(ex.live_k)
  image = ex.tree_image(per_component=2)
  assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8


def test_sketches_from_a_unit_carry_that_unit(ex):
  unit = ex.live_l[-1]
  out = ex.sample_node("l", unit, 5, 0.3, 7)
  w = ex.hps.png_width
  assert out.images.shape == (5, w, w) and len(out.strokes) == 5
  assert list(out.units) == [unit] * 5
  assert all(c.startswith(f"l{unit} k") for c in out.captions)
  support = set(np.flatnonzero(ex.h.q_kl[:, unit] > 0).tolist())
  drawn = {int(c.split()[1][1:]) for c in out.captions}
  assert drawn <= support
  again = ex.sample_node("l", unit, 5, 0.3, 7)
  assert all(np.array_equal(a, b) for a, b in zip(out.strokes, again.strokes))
  comp = ex.sample_node("k", ex.live_k[0], 3, 0.3, 0)
  assert all(c.startswith(f"k{ex.live_k[0]} ") for c in comp.captions)


@pytest.mark.parametrize("args, match", [
    (("l", 99, 4, 0.3, 0), "level-l unit must be a whole number from 0"),
    (("l", 0.5, 4, 0.3, 0), "level-l unit must be a whole number"),
    (("l", None, 4, 0.3, 0), "got None"),
    (("l", 0, 10 ** 9, 0.3, 0), "how many must be a whole number from 1 to 32"),
    (("l", 0, 4, float("nan"), 0), "temperature must be a number > 0"),
    (("l", 0, 4, -1, 0), "temperature"),
    (("l", 0, 4, 0.3, -5), "seed must be a whole number"),
    (("x", 0, 4, 0.3, 0), "level must be 'l'"),
])
def test_sample_node_refuses_absurd_values(ex, args, match):
  with pytest.raises(UserError, match=match):
    ex.sample_node(*args)


class PrunedBackend:
  """A backend whose unit 1 and component 2 are pruned (nothing decoded)."""
  kind, path, data_dir, max_len = "stub", "stub", None, 10

  def __init__(self, hps):
    self.hps = hps
    q = np.full((4, 2), 0.25)
    q[2] = 1e-10
    self.hierarchy = HierarchyParams(np.zeros((4, 8)), np.ones((4, 8)),
                                     np.array([1.0, 1e-10]), q / q.sum(0))


def test_a_pruned_unit_or_component_is_refused_with_the_live_ones(ex):
  stub = Explorer(PrunedBackend(ex.hps))
  assert stub.live_l == [0] and stub.live_k == [0, 1, 3]
  with pytest.raises(UserError, match=r"unit #1 is pruned.*live one: 0$"):
    stub.sample_node("l", 1, 4, 0.3, 0)
  with pytest.raises(UserError, match=r"component #2 is pruned.*0, 1, 3$"):
    stub.sample_node("k", 2, 4, 0.3, 0)
  with pytest.raises(UserError, match="no test split.*--data_dir"):
    stub.gallery_page("all", 1)


# --- Draw ---------------------------------------------------------------------

@pytest.mark.parametrize("text, match", [
    ("", "canvas is empty"), ("[]", "canvas is empty"), ("[[]]", "canvas is empty"),
    ("[[[3, 4]]]", "single dot"), ("[[[3, 4], [3, 4]], [[3, 4]]]", "single dot"),
    ("not json", "not a list of strokes"), ('[[["a", 1]]]', "not a list"),
    ("[[[1, 2, 3]]]", "not a list"), ("[[[1e999, 0], [1, 1]]]", "not finite"),
    (json.dumps([[[i, i] for i in range(MAX_POINTS + 1)]]), "at most"),
])
def test_bad_drawings_get_one_line(text, match):
  with pytest.raises(UserError, match=match):
    read_drawing(text)


def test_the_drawing_becomes_the_input_as_training_images_are_made(ex):
  stroke3, image = ex.drawing_input(json.dumps(HOUSE))
  expected = drawing_to_stroke3([np.array(s, float) for s in HOUSE], raw=True)
  assert np.array_equal(stroke3, expected)
  assert np.array_equal(image, render(expected, ex.hps.png_width))
  # A test sketch put on the canvas comes back as (nearly) its stored image.
  for i in (0, len(ex.test) - 1):
    _, back = ex.drawing_input(ex.canvas_strokes(i, 384))
    assert np.abs(back.astype(int) - ex.test.images[i]).mean() < 6


def test_encode_drawing(ex):
  out = ex.encode_drawing(json.dumps(HOUSE), 3, 0.3, 1)
  w = ex.hps.png_width
  assert out["image"].shape == (w, w) and out["zoomed"].shape == (4 * w, 4 * w)
  assert set(out["p_l"]) == {f"unit l{l}" for l in ex.live_l}
  assert len(out["p_k"]) == min(5, len(ex.h.q_kl))
  assert sum(out["p_l"].values()) <= 1 + 1e-5
  assert out["label_l"] in range(len(ex.h.pi_l))
  assert len(out["reconstructions"].strokes) == 3
  near = out["nearest"]
  assert len(near) == 8 and [d for _, d in near] == sorted(d for _, d in near)
  with pytest.raises(UserError, match="reconstructions must be"):
    ex.encode_drawing(json.dumps(HOUSE), 0, 0.3, 1)


# --- Analogy and interpolation ----------------------------------------------------

def test_gallery_pages(ex):
  ids, images, captions, pages = ex.gallery_page("all", 1)
  assert ids == list(range(min(PER_PAGE, len(ex.test))))
  assert images.shape[0] == len(captions) == len(ids)
  fish = ex.gallery_page("fish", 1)[0]
  assert all(ex.test.labels[i] == ex.categories.index("fish") for i in fish)
  with pytest.raises(UserError, match="page must be a whole number from 1 to"):
    ex.gallery_page("all", pages + 1)
  with pytest.raises(UserError, match="unknown category 'cow'"):
    ex.gallery_page("cow", 1)


def test_analogy_and_interpolation(ex):
  sketches, refs = ex.analogy(0, 1, 2, 4, 0.3, 0)
  assert len(sketches.strokes) == 4 and len(refs) == 3
  assert np.array_equal(refs[2], ex.test.images[2])
  drawn, refs = ex.analogy(0, 1, 2, 2, 0.3, 0, drawing=json.dumps(HOUSE))
  assert not np.array_equal(refs[2], ex.test.images[2])
  strip, refs = ex.interpolate(0, 3, 5, 0.3, 0)
  assert strip.captions == ["t=0.00", "t=0.25", "t=0.50", "t=0.75", "t=1.00"]
  with pytest.raises(UserError, match=r"A \(a test index\) must be"):
    ex.analogy(10 ** 6, 1, 2, 4, 0.3, 0)
  with pytest.raises(UserError, match="steps must be a whole number from 2"):
    ex.interpolate(0, 1, 1, 0.3, 0)


# --- the programs ---------------------------------------------------------------

def test_a_stray_saved_model_is_refused(tmp_path):
  """(The programs' bad flags are cases of tests/test_bad_inputs.py.)"""
  (tmp_path / "saved_model.pb").write_bytes(b"")
  with pytest.raises(UserError, match="not one written by export.py"):
    open_model(str(tmp_path))


# --- the page, end to end ---------------------------------------------------------

def free_port():
  with contextlib.closing(socket.socket()) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def client(ex):
  """The app on a free port of 127.0.0.1 and a gradio_client on it; the
  server is closed when the module's tests are done."""
  app = explorer_ui.build_app(ex)
  port = free_port()
  explorer_ui.launch(app, "127.0.0.1", port, block=False)
  try:
    yield Client(f"http://127.0.0.1:{port}/", verbose=False,
                 download_files=False, httpx_kwargs={"timeout": 60})
  finally:
    app.close()


def test_every_tab_through_the_page(ex, client):
  unit = ex.live_l[0]
  items, status = client.predict("level-l unit", unit, 6, 0.3, 2,
                                 api_name="/sample_node")
  assert len(items) == 6 and "6 sketches" in status
  assert all(it["caption"].startswith(f"l{unit} k") for it in items)
  items, status = client.predict("level-l unit", 99, 6, 0.3, 2,
                                 api_name="/sample_node")
  assert not items and status.startswith("**Cannot do that:** level-l unit")

  drawing, _ = client.predict(1, api_name="/canvas_from_test")
  assert len(json.loads(drawing)) >= 1
  image, p_l, p_k, recon, near, status = client.predict(
      drawing, 2, 0.3, 0, api_name="/encode_drawing")
  assert image["url"] and len(recon) == 2 and len(near) == 8
  assert {c["label"] for c in p_l["confidences"]} == {
      f"unit l{l}" for l in ex.live_l}
  assert len(p_k["confidences"]) == min(5, len(ex.h.q_kl))
  assert near[0]["caption"].startswith("#")
  *_, status = client.predict("[]", 2, 0.3, 0, api_name="/encode_drawing")
  assert "the canvas is empty" in status

  thumbs, pages, status = client.predict("house", 1, api_name="/gallery_page")
  assert thumbs and all("house" in t["caption"] for t in thumbs)
  chosen, decoded, status = client.predict(0, 1, 2, 3, 0.3, 0, True, drawing,
                                           api_name="/analogy")
  assert len(chosen) == 3 and len(decoded) == 3
  chosen, strip, status = client.predict(0, 1, 4, 0.3, 0, api_name="/interpolate")
  assert [s["caption"] for s in strip] == ["t=0.00", "t=0.33", "t=0.67", "t=1.00"]
