"""A dependency-free console progress bar with rate and ETA.

On a terminal it redraws one line; when stderr is not a terminal (CI, logs)
it prints a plain line at most every ``min_interval`` seconds.
"""
import sys
import time


def format_seconds(seconds):
  seconds = int(max(0, seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h:d}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
  """``with Progress(total, "label") as p: ... p.update(n, info="loss 1.2")``."""

  def __init__(self, total, label="", unit="it", stream=None, min_interval=None,
               enabled=True):
    self.total = total
    self.label = label
    self.unit = unit
    self.stream = stream or sys.stderr
    self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
    self.min_interval = min_interval if min_interval is not None else (
        0.1 if self.tty else 10.0)
    self.enabled = enabled
    self.count = 0
    self.info = ""
    self.start = time.perf_counter()
    self._last = -1e9
    self._drawn_count = None

  def update(self, n=1, info=None):
    self.count += n
    if info is not None:
      self.info = info
    now = time.perf_counter()
    if now - self._last >= self.min_interval or (
        self.total and self.count >= self.total):
      self._last = now
      self._draw(now)

  def line(self, now=None):
    elapsed = (now or time.perf_counter()) - self.start
    rate = self.count / elapsed if elapsed > 0 else 0.0
    parts = [self.label] if self.label else []
    if self.total:
      frac = min(1.0, self.count / self.total)
      bar = "#" * int(20 * frac) + "-" * (20 - int(20 * frac))
      eta = (self.total - self.count) / rate if rate > 0 else 0.0
      parts.append(f"[{bar}] {self.count}/{self.total}")
      parts.append(f"{rate:.1f} {self.unit}/s ETA {format_seconds(eta)}")
    else:
      parts.append(f"{self.count} {self.unit} {rate:.1f} {self.unit}/s")
    if self.info:
      parts.append(self.info)
    return " ".join(parts)

  def _draw(self, now):
    if not self.enabled:
      return
    self._drawn_count = self.count
    text = self.line(now)
    if self.tty:
      self.stream.write("\r" + text[:200].ljust(80))
    else:
      self.stream.write(text + "\n")
    self.stream.flush()

  def close(self):
    if self.enabled:
      if self._drawn_count != self.count:
        self._draw(time.perf_counter())
      if self.tty:
        self.stream.write("\n")
        self.stream.flush()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
    return False
