"""Weight-folder I/O: single and sharded safetensors, pickles refused, header edge cases."""
import json
import pickle

import numpy as np
import pytest

from vitron_jax.convert.safetensors_io import (WeightsError, check_safetensors_file,
                                               read_weights, write_weights)


def test_single_and_sharded_roundtrip(tmp_path):
  rng = np.random.default_rng(0)
  t = {f"w{i}": rng.standard_normal((16, 8)).astype(np.float32) for i in range(5)}
  write_weights(t, tmp_path / "one")
  files = write_weights(t, tmp_path / "many", max_shard_bytes=1100)
  assert len(files) == 3  # 512-byte tensors, two per 1100-byte shard
  index = json.loads((tmp_path / "many" / "model.safetensors.index.json").read_text())
  assert set(index["weight_map"]) == set(t)
  for folder in ("one", "many"):
    back = read_weights(tmp_path / folder)
    assert set(back) == set(t)
    for k in t:
      np.testing.assert_array_equal(back[k], t[k])


def test_header_length_with_0x80_low_byte_is_not_mistaken_for_pickle(tmp_path):
  # Grow the tensor names until the JSON header length has 0x80 as its low byte.
  for n in range(1, 400):
    write_weights({"x" * n: np.zeros(1, np.float32)}, tmp_path, filename="m.safetensors")
    if (tmp_path / "m.safetensors").read_bytes()[0] == 0x80:
      break
  else:
    pytest.fail("no header length with low byte 0x80 found")
  check_safetensors_file(tmp_path / "m.safetensors")
  assert read_weights(tmp_path)["x" * n].shape == (1,)


def test_pickles_and_junk_are_refused(tmp_path):
  (tmp_path / "pytorch_model.bin").write_bytes(pickle.dumps({"w": [1.0]}))
  with pytest.raises(WeightsError, match="pickle weights .*pytorch_model.bin.*never loaded"):
    read_weights(tmp_path)
  disguised = tmp_path / "d" / "model.safetensors"
  disguised.parent.mkdir()
  disguised.write_bytes(pickle.dumps({"w": [1.0]}, protocol=4))
  with pytest.raises(WeightsError, match="is a pickle"):
    read_weights(disguised.parent)
  junk = tmp_path / "j" / "model.safetensors"
  junk.parent.mkdir()
  junk.write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00hello")
  with pytest.raises(WeightsError, match="not a safetensors file"):
    read_weights(junk.parent)
  with pytest.raises(WeightsError, match="does not exist"):
    read_weights(tmp_path / "nowhere")
