"""Test set-up: 8 fake CPU devices for sharding tests, fp32 matmuls, quiet logs."""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

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
