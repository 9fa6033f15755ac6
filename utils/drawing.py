"""Small drawing helpers for the figures: colours, fonts, tinted sketches."""
import functools

import numpy as np
from matplotlib import colormaps, font_manager
from PIL import Image, ImageDraw, ImageFont

from utils.io import atomic_path

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def palette(n):
  """n distinct RGB colours (0-255): tab20's strong shades first, then its light
  ones, so up to 10 labels get clearly different colours and up to 20 stay
  distinct; beyond 20 the colours repeat (callers vary the marker)."""
  tab20 = [tuple(int(round(255 * c)) for c in colormaps["tab20"](i)[:3])
           for i in range(20)]
  order = tab20[0::2] + tab20[1::2]
  return [order[i % 20] for i in range(n)]


def marker(i):
  """Marker shape for label i: a new shape every 20 labels."""
  return MARKERS[(i // 20) % len(MARKERS)]


@functools.lru_cache(maxsize=None)
def font(size, bold=False):
  """A scalable TrueType font (matplotlib's DejaVu Sans) at ``size`` px."""
  props = font_manager.FontProperties(family="DejaVu Sans",
                                      weight="bold" if bold else "normal")
  try:
    return ImageFont.truetype(font_manager.findfont(props), size)
  except OSError:
    return ImageFont.load_default(size)


def tint(gray, rgb):
  """uint8 (h, w) black-on-white sketch -> uint8 (h, w, 3) drawn in ``rgb``."""
  ink = 1.0 - np.asarray(gray, np.float32)[..., None] / 255.0
  colour = np.asarray(rgb, np.float32)[None, None, :]
  return np.round(255.0 * (1.0 - ink) + colour * ink).astype(np.uint8)


def thumbnail(gray, size, rgb=(0, 0, 0)):
  """A tinted sketch resized to ``size`` x ``size`` as an RGB PIL image."""
  img = Image.fromarray(tint(gray, rgb), "RGB")
  if img.size != (size, size):
    img = img.resize((size, size), Image.LANCZOS)
  return img


def paste_darker(canvas, img, x, y):
  """Pastes RGB uint8 ``img`` into ``canvas`` (H, W, 3) at (x, y), keeping the
  darker pixel so overlapping black-on-white sketches stay visible."""
  h, w = img.shape[:2]
  region = canvas[y:y + h, x:x + w]
  np.minimum(region, img[:region.shape[0], :region.shape[1]], out=region)


def text_size(draw, text, fnt):
  left, top, right, bottom = draw.textbbox((0, 0), text, font=fnt)
  return right - left, bottom - top


def draw_legend(draw, entries, x, y, fnt, swatch=None):
  """Colour swatches with names, top-left at (x, y), on a white box."""
  swatch = swatch or fnt.size
  gap = swatch // 2
  widths = [text_size(draw, name, fnt)[0] for name, _ in entries]
  box_w = swatch + gap * 3 + (max(widths) if widths else 0)
  box_h = gap + len(entries) * (swatch + gap)
  draw.rectangle([x, y, x + box_w, y + box_h], fill="white", outline=(90, 90, 90))
  for i, (name, rgb) in enumerate(entries):
    top = y + gap + i * (swatch + gap)
    draw.rectangle([x + gap, top, x + gap + swatch, top + swatch], fill=rgb)
    draw.text((x + 2 * gap + swatch, top + swatch // 2), name, fill="black",
              font=fnt, anchor="lm")
  return box_w, box_h


def draw_legend_row(draw, entries, x, y, fnt, max_width, title=""):
  """Swatches with names in a row starting at (x, y), wrapping at max_width;
  returns the height used."""
  swatch, gap = fnt.size, fnt.size // 2
  cx, cy = x, y
  if title:
    draw.text((cx, cy + swatch // 2), title, fill="black", font=fnt, anchor="lm")
    cx += text_size(draw, title, fnt)[0] + gap * 2
  for name, rgb in entries:
    w = swatch + gap + text_size(draw, name, fnt)[0] + gap * 3
    if cx + w > x + max_width and cx > x:
      cx, cy = x, cy + swatch + gap
    draw.rectangle([cx, cy, cx + swatch, cy + swatch], fill=rgb)
    draw.text((cx + swatch + gap, cy + swatch // 2), name, fill="black", font=fnt,
              anchor="lm")
    cx += w
  return cy + swatch - y


def new_canvas(width, height):
  img = Image.new("RGB", (int(width), int(height)), "white")
  return img, ImageDraw.Draw(img)


def save_jpeg(img, path, quality=92, role="visualization"):
  """Saves a PIL image as JPEG atomically."""
  with atomic_path(path, role) as tmp:
    img.save(tmp, "JPEG", quality=quality)
  return path


def save_figure(fig, path, dpi=150, quality=92, role="visualization"):
  """Saves a matplotlib figure as JPEG atomically (legend kept inside)."""
  with atomic_path(path, role) as tmp:
    fig.savefig(tmp, format="jpg", dpi=dpi, bbox_inches="tight",
                pil_kwargs={"quality": quality})
  return path
