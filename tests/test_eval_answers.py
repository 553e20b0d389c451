"""Scoring free-running PixelWorld answers per subtask against chance (`eval.answers`), and the
report of the scores with its pictures (`eval.report`)."""
import io
import re

import numpy as np
import PIL.Image
import pytest

from vitron_jax.data import pixelworld_tokenizer as PT
from vitron_jax.data.pixelworld import TASKS, PixelWorld, WorldConfig
from vitron_jax.eval import answers as EA
from vitron_jax.protocol.tokenizer import decode_text, encode_model_text

MAX_OBJECTS = 3
N = 10


@pytest.fixture(scope="module")
def samples():
  world = PixelWorld(WorldConfig(image_size=32, num_frames=2, max_objects=MAX_OBJECTS),
                     split="heldout")
  return {sub: [world.sample(i, task=sub) for i in range(N)] for sub in EA.PRIMARY}


def _gt(s):
  return s["conversations"][1]["value"]


def _table(samples, answer_of):
  rows = []
  for sub, ss in samples.items():
    for s in ss:
      scores, chance = EA.score_answer(s, answer_of(s), max_objects=MAX_OBJECTS)
      assert EA.PRIMARY[sub] in scores and EA.PRIMARY[sub] in chance, (sub, scores, chance)
      assert all(np.isfinite(v) for v in scores.values()), (sub, scores)
      rows.append((sub, scores, chance))
  return EA.summarize(rows)


def test_every_subtask_has_a_primary_metric():
  assert set(EA.PRIMARY) == set(TASKS)
  assert set(EA.BACKEND_SUBTASKS) == {k for k, v in EA.PRIMARY.items() if v == "routing"}


def test_ground_truth_beats_chance_and_a_wrong_answer(samples):
  gt = _table(samples, _gt)
  wrong = _table(samples, lambda s: "a red circle")
  assert set(gt) == set(EA.PRIMARY)
  for sub, row in gt.items():
    assert row["n"] == N
    assert row["primary"] == row[EA.PRIMARY[sub]]
    assert row["primary"] >= 0.95, (sub, row)
    assert 0.0 <= row["chance"] < row["primary"], (sub, row)
    assert row["beats_chance"] == 1.0, (sub, row)
    assert wrong[sub]["primary"] < row["primary"], (sub, wrong[sub], row)
    assert wrong[sub]["chance"] == pytest.approx(row["chance"])  # chance: of the samples
  # the fixed wrong answer is right only by accident
  assert np.mean([r["primary"] for r in wrong.values()]) < 0.2


def test_detokenized_ground_truth_still_scores(samples):
  """Answers are scored after decoding model ids (spaces between protocol tokens)."""
  tok = PT.build_tokenizer()
  table = _table(samples, lambda s: decode_text(tok, encode_model_text(tok, _gt(s))).strip())
  for sub, row in table.items():
    assert row["primary"] >= 0.95, (sub, row)


def test_backend_subtasks_score_the_invocation(samples):
  for sub in EA.BACKEND_SUBTASKS:
    s = samples[sub][0]
    scores, _ = EA.score_answer(s, _gt(s), max_objects=MAX_OBJECTS)
    assert scores["routing"] == 1.0 and scores["invocation_all"] == 1.0, (sub, scores)
    # the right module with a wrong command: routing still right, the whole call not
    other = re.sub(r"<cmd>.*</cmd>", "<cmd>zzz</cmd>", _gt(s))
    assert other != _gt(s)
    scores, _ = EA.score_answer(s, other, max_objects=MAX_OBJECTS)
    assert scores["routing"] == 1.0 and scores["command"] < 1.0, (sub, scores)


def test_summarize_means_and_beats_chance():
  rows = [("image_qa", {"qa_accuracy": 1.0}, {"qa_accuracy": 0.5}),
          ("image_qa", {"qa_accuracy": 0.0}, {"qa_accuracy": 0.3}),
          ("ref_box", {"box_iou": 0.1, "box_acc@0.5": 0.0}, {"box_iou": 0.2}),
          ("ref_box", {"box_iou": 0.2, "box_acc@0.5": 0.0}, {"box_iou": 0.2})]
  t = EA.summarize(rows)
  assert set(t) == {"image_qa", "ref_box"}
  assert t["image_qa"]["n"] == 2 and t["image_qa"]["primary"] == pytest.approx(0.5)
  assert t["image_qa"]["chance"] == pytest.approx(0.4)
  assert t["image_qa"]["beats_chance"] == 1.0
  assert t["ref_box"]["primary"] == pytest.approx(0.15) and t["ref_box"]["chance"] == 0.2
  assert t["ref_box"]["beats_chance"] == 0.0 and t["ref_box"]["box_acc@0.5"] == 0.0
  tie = EA.summarize([("image_qa", {"qa_accuracy": 0.5}, {"qa_accuracy": 0.5})])
  assert tie["image_qa"]["beats_chance"] == 0.0  # equal to chance does not beat it
  assert EA.summarize([]) == {}


def test_unknown_subtask_raises(samples):
  s = dict(samples["image_qa"][0], subtask="juggling")
  with pytest.raises(ValueError, match="juggling"):
    EA.score_answer(s, "Yes.", max_objects=MAX_OBJECTS)


def test_report_names_gif_pictures_gif_and_the_rest_png(tmp_path):
  from vitron_jax.eval import report as R  # pylint: disable=import-outside-toplevel
  from vitron_jax.eval.pictures import animation  # pylint: disable=import-outside-toplevel
  png = io.BytesIO()
  PIL.Image.new("RGB", (6, 4), "red").save(png, format="PNG")
  video = np.zeros((3, 4, 4, 3), np.uint8)
  video[np.arange(3), 1, np.arange(3)] = 255  # one lit pixel moving right: 3 distinct frames
  gif = animation(video, scale=1).gif_bytes()
  table = EA.summarize([("video_seg", {"routing": 1.0}, {"routing": 0.25})])
  pictures = {"answers/video_seg/0": (png.getvalue(), 4, 6),
              "answers/video_seg/0/video0": (gif, 4, 4)}
  path = R.write_report(str(tmp_path), 7, {"val": table}, pictures=pictures)
  text = open(path).read()
  assert "![answers/video_seg/0](report/answers_video_seg_0.png)" in text  # as before
  assert "![answers/video_seg/0/video0](report/answers_video_seg_0_video0.gif)" in text
  assert (tmp_path / "report" / "answers_video_seg_0.png").read_bytes() == png.getvalue()
  assert (tmp_path / "report" / "answers_video_seg_0_video0.gif").read_bytes() == gif
  assert sorted(p.name for p in (tmp_path / "report").iterdir()) == [
      "answers_video_seg_0.png", "answers_video_seg_0_video0.gif"]
  with PIL.Image.open(tmp_path / "report" / "answers_video_seg_0_video0.gif") as im:
    assert im.format == "GIF" and im.n_frames == 3
  assert R._file_name("a/b", b"GIF87a...") == "a_b.gif"  # pylint: disable=protected-access
  assert R._file_name("a/b", b"\x89PNG") == "a_b.png"  # pylint: disable=protected-access
