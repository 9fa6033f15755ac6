"""Shared test set-up: quiet TensorFlow, project root on sys.path, data paths."""
import os
import shutil
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

# Real human-drawn sketches (read-only); tests using them skip when absent.
SHARED_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")

import pytest  # noqa: E402

from data.synthetic import generate  # noqa: E402
from hparams import CONFIG_NAME, get_hparams  # noqa: E402

# The shared tiny model: data.synthetic categories and split sizes per category.
TINY_CATS = ["fish", "house"]
TINY_SIZES = (32, 8, 16)
# Steps of the tiny model: model.training.loop.train(seed=0,
# save_every_steps=3, log_every=1).
TINY_STEPS = 6


def tiny_hps(**overrides):
  """The tiny preset on TINY_CATS (num_mixture=2: K=4, L=2) plus overrides:
  the hparams of tiny_model and of every test that trains on tiny_data."""
  text = ",".join(f"{k}={v}" for k, v in overrides.items())
  return get_hparams("tiny", f"categories=[{','.join(TINY_CATS)}],num_mixture=2,"
                     + text)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
  """data.synthetic fish/house, TINY_SIZES sketches per split and category."""
  data_dir = str(tmp_path_factory.mktemp("tiny_data") / "data")
  generate(data_dir, sizes=TINY_SIZES, categories=TINY_CATS, workers=1,
           contact_sheet=False)
  return data_dir


def pytest_collection_finish(session):
  """Notes the modules with background work whose consumers were selected.

  Runs after deselection (-k, -m, node ids): a module's ``start_early`` job
  starts only when at least one selected test of that module requests the
  ``early_jobs`` fixture (directly or through a fixture), so a subset run
  never pays for work it does not check."""
  wanted = {}
  for item in session.items:
    module = getattr(item, "module", None)
    if (module is not None and hasattr(module, "start_early")
        and "early_jobs" in getattr(item, "fixturenames", ())):
      wanted[module.__name__] = module
  session.early_modules = [wanted[k] for k in sorted(wanted)]


class _EarlyJobs(dict):
  """{module name: handle} of ``module.start_early(tiny_data, tmp_path_factory)``;
  a module's job starts when it is first looked up, if not started before."""

  def __init__(self, request, tmp_path_factory):
    super().__init__()
    self.request, self.tmp_path_factory = request, tmp_path_factory

  def __missing__(self, name):
    module = sys.modules[name]
    data_dir = self.request.getfixturevalue("tiny_data")
    self[name] = module.start_early(data_dir, self.tmp_path_factory)
    return self[name]


@pytest.fixture(scope="session")
def early_jobs(request, tmp_path_factory):
  """{module name: handle} of the modules' slow subprocess work (kill -9
  trials, a reproducibility rerun).  In a plain run every job whose module
  has a selected test starts with the session and overlaps the other tests
  on the second core; under pytest-xdist (both cores already busy, and a
  worker cannot know which files it will get) a job starts when its test
  asks for it.  Handles have ``stop()``."""
  jobs = _EarlyJobs(request, tmp_path_factory)
  if not os.environ.get("PYTEST_XDIST_WORKER"):
    for module in getattr(request.session, "early_modules", []):
      jobs[module.__name__]   # starts it
  yield jobs
  for job in jobs.values():
    job.stop()


@pytest.fixture(scope="session", autouse=True)
def _start_early_jobs(request):
  """Starts the selected early jobs at the beginning of a plain session."""
  if (getattr(request.session, "early_modules", [])
      and not os.environ.get("PYTEST_XDIST_WORKER")):
    request.getfixturevalue("early_jobs")


@pytest.fixture(scope="session")
def tiny_model(tiny_data, tmp_path_factory):
  """(data_dir, model_dir, dead_dir), built once per test session.

  data_dir: tiny_data (data.synthetic fish/house, TINY_SIZES); model_dir: the
  tiny preset (num_mixture=2, K=4) trained TINY_STEPS steps by model.training.loop.train
  (tb/ has every step's losses; test_reproducibility repeats it); dead_dir:
  the same model with level-k component #3 made dead (q(3|l) ~ 0).  Shared by
  several test files: never write into these folders (copy them first).
  """
  # Lazy: every test file loads this module, the TensorFlow-free ones too.
  from model.storage.checkpoint import CheckpointState, load_trained  # pylint: disable=import-outside-toplevel
  from model.training.loop import train  # pylint: disable=import-outside-toplevel
  root = tmp_path_factory.mktemp("tiny_model")
  data_dir = tiny_data
  model_dir = str(root / "model")
  train(tiny_hps(), data_dir, model_dir, num_steps=TINY_STEPS, save_every_steps=3,
        log_every=1, verbose=False)
  dead_dir = str(root / "dead")
  os.makedirs(dead_dir)
  shutil.copy(os.path.join(model_dir, CONFIG_NAME), dead_dir)
  _, model = load_trained(model_dir)
  q = model.hierarchy.q_kl.numpy()
  q[3] = 1e-10
  model.hierarchy.q_kl.assign(q / q.sum(0))
  CheckpointState(model, dead_dir).save()
  return data_dir, model_dir, dead_dir
