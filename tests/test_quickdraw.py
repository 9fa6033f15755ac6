"""The QuickDraw downloader, tested offline against a local http.server."""
import functools
import http.server
import os
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest

from data import quickdraw as Q
from tests.conftest import ROOT
from utils.errors import UserError


class RangeHandler(http.server.SimpleHTTPRequestHandler):
  """Static files with HTTP Range support; can cut the next response short."""
  supports_range = True
  cut_next_at = None  # bytes sent before dropping the connection, once
  requests = []

  def log_message(self, *args):
    pass

  def do_GET(self):
    RangeHandler.requests.append((self.path, self.headers.get("Range")))
    rng = self.headers.get("Range")
    path = self.translate_path(self.path)
    if not os.path.isfile(path) or not (rng and self.supports_range):
      if os.path.isfile(path) and RangeHandler.cut_next_at is not None:
        return self._send(open(path, "rb").read(), 200, 0)
      return super().do_GET()
    data = open(path, "rb").read()
    start = int(rng.split("=")[1].split("-")[0])
    if start >= len(data):
      self.send_response(416)
      self.end_headers()
      return None
    return self._send(data, 206, start)

  def _send(self, data, code, start):
    self.send_response(code)
    self.send_header("Content-Length", str(len(data) - start))
    if code == 206:
      self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
    self.end_headers()
    body = data[start:]
    if RangeHandler.cut_next_at is not None:
      body, RangeHandler.cut_next_at = body[:RangeHandler.cut_next_at], None
      self.close_connection = True
    self.wfile.write(body)
    return None


class PlainHandler(RangeHandler):
  supports_range = False  # like python's http.server: ignores Range


def write_category(folder, name, rng):
  def sk(n):
    s = rng.integers(-20, 21, size=(n, 3)).astype(np.int16)
    s[:, 2] = 0
    s[-1, 2] = 1
    return s

  splits = {}
  for k, n in (("train", 40), ("valid", 8), ("test", 8)):
    a = np.empty(n, dtype=object)
    a[:] = [sk(int(rng.integers(3, 30))) for _ in range(n)]
    splits[k] = a
  path = os.path.join(folder, f"{name}.npz")
  np.savez(path, **splits)
  return path


@pytest.fixture
def server(tmp_path):
  served = tmp_path / "served"
  served.mkdir()
  rng = np.random.default_rng(0)
  for name in ("bee", "big cat"):
    write_category(str(served), name, rng)
  (served / "broken.npz").write_bytes(b"PK\x03\x04 not really a zip file")
  started = []

  def start(handler=RangeHandler):
    h = functools.partial(handler, directory=str(served))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), h)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    started.append(srv)
    return f"http://127.0.0.1:{srv.server_address[1]}/sketchrnn/"

  RangeHandler.requests, RangeHandler.cut_next_at = [], None
  # files are served under /sketchrnn/ like the public bucket
  os.symlink(str(served), str(served / "sketchrnn"))
  yield start, served
  for srv in started:
    srv.shutdown()
    srv.server_close()


def fetch(base, out, cats=("bee",)):
  return Q.fetch_categories(list(cats), str(out), base, png_width=16, workers=1,
                            progress=False)


def assert_ready(out, served, name):
  assert open(out / f"{name}.npz", "rb").read() == open(served / f"{name}.npz", "rb").read()
  png = np.load(out / f"{name}_png.npz")
  raw = np.load(served / f"{name}.npz", allow_pickle=True)
  for k in ("train", "valid", "test"):
    assert png[k].shape == (len(raw[k]), 16, 16) and png[k].dtype == np.uint8
  assert not (out / f"{name}.npz.part").exists()


def test_download_quoted_name_and_render(server, tmp_path):
  start, served = server
  base = start()
  out = tmp_path / "out"
  paths = fetch(base, out, ["bee", "big cat"])
  assert paths == [str(out / "bee.npz"), str(out / "big cat.npz")]
  assert_ready(out, served, "bee")
  assert_ready(out, served, "big cat")
  assert ("/sketchrnn/big%20cat.npz", None) in RangeHandler.requests
  n = len(RangeHandler.requests)
  fetch(base, out, ["bee"])  # complete files are not downloaded again
  assert len(RangeHandler.requests) == n


def test_resume_partial_file_with_range(server, tmp_path):
  start, served = server
  base = start()
  out = tmp_path / "out"
  out.mkdir()
  data = open(served / "bee.npz", "rb").read()
  (out / "bee.npz.part").write_bytes(data[:1000])
  fetch(base, out)
  assert ("/sketchrnn/bee.npz", "bytes=1000-") in RangeHandler.requests
  assert_ready(out, served, "bee")


def test_interrupted_download_resumes_on_rerun(server, tmp_path):
  start, served = server
  base = start()
  out = tmp_path / "out"
  RangeHandler.cut_next_at = 700
  with pytest.raises(UserError, match="run the same command again to resume"):
    fetch(base, out)
  assert (out / "bee.npz.part").stat().st_size == 700 and not (out / "bee.npz").exists()
  fetch(base, out)
  assert ("/sketchrnn/bee.npz", "bytes=700-") in RangeHandler.requests
  assert_ready(out, served, "bee")


def test_server_without_range_restarts_cleanly(server, tmp_path):
  start, served = server
  base = start(PlainHandler)
  out = tmp_path / "out"
  out.mkdir()
  (out / "bee.npz.part").write_bytes(b"x" * 500)  # garbage prefix is discarded
  fetch(base, out)
  assert_ready(out, served, "bee")


def test_unknown_category_writes_nothing(server, tmp_path):
  start, _ = server
  base = start()
  out = tmp_path / "out"
  with pytest.raises(UserError, match="unknown category 'nope'.*HTTP 404") as e:
    fetch(base, out, ["bee", "nope"])
  assert "\n" not in str(e.value)
  assert os.listdir(out) == []


def test_corrupt_download_is_deleted(server, tmp_path):
  start, _ = server
  out = tmp_path / "out"
  with pytest.raises(UserError, match="not a usable sketch-rnn file"):
    fetch(start(), out, ["broken"])
  assert os.listdir(out) == []


def closed_port():
  s = socket.socket()
  s.bind(("127.0.0.1", 0))
  port = s.getsockname()[1]
  s.close()
  return port


def test_no_connection_one_line(tmp_path):
  base = f"http://127.0.0.1:{closed_port()}/sketchrnn/"
  with pytest.raises(UserError, match="cannot reach .*no network") as e:
    fetch(base, tmp_path / "out")
  assert "\n" not in str(e.value)


def test_unwritable_out_dir(tmp_path):
  (tmp_path / "file").write_text("x")
  with pytest.raises(UserError, match="cannot create"):
    fetch("http://127.0.0.1:1/", tmp_path / "file" / "out")


def test_url_quoting():
  assert Q.category_url("https://h/x/", "The Eiffel Tower") == \
      "https://h/x/The%20Eiffel%20Tower.npz"
  assert Q.category_url("https://h/x", "bee") == "https://h/x/bee.npz"


def test_cli_error_is_one_line_exit_2(tmp_path):
  base = f"http://127.0.0.1:{closed_port()}/"
  proc = subprocess.run(
      [sys.executable, "-m", "data.quickdraw", "--categories", "bee", "--out_dir",
       str(tmp_path / "o"), "--base_url", base],
      cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: cannot reach")
