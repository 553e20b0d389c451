"""Test set-up: 8 fake CPU devices for sharding tests, fp32 matmuls, quiet logs, one XLA
compilation cache for the session."""
import atexit
import os
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One persistent compilation cache for the whole session, made by the first process that loads
# this file (the pytest-xdist controller): its workers and the training subprocesses the tests
# start inherit the variable, so a program one test compiled (the same tiny stage in two runs,
# the same model in two files) is read back instead of compiled again. Programs that compile in
# under a second are not cached (jax's default). A test may still pass its own folder
# (`train_runs.child_env(cache_dir=)`).
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _XLA_CACHE = tempfile.mkdtemp(prefix="vitron_jax_tests_xla_")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _XLA_CACHE
  atexit.register(shutil.rmtree, _XLA_CACHE, ignore_errors=True)

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng():
  return np.random.default_rng(0)


def pytest_collection_modifyitems(config, items):
  """Tests marked `runs_first` go to the front: started last, the longest test would leave
  the other pytest-xdist worker idle at the end of the suite."""
  del config
  items.sort(key=lambda item: item.get_closest_marker("runs_first") is None)  # stable
