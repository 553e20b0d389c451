"""tfds build (array_record, no TensorFlow) -> grain read gives back the generated samples."""
import json
import pickle

import grain.python as grain
import numpy as np
import PIL.Image
import pytest

from vitron_jax.data import sources as SR
from vitron_jax.data import tfds_pixelworld as TP
from vitron_jax.data.pixelworld import TASKS, PixelWorld, WorldConfig


def assert_same(a, b, path="sample"):
  """Exact equality of sample trees: same keys, types, dtypes, shapes and values."""
  if isinstance(a, np.ndarray):
    assert isinstance(b, np.ndarray), path
    assert (a.dtype, a.shape) == (b.dtype, b.shape), (path, a.dtype, b.dtype, a.shape, b.shape)
    assert a.tobytes() == b.tobytes(), path
  elif isinstance(a, dict):
    assert isinstance(b, dict) and sorted(a) == sorted(b), (path, sorted(a), sorted(b))
    for k in a:
      assert_same(a[k], b[k], f"{path}[{k!r}]")
  elif isinstance(a, list):
    assert isinstance(b, list) and len(a) == len(b), path
    for i, (x, y) in enumerate(zip(a, b)):
      assert_same(x, y, f"{path}[{i}]")
  else:
    assert type(a) is type(b) and a == b, (path, a, b)


def test_codec_round_trip_every_task():
  world = PixelWorld(WorldConfig(image_size=32, num_frames=4), seed=9)
  for task in TASKS:
    for i in range(3):
      s = world.sample(i, task=task)
      rec = SR.encode_sample(s)
      assert isinstance(rec["json"], str) and all(isinstance(b, bytes) for b in rec["rgb"])
      assert_same(s, SR.decode_record(rec))


def test_codec_rejects_what_it_cannot_store():
  base = {"id": "x", "task": "understanding", "subtask": "y", "conversations": []}
  with pytest.raises(TypeError, match="holds a set"):
    SR.encode_sample({**base, "truth": {"a": {1, 2}}})
  with pytest.raises(ValueError, match="keys the codec cannot store"):
    SR.encode_sample({**base, "truth": {1: "a"}})
  with pytest.raises(ValueError, match="lacks 'subtask'"):
    SR.encode_sample({"id": "x", "task": "t", "conversations": []})
  scalars = {**base, "truth": {"n": np.int32(3), "f": np.float32(0.1), "b": True}}
  back = SR.decode_record(SR.encode_sample(scalars))
  assert_same(scalars, back)


def test_tfds_build_then_grain_read(tmp_path):
  builder = TP.build(str(tmp_path), "tiny")
  cfg = builder.builder_config
  assert builder.info.splits["train"].num_examples == cfg.train_examples
  files = list((tmp_path / "pixelworld" / "tiny" / "1.0.0").glob("*.array_record*"))
  assert len(files) == 3
  for split in ("train", "val", "heldout"):
    ds = SR.records_dataset(str(tmp_path), split, config="tiny")
    world = PixelWorld(cfg.world_config(), split=split, seed=cfg.seed, tasks=cfg.tasks)
    assert len(ds) == cfg.num_examples(split)
    for i in range(len(ds)):
      assert_same(world[i], ds[i], f"{split}[{i}]")
  # a grain DataLoader over the raw tfds source plus the decode transform
  source = SR.tfds_source(str(tmp_path), "train", config="tiny")
  loader = grain.DataLoader(
      data_source=source,
      sampler=grain.IndexSampler(len(source), grain.NoSharding(), shuffle=True, seed=1,
                                 num_epochs=1),
      operations=[SR.DecodeRecord(), SR.SelectTasks(["understanding", "ref_box"])],
      worker_count=0)
  got = list(loader)
  assert got and all(s["task"] == "understanding" or s["subtask"] == "ref_box" for s in got)
  world = PixelWorld(cfg.world_config(), split="train", seed=cfg.seed)
  for s in got:
    assert_same(world[int(s["id"].rsplit("/", 1)[1])], s)


def test_tfds_source_requires_a_build(tmp_path):
  with pytest.raises(FileNotFoundError, match="not built"):
    SR.tfds_source(str(tmp_path), "train", config="tiny")


def test_on_the_fly_source_is_deterministic_and_picklable():
  cfg = WorldConfig(image_size=32, num_frames=4)
  src = SR.PixelWorldSource(cfg, split="val", seed=4, tasks="image")
  assert len(src) == 2**31 - 1
  clone = pickle.loads(pickle.dumps(src))  # what grain worker processes receive
  for i in (0, 7, 123456789):
    assert_same(src[i], clone[i])
    assert_same(src[i], PixelWorld(cfg, split="val", seed=4, tasks="image")[i])
  with pytest.raises(IndexError):
    SR.PixelWorldSource(cfg, length=3)[3]
  ds = SR.pixelworld_dataset(cfg, seed=4, length=10).map(lambda s: s["subtask"])
  assert len(ds) == 10 and all(isinstance(ds[i], str) for i in range(10))
  loader = grain.DataLoader(
      data_source=SR.PixelWorldSource(cfg, seed=4, length=6),
      sampler=grain.IndexSampler(6, grain.NoSharding(), shuffle=False, num_epochs=1),
      worker_count=0)
  assert [s["id"] for s in loader] == [f"pixelworld/train/4/{i:09d}" for i in range(6)]


def test_llava_json_source(tmp_path):
  PIL.Image.fromarray(np.full((8, 6, 3), 7, np.uint8)).save(tmp_path / "a.png")
  items = [{"id": "q1", "image": "a.png", "conversations": [
      {"from": "human", "value": "<image>\nWhat is this?"}, {"from": "gpt", "value": "Grey."}]},
           {"id": "q2", "conversations": [{"from": "human", "value": "Hi"},
                                          {"from": "gpt", "value": "Hello"}]}]
  (tmp_path / "d.json").write_text(json.dumps(items))
  src = SR.LlavaJsonSource(str(tmp_path / "d.json"), str(tmp_path))
  s = src[0]
  assert s["conversations"][1]["value"] == "Grey." and s["images"][0].shape == (8, 6, 3)
  assert src[1]["images"] == [] and len(src) == 2
  # the same keys as a PixelWorld sample: one pipeline path
  pw = PixelWorld(WorldConfig(image_size=32))[0]
  assert set(s) <= set(pw) and {"id", "task", "subtask", "conversations", "images"} <= set(s)


def test_grain_worker_processes():
  from absl import flags
  flags.FLAGS.mark_as_parsed()  # grain workers read absl flags
  cfg = WorldConfig(image_size=32, num_frames=4)
  loader = grain.DataLoader(
      data_source=SR.PixelWorldSource(cfg, seed=4, length=6),
      sampler=grain.IndexSampler(6, grain.NoSharding(), shuffle=False, num_epochs=1),
      operations=[SR.SelectTasks(["understanding"])], worker_count=1)
  got = list(loader)
  world = PixelWorld(cfg, seed=4)
  want = [world[i] for i in range(6) if world[i]["task"] == "understanding"]
  assert [s["id"] for s in got] == [s["id"] for s in want]
  for a, b in zip(want, got):
    assert_same(a, b)
