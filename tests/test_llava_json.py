"""The LLaVA/Vitron JSON tfds builder and the grain pipeline over it: decode, resize,
tokenize, pad, bad samples counted by name (or fatal when strict), checkpointable state."""
import json

import numpy as np
import pytest

from llava_fixture import BAD, write_llava_folder
from vitron_jax.data import llava_json, pipeline
from vitron_jax.train.conversation_task import ByteTokenizer, TokenizeAndPad


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  root = tmp_path_factory.mktemp("llava")
  folder = write_llava_folder(root / "folder")
  data_dir = str(root / "tfds")
  llava_json.build(data_dir, str(folder))
  return data_dir


def test_builder_keeps_every_item_and_raw_media(built):
  b = llava_json.builder(built)
  assert {k: v.num_examples for k, v in b.info.splits.items()} == {"train": 13, "val": 2}
  ds = llava_json.dataset(built, "train")
  recs = {llava_json._text(r["id"]): r for r in ds}
  assert recs["broken_img"]["images"][0].startswith(b"\xff\xd8\xff\xe0 this is not")
  assert [llava_json._text(m) for m in recs["no_video"]["missing"]] == ["video:vid/missing.mp4"]
  assert json.loads(llava_json._text(recs["good_frames"]["extra"])) == {"source": "fixture"}
  assert len(recs["good_frames"]["video"]) == 3
  with pytest.raises(ValueError, match="split 'test' not in"):
    llava_json.dataset(built, "test")
  with pytest.raises(FileNotFoundError, match="not built"):
    llava_json.dataset(built + "_nothing", "train")


def test_decode_media_resizes_and_names_bad_samples(built):
  recs = {llava_json._text(r["id"]): r for r in llava_json.dataset(built, "train")}
  dec = llava_json.DecodeMedia(image_size=16, num_frames=4)
  s = dec.map(recs["good_img"])
  assert s["images"][0].shape == (16, 16, 3) and s["images"][0].dtype == np.uint8
  assert tuple(s["images"][0][8, 8]) == (255, 0, 0)
  v = dec.map(recs["good_vid"])["video"]
  assert v.shape == (4, 16, 16, 3)
  assert [int(f[0, 0, 0]) for f in v] == [0, 40, 120, 160]  # frames 0, 1, 3, 4 of 5
  assert dec.map(recs["good_frames"])["video"].shape == (4, 16, 16, 3)
  with pytest.raises(pipeline.BadSampleError, match="'broken_img': undecodable image"):
    dec.map(recs["broken_img"])
  with pytest.raises(pipeline.BadSampleError,
                     match="'no_video': missing video file.*vid/missing.mp4"):
    dec.map(recs["no_video"])


SEQ = 320  # the Vicuna system prompt alone is ~170 byte tokens


def _pipe(built, **kw):
  return pipeline.make_pipeline(
      [llava_json.dataset(built, "train")], global_batch=2, shuffle=False,
      transforms=[llava_json.DecodeMedia(16, 2).map, TokenizeAndPad(ByteTokenizer(), SEQ)],
      **kw)


def test_pipeline_counts_bad_samples_by_name(built):
  it = _pipe(built)
  batches = [next(it) for _ in range(4)]
  b = batches[0]
  assert b["input_ids"].shape == (2, SEQ) and b["input_ids"].dtype == np.int32
  assert b["loss_mask"].dtype == bool and b["attention_mask"].dtype == bool
  assert not (b["loss_mask"] & ~b["attention_mask"]).any()
  text = bytes(int(t) - 3 for t in b["input_ids"][0][b["attention_mask"][0]][1:-1]).decode()
  assert text.endswith("USER: <image>\nWhat colour is it? ASSISTANT: Red.")
  answer = b["input_ids"][0][b["loss_mask"][0]]
  assert bytes(int(t) - 3 for t in answer[:-1]).decode() == "Red." and answer[-1] == 2
  stats = it.stats()
  assert stats["bad_by_reason"] == {reason: 1 for reason in BAD.values()}
  assert sorted(stats["bad_ids"]) == sorted([k, v] for k, v in BAD.items())
  assert stats["seen"] == 12


def test_strict_pipeline_stops_at_the_first_bad_sample(built):
  it = _pipe(built, strict=True)
  next(it)
  with pytest.raises(pipeline.BadSampleError, match="'broken_img': undecodable image"):
    next(it)


def test_too_many_bad_samples_stop_the_run(built):
  it = _pipe(built, max_bad_fraction=0.2, min_seen=5)
  with pytest.raises(pipeline.BadDataLimitError, match="samples are bad"):
    for _ in range(4):
      next(it)


def test_all_bad_data_stops_instead_of_spinning(built):
  it = pipeline.make_pipeline(
      [llava_json.dataset(built, "train")], global_batch=2, shuffle=False,
      transforms=[llava_json.DecodeMedia(16, 2).map, TokenizeAndPad(ByteTokenizer(), 8)])
  it.max_consecutive_bad = 20
  with pytest.raises(pipeline.BadDataLimitError, match="20 bad samples in a row"):
    next(it)


def test_pipeline_state_restores_exactly(built):
  a = _pipe(built)
  next(a)
  next(a)
  state = json.loads(json.dumps(a.get_state()))  # what the checkpoint stores
  want = [next(a) for _ in range(2)]
  b = _pipe(built)
  b.set_state(state)
  got = [next(b) for _ in range(2)]
  for x, y in zip(got, want):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])
  assert b.stats() == a.stats()
