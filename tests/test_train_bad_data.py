"""Bad data during training (an undecodable image, a missing video file, an empty
conversation, a sample longer than the sequence): counted and reported by name, or - with
data.strict - the run stops with a clear error after checkpointing its last completed step."""
import json

import pytest

from llava_fixture import BAD, write_llava_folder
from train_runs import ROOT, load_config
from vitron_jax.data.pipeline import BadSampleError
from vitron_jax.train.loop import train


def _config(folder, **data):
  c = load_config("tiny", ROOT / "experiments" / "llava_lm.py")
  c.task.folder = str(folder)
  c.log.tensorboard = False
  c.mesh.num_devices = 1  # global batch 2
  for k, v in data.items():
    setattr(c.data, k, v)
  return c


def _rows(workdir, kind):
  rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  return [r for r in rows if r["kind"] == kind]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  return write_llava_folder(tmp_path_factory.mktemp("llava") / "folder")


def test_bad_samples_are_counted_and_named(folder, tmp_path):
  summary = train(_config(folder, max_bad_fraction=0.5), str(tmp_path / "run"))
  assert summary["final_step"] == 3
  bad = summary["bad_data"]
  assert bad["bad_by_reason"] == {reason: 1 for reason in BAD.values()}
  assert sorted(map(tuple, bad["bad_ids"])) == sorted(BAD.items())
  events = [r for r in _rows(tmp_path / "run", "event") if r["event"] == "bad_data"]
  assert len(events) == 1 and sorted(map(tuple, events[0]["bad_ids"])) == sorted(BAD.items())
  train_rows = _rows(tmp_path / "run", "train")
  assert train_rows[-1]["bad_samples"] == 4


def test_strict_run_stops_with_the_sample_name_and_keeps_its_last_step(folder, tmp_path):
  with pytest.raises(BadSampleError, match="'broken_img': undecodable image"):
    train(_config(folder, strict=True), str(tmp_path / "run"))
  # step 1 = (good_img, good_vid); step 2 would read good_frames, broken_img
  ckpts = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
  assert ckpts == ["1"]
  err = [r for r in _rows(tmp_path / "run", "event") if r["event"] == "error"]
  assert len(err) == 1 and "broken_img" in err[0]["error"]
  # fixing the config (non-strict) resumes from that checkpoint and finishes
  summary = train(_config(folder), str(tmp_path / "run"))
  assert summary["start_step"] == 1 and summary["final_step"] == 3
