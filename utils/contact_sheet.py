"""Contact sheets: sketches in labelled blocks on pages of bounded size.

A sheet is a list of blocks ``(label, items)``; an item is a tuple of tiles
drawn side by side (a reference beside its synthesis, or one sketch), a tile
is ``(gray uint8 (w, w), rgb)``: a black-on-white sketch drawn in ``rgb``.
Every block starts on a new line under its label and its items flow in lines
of equal length; pages are at most ``max_side`` px on either side, and a block
that does not fit continues on the next page under a "(cont.)" label.  Each
page starts with a legend: a title line (with "page i/n") and colour swatches.

:func:`layout` only computes positions (tested for bounds and completeness);
:func:`render_pages` draws them.  Used by sample.py's grid.png and by the
TensorBoard images of model/training/summaries.py.
"""
import math

from utils import drawing

CELL = 64        # tile size (px)
TILE_GAP = 1     # between the tiles of one item
GAP = 6          # between items
MARGIN = 10
HEADER = 22      # height of a block's label line
MAX_SIDE = 2000  # longest side of a page (px)
ASPECT = 0.75    # a one-page sheet is made about this high per unit width
FONT_SIZE = 14


def page_name(base, index):
  """``grid.png``, ``grid-2.png``, ``grid-3.png``, ... for page 0, 1, 2, ..."""
  if index == 0:
    return base
  stem, dot, ext = base.rpartition(".")
  return f"{stem}-{index + 1}{dot}{ext}" if dot else f"{base}-{index + 1}"


def _item_width(tiles, cell):
  return tiles * cell + (tiles - 1) * TILE_GAP


def _sheet_height(counts, per_line, cell, top):
  lines = sum(max(1, math.ceil(n / per_line)) for n in counts)
  return top + len(counts) * HEADER + lines * (cell + GAP) + MARGIN


def choose_width(counts, tiles, cell=CELL, max_side=MAX_SIDE, top=0,
                 min_width=0, aspect=ASPECT):
  """(items per line, page width): the fewest items per line that keep a
  one-page sheet at most ``aspect`` times as high as its lines are wide (the
  most that fit ``max_side`` when even that is too high), then evened out so
  that a block's lines are about equally long; the page is at least
  ``min_width`` wide (its title)."""
  step = _item_width(tiles, cell) + GAP
  max_fit = max(1, (max_side - 2 * MARGIN + GAP) // step)
  width = lambda p: 2 * MARGIN + p * step - GAP
  hi = min(max_fit, max([1] + list(counts)))   # no wider than the longest block
  chosen = hi
  for p in range(1, hi + 1):
    if _sheet_height(counts, p, cell, top) <= aspect * width(p):
      chosen = p
      break
  chosen = max([math.ceil(n / math.ceil(n / chosen)) for n in counts if n]
               or [chosen])
  return chosen, max(width(chosen), min(int(min_width), max_side))


def layout(counts, tiles, per_line, cell=CELL, max_side=MAX_SIDE, top=0):
  """Positions of every block label and item on pages.

  counts: items per block; tiles: tiles per item; ``top``: px of legend at
  the top of every page.  Returns a list of pages, each a dict with
  ``height``, ``labels`` [(block, continued, x, y)] and ``items``
  [(block, item, x, y)] (top-left corners)."""
  step_x, step_y = _item_width(tiles, cell) + GAP, cell + GAP
  bottom = max_side - MARGIN
  if top + HEADER + cell > bottom:
    raise ValueError(f"a page of {max_side} px cannot hold one line of "
                     f"{cell} px tiles under a {top} px legend")
  pages = []

  def new_page():
    pages.append(dict(height=0, labels=[], items=[]))
    return top

  y = new_page()
  for b, n in enumerate(counts):
    lines = [range(i, min(i + per_line, n)) for i in range(0, max(n, 1), per_line)]
    for li, line in enumerate(lines):
      labels = pages[-1]["labels"]
      labelled = bool(labels) and labels[-1][0] == b
      if y + cell + (0 if labelled else HEADER) > bottom and labels:
        y, labelled = new_page(), False
      if not labelled:
        pages[-1]["labels"].append((b, li > 0, MARGIN, y))
        y += HEADER
      for j, i in enumerate(line):
        pages[-1]["items"].append((b, i, MARGIN + j * step_x, y))
      y += step_y
      pages[-1]["height"] = y - GAP + MARGIN
  return pages


def _legend_height(draw, width, entries, fnt, legend_title, title):
  if not entries:
    return MARGIN + (FONT_SIZE + 10 if title else 0)
  return (MARGIN + FONT_SIZE + 8 + drawing.draw_legend_row(
      draw, entries, MARGIN, MARGIN, fnt, width - 2 * MARGIN, legend_title)
      + 12)


def render_pages(blocks, title="", legend=(), legend_title="", cell=CELL,
                 max_side=MAX_SIDE, aspect=ASPECT):
  """blocks: [(label, [item, ...])] -> list of RGB PIL pages (see module doc).

  legend: [(name, rgb)] colour swatches shown under the title on every page;
  aspect: the height / width a one-page sheet aims at."""
  tiles = max([len(item) for _, items in blocks for item in items] + [1])
  counts = [len(items) for _, items in blocks]
  fnt, bold = drawing.font(FONT_SIZE), drawing.font(FONT_SIZE, bold=True)
  _, probe = drawing.new_canvas(1, 1)
  title_w = drawing.text_size(probe, title, bold)[0]
  entries = list(legend)
  label_w = max([drawing.text_size(probe, label + " (cont.)", bold)[0]
                 for label, _ in blocks] + [0])
  min_width = max(title_w, label_w) + 2 * MARGIN
  if legend_title:
    entries_w = sum(drawing.text_size(probe, n, fnt)[0] + 3 * FONT_SIZE
                    for n, _ in entries)
    min_width = max(min_width, min(entries_w, max_side // 2))
  # The legend height depends on the width (the swatches wrap) and the width
  # on the height: two rounds settle it.
  top = _legend_height(probe, max_side, entries, fnt, legend_title,
                       title)
  for _ in range(2):
    per_line, width = choose_width(counts, tiles, cell, max_side, top,
                                   min_width, aspect)
    top = _legend_height(probe, width, entries, fnt, legend_title, title)
  pages = layout(counts, tiles, per_line, cell, max_side, top)
  out = []
  for p, page in enumerate(pages):
    img, draw = drawing.new_canvas(width, page["height"])
    head = title + (f" (page {p + 1}/{len(pages)})" if len(pages) > 1 else "")
    if head:
      draw.text((MARGIN, MARGIN), head, fill="black", font=bold)
    if entries:
      drawing.draw_legend_row(draw, entries, MARGIN, MARGIN + FONT_SIZE + 8,
                              fnt, width - 2 * MARGIN, legend_title)
    for b, continued, x, y in page["labels"]:
      label = blocks[b][0] + (" (cont.)" if continued else "")
      draw.text((x, y + HEADER // 2), label, fill="black", font=bold,
                anchor="lm")
    for b, i, x, y in page["items"]:
      item = blocks[b][1][i]
      for t, (gray, rgb) in enumerate(item):
        img.paste(drawing.thumbnail(gray, cell, rgb),
                  (x + t * (cell + TILE_GAP), y))
      right = x + _item_width(len(item), cell)
      draw.rectangle([x - 1, y - 1, right, y + cell], outline=(190, 190, 190))
    out.append(img)
  return out
