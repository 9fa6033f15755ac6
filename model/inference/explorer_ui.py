"""The explorer's web page: Gradio Blocks over model/inference/explorer.py.

Gradio is the library ML demos are made with: it gives the page, the
widgets, the server and the HTTP API that ``gradio_client`` drives (the
end-to-end test).  The only hand-written piece is the drawing canvas
(canvas.js, in a ``gr.HTML`` component): Gradio's own Sketchpad gives
pixels, while the model's input must be rendered from the strokes exactly as
the training images were, so the canvas hands over its strokes as JSON.

Every handler returns its outputs and a status line: a UserError of the
explorer (an empty canvas, a pruned unit, an absurd number) becomes that
line in the page and empties the handler's outputs; the app goes on.
The page takes no file from the browser (no upload component, no paths).
"""
import functools
import logging
import os
import time

import gradio as gr
import numpy as np

from model.inference.explorer import MAX_SKETCHES, MAX_STEPS, gray_thumbnails
from utils.errors import UserError

_HERE = os.path.dirname(os.path.abspath(__file__))
CANVAS_SIZE = 384
# Result galleries: a fixed grid of small sketches, no "share" (to a hub).
GALLERY = dict(columns=8, fit_columns=False, height=270,
               buttons=["download", "fullscreen"])
LEVELS = {"level-l unit": "l", "level-k component": "k"}
CANVAS_HTML = (f'<div class="sketch"><canvas width="{CANVAS_SIZE}" '
               f'height="{CANVAS_SIZE}"></canvas><div class="tools">'
               '<button class="undo">Undo</button> '
               '<button class="clear">Clear</button></div></div>')
CANVAS_CSS = ("canvas { border: 1px solid #888; touch-action: none; "
              "cursor: crosshair; background: white; width: 100%; "
              f"max-width: {CANVAS_SIZE}px; }}")


def _canvas_js():
  with open(os.path.join(_HERE, "canvas.js")) as f:
    return f.read()


def _status(text, started):
  return f"{text} ({1000 * (time.perf_counter() - started):.0f} ms)"


def guarded(outputs):
  """Wraps a handler returning ``outputs - 1`` values; appends the status
  line, or on a UserError empties the outputs and shows the message."""
  def wrap(fn):
    @functools.wraps(fn)
    def run(*args):
      started = time.perf_counter()
      try:
        *values, text = fn(*args)
      except UserError as e:
        return [None] * (outputs - 1) + [f"**Cannot do that:** {e}"]
      return list(values) + [_status(text, started)]
    return run
  return wrap


def _pairs(images, captions):
  return list(zip(images, captions))


def _tree_markdown(ex):
  units = ", ".join(f"l{l}" for l in ex.live_l) or "none"
  comps = ", ".join(f"k{k}" for k in ex.live_k) or "none"
  return (f"Live level-l units: **{units}** ({len(ex.live_l)} of "
          f"{len(ex.h.pi_l)}); live level-k components: **{comps}** "
          f"({len(ex.live_k)} of {len(ex.h.q_kl)}).")


def _decoding_fields(count, what):
  """The how-many, temperature and seed fields of a decoding action."""
  return (gr.Number(count, label=f"{what} (1-{MAX_SKETCHES})"),
          gr.Number(0.24, label="temperature"), gr.Number(0, label="seed"))


def _hierarchy_tab(ex, tree):
  gr.Markdown("The learned tree, with 3 fresh sketches from each live "
              "component (visualization.py's tree.jpg):")
  gr.Image(tree, show_label=False, interactive=False, buttons=["fullscreen"])
  with gr.Row():
    with gr.Column():
      gr.Dataframe(ex.tree_rows(), headers=["unit l", "pi_l", "component k",
                                            "pi_k", "q(k|l)"],
                   interactive=False, label="live units and their components")
      gr.Markdown(_tree_markdown(ex))
    with gr.Column():
      level = gr.Radio(list(LEVELS), value="level-l unit", label="draw from a")
      index = gr.Number(ex.live_l[0] if ex.live_l else 0, label="index")
      with gr.Row():
        n, temperature, seed = _decoding_fields(8, "how many")
      go = gr.Button("Draw sketches", variant="primary")
  status = gr.Markdown()
  gallery = gr.Gallery(label="fresh sketches (caption: the unit and component "
                       "drawn from \u2192 the code's level-l label)", **GALLERY)

  @guarded(2)
  def sample_node(level, index, n, temperature, seed):
    out = ex.sample_node(LEVELS.get(level, level), index, n, temperature, seed)
    return (_pairs(out.thumbnails(len(ex.h.pi_l)), out.captions),
            f"{len(out.captions)} sketches from {level} #{int(index)}")

  go.click(sample_node, [level, index, n, temperature, seed], [gallery, status],
           api_name="sample_node")


def _draw_tab(ex):
  with gr.Row():
    with gr.Column(scale=2):
      canvas = gr.HTML("[]", html_template=CANVAS_HTML, css_template=CANVAS_CSS,
                       js_on_load=_canvas_js(), label="canvas")
      with gr.Row():
        test_index = gr.Number(0, label="test sketch #")
        put = gr.Button("Put it on the canvas")
    with gr.Column(scale=3):
      with gr.Row():
        n, temperature, seed = _decoding_fields(4, "reconstructions")
      go = gr.Button("Encode the drawing", variant="primary")
      status = gr.Markdown()
      with gr.Row():
        model_input = gr.Image(label=f"what the model sees "
                               f"({ex.hps.png_width}x{ex.hps.png_width})",
                               interactive=False, buttons=[], height=200)
        p_l = gr.Label(label="p(l|y), live units", num_top_classes=8)
        p_k = gr.Label(label="top p(k|y)", num_top_classes=5)
  recon = gr.Gallery(label="reconstructions", **GALLERY)
  nearest = gr.Gallery(label="nearest test sketches by code", **GALLERY)

  @guarded(6)
  def encode_drawing(text, n, temperature, seed):
    out = ex.encode_drawing(text, n, temperature, seed)
    ids = [i for i, _ in out["nearest"]]
    near_items = _pairs(gray_thumbnails(ex.test.images[ids]) if ids else [],
                        [f"{ex.test_caption(i)} d={d:.2f}"
                         for i, d in out["nearest"]])
    sk = out["reconstructions"]
    return (out["zoomed"], out["p_l"], out["p_k"],
            _pairs(sk.thumbnails(len(ex.h.pi_l)), sk.captions), near_items,
            f"encoded: unit l{out['label_l']}, component k{out['label_k']}")

  @guarded(2)
  def canvas_from_test(index):
    i = ex.test_index(index, "test sketch")
    return ex.canvas_strokes(i, CANVAS_SIZE), f"test sketch {ex.test_caption(i)}"

  outputs = [model_input, p_l, p_k, recon, nearest, status]
  inputs = [canvas, n, temperature, seed]
  go.click(encode_drawing, inputs, outputs, api_name="encode_drawing")
  canvas.change(encode_drawing, inputs, outputs, api_name=False)
  put.click(canvas_from_test, [test_index], [canvas, status],
            api_name="canvas_from_test")
  return canvas


def _analogy_tab(ex, canvas):
  with gr.Row():
    category = gr.Dropdown(["all"] + ex.categories, value="all",
                           label="test sketches of")
    page = gr.Number(1, label="page")
    pages = gr.Markdown()
  shown = gr.State([])
  browse = gr.Gallery(label="the test split (click a sketch to choose it)",
                      columns=10, height=300, allow_preview=False, buttons=[])
  with gr.Row():
    slot = gr.Radio(["A", "B", "C"], value="A", label="a click sets")
    a, b, c = (gr.Number(i, label=name) for i, name in
               zip((0, 1, 2), ("A (test #)", "B (test #)", "C (test #)")))
    use_drawing = gr.Checkbox(False, label="C = the Draw tab's drawing")
  with gr.Row():
    n, temperature, seed = _decoding_fields(6, "analogies")
    steps = gr.Number(8, label=f"interpolation steps (2-{MAX_STEPS})")
  with gr.Row():
    go_analogy = gr.Button("Analogy: C + (B - A)", variant="primary")
    go_strip = gr.Button("Interpolate A -> B", variant="primary")
  status = gr.Markdown()
  chosen = gr.Gallery(label="A, B, C", columns=8, fit_columns=False,
                      height=150, allow_preview=False, buttons=[])
  result = gr.Gallery(label="C + (B - A), decoded", **GALLERY)
  strip = gr.Gallery(label="interpolation from A to B, decoded", **GALLERY)

  @guarded(4)
  def gallery_page(category, page):
    ids, images, captions, count = ex.gallery_page(category, page)
    return (_pairs(gray_thumbnails(images), captions), ids,
            f"page {int(page)} of {count}", f"{len(ids)} test sketches")

  def pick(slot, ids, a, b, c, evt: gr.SelectData):
    values = {"A": a, "B": b, "C": c}
    if ids and 0 <= evt.index < len(ids):
      values[slot] = ids[evt.index]
    following = {"A": "B", "B": "C", "C": "A"}[slot]
    return values["A"], values["B"], values["C"], following

  @guarded(3)
  def analogy(a, b, c, n, temperature, seed, use_drawing, drawing):
    sk, refs = ex.analogy(a, b, c, n, temperature, seed,
                          drawing if use_drawing else None)
    return (_pairs(gray_thumbnails(np.stack(refs)), ["A", "B", "C"]),
            _pairs(sk.thumbnails(len(ex.h.pi_l)), sk.captions),
            f"{len(sk.captions)} sketches of C + (B - A)")

  @guarded(3)
  def interpolate(a, b, steps, temperature, seed):
    sk, refs = ex.interpolate(a, b, steps, temperature, seed)
    return (_pairs(gray_thumbnails(np.stack(refs)), ["A", "B"]),
            _pairs(sk.thumbnails(len(ex.h.pi_l)), sk.captions),
            f"{len(sk.captions)} codes from A to B")

  page_io = ([category, page], [browse, shown, pages, status])
  for trigger in (category.change, page.submit):
    trigger(gallery_page, *page_io, api_name=False)
  browse.select(pick, [slot, shown, a, b, c], [a, b, c, slot], api_name=False)
  go_analogy.click(analogy, [a, b, c, n, temperature, seed, use_drawing, canvas],
                   [chosen, result, status], api_name="analogy")
  go_strip.click(interpolate, [a, b, steps, temperature, seed],
                 [chosen, strip, status], api_name="interpolate")
  return gallery_page, page_io


def build_app(ex, title="RPCL-pix2seqH explorer"):
  """The gr.Blocks page of the Explorer ``ex`` (not launched)."""
  tree = ex.tree_image()
  backend = ex.backend
  with gr.Blocks(title=title, analytics_enabled=False) as app:
    gr.Markdown(
        f"## {title}\n{backend.kind} `{backend.path}`: categories "
        f"{', '.join(ex.categories)}; {len(ex.h.pi_l)} level-l units, "
        f"{len(ex.h.q_kl)} level-k components, codes of size "
        f"{ex.hps.z_size}; test split: "
        + (f"{len(ex.test)} sketches of `{ex.data_dir}`" if ex.test is not None
           else "none (no data folder)"))
    with gr.Tab("Hierarchy"):
      _hierarchy_tab(ex, tree)
    with gr.Tab("Draw"):
      canvas = _draw_tab(ex)
    with gr.Tab("Analogy and interpolation"):
      gallery_page, page_io = _analogy_tab(ex, canvas)
    app.load(gallery_page, *page_io, api_name="gallery_page")
  return app


def launch(app, host="127.0.0.1", port=7860, block=True):
  """Serves ``app`` on host:port, never through a public share link, with
  Gradio's usage statistics off and the system's fonts (the default theme
  fetches web fonts): the page makes no request beyond host:port."""
  os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
  logging.getLogger("httpx").setLevel(logging.WARNING)  # no line per request
  theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                            font_mono=["ui-monospace", "monospace"])
  return app.launch(server_name=host, server_port=port, share=False,
                    quiet=True, show_error=True, inbrowser=False,
                    prevent_thread_lock=not block, ssr_mode=False,
                    mcp_server=False, pwa=False, theme=theme)
