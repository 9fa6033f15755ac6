"""tree.jpg: the learned hierarchy of level-l units and level-k components.

Each live level-l unit is a node; its live level-k components hang from it on
branches labelled with q(k|l) (branch width grows with q); each component
box shows a few generated sketches carrying that level-k label.  Dead units
and components (weight below the live threshold, method.md §3) are omitted
and counted in the title.  Unit / component colours match level_l.jpg /
level_k.jpg; sketches are drawn in their category colour as in result.jpg.
"""
import numpy as np

from utils import drawing
from utils.metrics import live_mask

THUMB = 64            # px per member sketch
PAD = 8
HEADER = 28           # component box header strip
UNIT_W, UNIT_H = 300, 64
BRANCH = 140          # horizontal distance from the spine to a component box
SPINE = 28            # spine offset from the unit box's left edge
GAP, VGAP, HGAP = 26, 18, 60
MAX_COLUMNS = 4


def tree_structure(pi_l, pi_k, q_kl, edge_threshold=0.05):
  """Which units and components to draw.

  Returns (units, live_l, live_k): units is a list of (l, [(k, q_kl), ...])
  for the live units by decreasing pi_l, children by decreasing q.  A live
  component hangs from every live unit with q(k|l) >= edge_threshold and
  always from its main parent argmax_l q(k|l) pi_l, so none is lost.
  """
  pi_l, pi_k, q_kl = (np.asarray(a, np.float64) for a in (pi_l, pi_k, q_kl))
  live_l, live_k = live_mask(pi_l), live_mask(pi_k)
  share = np.where(live_l[None, :], q_kl * pi_l[None, :], -1.0)
  parent = np.argmax(share, axis=1)
  units = []
  for l in np.argsort(-pi_l, kind="stable"):
    if not live_l[l]:
      continue
    kids = [(int(k), float(q_kl[k, l])) for k in range(len(pi_k))
            if live_k[k] and (q_kl[k, l] >= edge_threshold or parent[k] == l)]
    kids.sort(key=lambda kq: -kq[1])
    units.append((int(l), kids))
  return units, live_l, live_k


def _light(rgb, amount=0.78):
  return tuple(int(round(c * (1 - amount) + 255 * amount)) for c in rgb)


def _child_size(per_component):
  width = max(per_component * (THUMB + 4) - 4 + 2 * PAD, 300)
  return width, HEADER + THUMB + 2 * PAD


def _panel_size(num_children, per_component):
  cw, ch = _child_size(per_component)
  height = UNIT_H + GAP + max(1, num_children) * (ch + VGAP)
  return max(UNIT_W, BRANCH + cw), height


def _members(label_k, k, count, rng):
  idx = np.flatnonzero(label_k == k)
  if len(idx) > count:
    idx = np.sort(rng.choice(idx, count, replace=False))
  return idx


def _draw_unit(draw, x, y, l, pi, count, colour):
  draw.rounded_rectangle([x, y, x + UNIT_W, y + UNIT_H], radius=10,
                         fill=_light(colour), outline=colour, width=3)
  draw.text((x + 14, y + 8), f"level-l unit #{l}", fill="black",
            font=drawing.font(20, bold=True))
  draw.text((x + 14, y + 36), f"\u03c0_l = {pi:.3f}   {count} sample(s)",
            fill="black", font=drawing.font(16))


def _draw_component(img, draw, x, y, k, pi, members, samples, colours, per):
  cw, ch = _child_size(per)
  colour = drawing.palette(len(samples["pi_k"]))[k]
  draw.rectangle([x, y, x + cw, y + ch], fill="white", outline=(70, 70, 70), width=2)
  draw.rectangle([x + 2, y + 2, x + cw - 2, y + HEADER], fill=(236, 236, 236))
  draw.rectangle([x + PAD, y + 7, x + PAD + 14, y + 21], fill=colour)
  total = int(np.sum(samples["label_k"] == k))
  draw.text((x + PAD + 20, y + HEADER // 2 + 1),
            f"level-k #{k}  \u03c0_k={pi:.3f}  n={total}",
            fill="black", font=drawing.font(15, bold=True), anchor="lm")
  if not len(members):
    draw.text((x + cw // 2, y + HEADER + PAD + THUMB // 2), "(no samples)",
              fill=(120, 120, 120), font=drawing.font(15), anchor="mm")
  for j, i in enumerate(members):
    thumb = drawing.thumbnail(samples["images"][i], THUMB, colours[i])
    img.paste(thumb, (x + PAD + j * (THUMB + 4), y + HEADER + PAD))


def _draw_panel(img, draw, x, y, l, kids, samples, colours, per, rng):
  unit_colour = drawing.palette(len(samples["pi_l"]))[l]
  _draw_unit(draw, x, y, l, samples["pi_l"][l],
             int(np.sum(samples["label_l"] == l)), unit_colour)
  cw, ch = _child_size(per)
  spine_x = x + SPINE
  top = y + UNIT_H + GAP
  mids = [top + i * (ch + VGAP) + ch // 2 for i in range(len(kids))]
  if mids:
    draw.line([spine_x, y + UNIT_H, spine_x, mids[-1]], fill=(60, 60, 60), width=3)
  label_font = drawing.font(15, bold=True)
  for (k, q), mid in zip(kids, mids):
    width = 1 + int(round(6 * q))
    draw.line([spine_x, mid, x + BRANCH, mid], fill=(60, 60, 60), width=width)
    draw.text(((spine_x + x + BRANCH) // 2, mid - width // 2 - 3), f"q={q:.2f}",
              fill="black", font=label_font, anchor="mb")
    members = _members(samples["label_k"], k, per, rng)
    _draw_component(img, draw, x + BRANCH, mid - ch // 2, k, samples["pi_k"][k],
                    members, samples, colours, per)


def _title_lines(units, live_l, live_k, edge_threshold):
  num_k, num_l = len(live_k), len(live_l)
  drawn = {k for _, kids in units for k, _ in kids}
  line1 = (f"Learned hierarchy: {num_k - len(drawn)} of {num_k} level-k "
           f"components pruned, {num_l - int(live_l.sum())} of {num_l} level-l "
           f"units pruned")
  line2 = (f"Shown: {int(live_l.sum())} live level-l units -> their {len(drawn)} "
           f"live level-k components; edge label q(k|l) (drawn when >= "
           f"{edge_threshold:g} or the main parent); sketches: samples with that "
           f"level-k label, coloured by category.")
  return line1, line2


def draw_tree(samples, colours, path, seed=0, edge_threshold=0.05,
              per_component=4):
  """Draws tree.jpg for ``samples`` (utils.samples_file.load_samples) -> path."""
  units, live_l, live_k = tree_structure(samples["pi_l"], samples["pi_k"],
                                         samples["q_kl"], edge_threshold)
  rng = np.random.default_rng(seed)
  sizes = [_panel_size(len(kids), per_component) for _, kids in units]
  columns = max(1, min(MAX_COLUMNS, len(units)))
  panel_w = max([w for w, _ in sizes], default=UNIT_W)
  rows = [sizes[i:i + columns] for i in range(0, len(sizes), columns)]
  row_h = [max(h for _, h in row) for row in rows]
  line1, line2 = _title_lines(units, live_l, live_k, edge_threshold)
  title_font, sub_font = drawing.font(26, bold=True), drawing.font(17)
  _, probe = drawing.new_canvas(1, 1)
  title_w = max(drawing.text_size(probe, line1, title_font)[0],
                drawing.text_size(probe, line2, sub_font)[0])
  width = max(2 * HGAP + columns * panel_w + (columns - 1) * HGAP, title_w + 2 * HGAP)
  cats = samples["categories"]
  used = sorted(set(samples["category"][samples["category"] >= 0].tolist()))
  pal = drawing.palette(max(len(cats), max(used, default=0) + 1))
  legend = [(cats[c] if c < len(cats) else f"category {c}", pal[c]) for c in used]
  legend_h = drawing.draw_legend_row(probe, legend, HGAP, 0, drawing.font(16),
                                     width - 2 * HGAP, "sketch colour:") if used else 0
  y = 104 + legend_h + (GAP if used else 0)
  height = y + sum(row_h) + max(0, len(rows) - 1) * HGAP + GAP
  img, draw = drawing.new_canvas(width, height)
  draw.text((HGAP, 24), line1, fill="black", font=title_font)
  draw.text((HGAP, 66), line2, fill=(40, 40, 40), font=sub_font)
  if used:
    drawing.draw_legend_row(draw, legend, HGAP, 100, drawing.font(16),
                            width - 2 * HGAP, "sketch colour:")
  for r, start in enumerate(range(0, len(units), columns)):
    for c, (l, kids) in enumerate(units[start:start + columns]):
      _draw_panel(img, draw, HGAP + c * (panel_w + HGAP), y, l, kids, samples,
                  colours, per_component, rng)
    y += row_h[r] + HGAP
  return drawing.save_jpeg(img, path)

