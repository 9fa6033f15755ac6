"""Downloads QuickDraw sketch-rnn files and renders their images.

  python -m data.quickdraw --categories bee,bus --out_dir DIR
      [--base_url URL] [--png_width 48] [--workers 2]

For each category ``<base_url>/<category>.npz`` (the name URL-quoted, e.g.
``The%20Eiffel%20Tower.npz``) is saved as ``<out_dir>/<category>.npz``: the
bytes go to ``<category>.npz.part`` first, an interrupted download resumes
from there with an HTTP Range request, and the file is renamed into place
only when complete and loadable (keys train/valid/test, see
data.strokes.load_strokes_npz).  Then data.seq2png writes
``<category>_png.npz``.  Every category is checked (HTTP HEAD) before any
download starts, so an unknown name writes nothing.  urllib only.
"""
import http.client
import os
import re
import urllib.error
import urllib.parse
import urllib.request

from utils import quiet  # noqa: F401  (first: quiets TensorFlow's start-up)
from absl import app
from absl import flags

from data import seq2png
from data.strokes import load_strokes_npz
from utils.errors import (UserError, check_argv, cli_main, parse_flags,
                          require_flags, require_min)
from utils import ownership
from utils.io import ensure_dir
from utils.progress import Progress

DEFAULT_BASE_URL = "https://storage.googleapis.com/quickdraw_data/sketchrnn/"
CHUNK = 1 << 16
TIMEOUT = 30.0

FLAGS = flags.FLAGS
if __name__ == "__main__":
  flags.DEFINE_list("categories", None, "comma-separated QuickDraw category names")
  flags.DEFINE_string("out_dir", None, "folder for <category>.npz and _png.npz")
  flags.DEFINE_string("base_url", DEFAULT_BASE_URL, "where <category>.npz files live")
  flags.DEFINE_integer("png_width", 48, "image side in pixels")
  flags.DEFINE_integer("workers", 2, "processes used for rendering")


def category_url(base_url, category):
  """``<base_url>/<category>.npz`` with the name URL-quoted."""
  return base_url.rstrip("/") + "/" + urllib.parse.quote(category) + ".npz"


def _open(url, category, method="GET", start=0, timeout=TIMEOUT):
  """urlopen with one-line UserErrors for 404, other HTTP errors, no network."""
  headers = {"Range": f"bytes={start}-"} if start else {}
  req = urllib.request.Request(url, headers=headers, method=method)
  try:
    return urllib.request.urlopen(req, timeout=timeout)
  except urllib.error.HTTPError as e:
    if e.code == 404:
      raise UserError(f"unknown category {category!r}: {url} does not exist "
                      f"(HTTP 404); check the spelling against the QuickDraw "
                      f"category list") from None
    if e.code == 416 and start:
      return None  # the partial file already holds every byte
    raise UserError(f"download of {url} failed: HTTP {e.code} {e.reason}") from None
  except urllib.error.URLError as e:
    raise UserError(f"cannot reach {url}: {e.reason} (no network connection? "
                    f"a mirror can be given with --base_url)") from None
  except OSError as e:  # timeouts, resets before the response
    raise UserError(f"cannot reach {url}: {e} (no network connection?)") from None


def remote_size(url, category):
  """Size in bytes from a HEAD request (None if the server does not say)."""
  with _open(url, category, method="HEAD") as resp:
    size = resp.headers.get("Content-Length")
  return int(size) if size and size.isdigit() else None


def _total_from(resp, start):
  """Full file size from a 206 Content-Range or a 200 Content-Length."""
  m = re.match(r"bytes \d+-\d+/(\d+)", resp.headers.get("Content-Range") or "")
  if resp.status == 206 and m:
    return int(m.group(1))
  size = resp.headers.get("Content-Length")
  if size and size.isdigit():
    return int(size) + (start if resp.status == 206 else 0)
  return None


def download(url, dest, category, size=None, progress=True):
  """Downloads ``url`` to ``dest`` through ``dest + '.part'``, resuming it."""
  part = dest + ".part"
  have = os.path.getsize(part) if os.path.isfile(part) else 0
  if size is not None and have > size:  # stale partial file of another version
    os.remove(part)
    have = 0
  resp = None if size is not None and have == size else _open(url, category, start=have)
  if resp is not None:
    with resp:
      if resp.status != 206:  # the server ignored Range: start again
        have = 0
      total = _total_from(resp, have) or size
      mode = "ab" if have else "wb"
      with open(part, mode) as f, Progress(total, os.path.basename(dest), unit="B",
                                           enabled=progress) as bar:
        bar.update(have)
        try:
          while True:
            chunk = resp.read(CHUNK)
            if not chunk:
              break
            f.write(chunk)
            bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as e:
          raise UserError(f"download of {url} interrupted after {bar.count} bytes "
                          f"({e}); run the same command again to resume") from None
    got = os.path.getsize(part)
    if total is not None and got != total:
      raise UserError(f"download of {url} stopped at {got} of {total} bytes; run "
                      f"the same command again to resume")
  ownership.check_replaceable(dest, "data", "--out_dir")
  os.replace(part, dest)
  ownership.record(os.path.dirname(os.path.abspath(dest)),
                   [os.path.basename(dest)], "data")
  return dest


def verify(path, url):
  """Loads the file; a broken one is deleted when this program downloaded it
  (so a rerun fetches it again), else left alone and reported."""
  try:
    return load_strokes_npz(path)
  except UserError as e:
    if ownership.owned(path, "data"):
      ownership.remove_owned(path, "data")
      raise UserError(f"downloaded {url} is not a usable sketch-rnn file ({e}); "
                      f"deleted it, run again to re-download") from None
    raise UserError(f"{path!r} is not a usable sketch-rnn file ({e}) and was not "
                    f"downloaded by this program: move it away to download "
                    f"{url}") from None


def fetch_categories(categories, out_dir, base_url=DEFAULT_BASE_URL, png_width=48,
                     workers=2, progress=True):
  """Downloads, verifies and renders every category; returns the stroke paths."""
  if not categories:
    raise UserError("--categories is required, e.g. --categories bee,bus")
  seq2png.check_width(png_width)
  out_dir = ensure_dir(out_dir)
  todo = []
  for cat in categories:  # check every name before writing anything
    dest = os.path.join(out_dir, f"{cat}.npz")
    url = category_url(base_url, cat)
    size = None if os.path.isfile(dest) else remote_size(url, cat)
    todo.append((cat, url, dest, size))
  for cat, url, dest, size in todo:
    if not os.path.isfile(dest):
      download(url, dest, cat, size, progress)
    verify(dest, url)
    png = seq2png.png_path(out_dir, cat)
    if not (os.path.isfile(png) and os.path.getmtime(png) >= os.path.getmtime(dest)):
      seq2png.convert_category(out_dir, cat, png_width, workers=workers,
                               progress=progress)
  return [dest for _, _, dest, _ in todo]


@cli_main
def main(argv):
  check_argv(argv)
  require_flags(FLAGS, "out_dir")
  require_min(FLAGS, 1, "workers")
  for path in fetch_categories(FLAGS.categories or [], FLAGS.out_dir, FLAGS.base_url,
                               FLAGS.png_width, FLAGS.workers):
    print(f"ready: {path}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
