"""Shared test set-up: quiet TensorFlow, project root on sys.path, data paths."""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

# Real human-drawn sketches (read-only); tests using them skip when absent.
SHARED_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")
