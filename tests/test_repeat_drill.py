"""Repeat drills (`data/repeat_drill.py`) and their place in the VITRON task's data mix."""
import collections
import os
import re
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import pixelworld as EP  # noqa: E402

from vitron_jax.data import pixelworld_tokenizer as PT  # noqa: E402
from vitron_jax.data import repeat_drill as RD  # noqa: E402
from vitron_jax.data.pixelworld import splits as S  # noqa: E402
from vitron_jax.data.pixelworld import vocab as V  # noqa: E402
from vitron_jax.protocol import invocation as I  # noqa: E402
from vitron_jax.protocol.tokenizer import protocol_ids  # noqa: E402
from vitron_jax.train.task import build_task  # noqa: E402


def test_a_drill_asks_for_its_words_back_and_is_the_same_on_every_call():
  src = RD.RepeatDrillSource("words:3-9", seed=4)
  lengths = collections.Counter()
  for i in range(200):
    s = src[i]
    human, gpt = (t["value"] for t in s["conversations"])
    assert human == f"{RD.PROMPT} {gpt}"
    words = gpt.split()
    assert 3 <= len(words) <= 9 and set(words) <= set(RD.DRILL_WORDS)
    lengths[len(words)] += 1
    assert s["subtask"] == "repeat" and s["images"] == [] and s["regions"] == []
    assert src[i] == s                                    # deterministic per index
  assert set(lengths) == set(range(3, 10))                # every length is drawn
  assert src[0] != RD.RepeatDrillSource("words:3-9", seed=5)[0]  # the seed matters
  with pytest.raises(IndexError, match="out of range"):
    RD.RepeatDrillSource(length=3)[3]


def test_phrase_drills_list_objects_with_independent_slots_and_no_heldout_pair():
  src = RD.RepeatDrillSource("phrases:2-3")
  pairs, tails = collections.Counter(), collections.Counter()
  for i in range(400):
    text = src[i]["conversations"][1]["value"]
    objects = [o for o in re.split(r", | and | on an? \w+ background", text) if o]
    assert 2 <= len(objects) <= 3, text
    for o in objects:
      words = o.split()
      colour, shape = (w for w in words if w in V.COLOURS or w in V.SHAPES)
      assert S.colour_shape_allowed(colour, shape), o
      direction = [w for w in words[words.index(shape):] if w in V.DIRECTIONS]
      if "moving" in words:
        assert len(direction) == 1 and S.motion_shape_allowed(direction[0], shape), o
      pairs[colour, shape] += 1
      tails["moving" in words or "still" in words, any(p in o for p in V.POSITION_PHRASES
                                                         .values())] += 1
  # every allowed colour-shape pair comes up; plain, placed and moving objects all do
  allowed = {(c, s) for c in V.COLOURS for s in V.SHAPES if S.colour_shape_allowed(c, s)}
  assert set(pairs) == allowed
  assert {k for k, n in tails.items() if n > 100} == {(False, False), (False, True),
                                                      (True, False)}


def test_drill_words_are_uniform_and_known_to_the_tokenizer():
  tok = PT.load("pixelworld")
  src = RD.RepeatDrillSource("words")
  counts = collections.Counter(w for i in range(600) for w in src[i]["conversations"][1]
                               ["value"].split())
  # ~8400 draws over 291 words: every word comes up, none far more often than the rest
  assert len(counts) == len(RD.DRILL_WORDS)
  assert max(counts.values()) < 4 * np.mean(list(counts.values()))
  for drill in (src[0], RD.RepeatDrillSource()[0]):
    assert tok.unk_token_id not in tok(drill["conversations"][0]["value"])["input_ids"]
  for w in RD.DRILL_WORDS:
    assert tok.unk_token_id not in tok(w)["input_ids"], w


def test_box_drills_copy_drawn_boxes_as_location_tokens():
  src = RD.RepeatDrillSource("boxes", image_size=32)
  counts, sides = collections.Counter(), set()
  for i in range(300):
    s = src[i]
    human, gpt = (t["value"] for t in s["conversations"])
    assert human.startswith(RD.PROMPT) and human.count("<roi>") == len(s["regions"])
    again = src[i]                                         # deterministic per index
    assert s["images"] == [] and again["conversations"] == s["conversations"]
    assert all((a["mask"] == b["mask"]).all() for a, b in zip(again["regions"], s["regions"]))
    counts[len(s["regions"])] += 1
    want = ""
    for r in s["regions"]:
      x1, y1, x2, y2 = (int(v) for v in r["box"])
      sides |= {x2 - x1, y2 - y1}
      assert 0 <= x1 < x2 <= 32 and 0 <= y1 < y2 <= 32
      m = np.zeros((32, 32), bool)
      m[y1:y2, x1:x2] = True
      np.testing.assert_array_equal(r["mask"], m)          # a drawn box
      want += I.box_to_loc_tokens((x1 / 32, y1 / 32, x2 / 32, y2 / 32))
    assert gpt == want                                     # the boxes, in the prompt's order
  assert set(counts) == {1, 2, 3} and sides == set(range(2, 17))
  with pytest.raises(ValueError, match="image_size"):
    RD.RepeatDrillSource("boxes", image_size=8)


def test_box_drills_train_the_tokens_the_prompt_writes_before_each_roi():
  """With task.region_boxes the answer is the very location tokens written before the <roi>s;
  without it (or with more boxes than regions fit) the drill is refused by name."""
  c = EP.get_config("quick")
  c.task.region_boxes = True
  c.data.sources = (("repeat", "boxes", 1.0),)
  c.data.global_batch = 8
  task = build_task(c)
  batch = next(task.make_data(8, 0, 1))
  pids = protocol_ids(task.tokenizer)
  for r in range(8):
    ids, loss = batch["input_ids"][r], batch["loss_mask"][r].astype(bool)
    first = int(np.flatnonzero(loss)[0])
    prompt_locs = ids[:first][np.isin(ids[:first], pids.locs)]
    answer = ids[loss][:-1]                                # the answer, then its EOS
    assert len(answer) % 4 == 0 and len(answer) > 0
    np.testing.assert_array_equal(answer, prompt_locs)
  c.task.region_boxes = False
  with pytest.raises(ValueError, match=r"data.sources\[0\].*task.region_boxes"):
    build_task(c)
  c.task.region_boxes, c.data.sources = True, (("repeat", "boxes:1-4", 1.0),)
  with pytest.raises(ValueError, match=r"data.sources\[0\].*max_regions >= 4"):
    build_task(c)


@pytest.mark.parametrize("where", ["words:0-4", "phrases:5-3", "x", "words:4", "4-8"])
def test_bad_drills_are_refused_by_name(where):
  with pytest.raises(ValueError, match="MIN-MAX"):
    RD.parse_where(where)
  c = EP.get_config("quick")
  c.data.sources = (("pixelworld", "ref_seg", 1.0), ("repeat", where, 0.5))
  with pytest.raises(ValueError, match=r"data.sources\[1\].*MIN-MAX"):
    build_task(c)


def test_drills_join_the_task_mix_at_their_weight_and_are_not_evaluated():
  c = EP.get_config("quick")
  c.data.sources = (("pixelworld", "ref_seg", 1.0), ("repeat", "words:2-5", 1.0))
  c.data.global_batch = 32
  task = build_task(c)
  assert task.subtasks == ("ref_seg",) and not task.layout.videos
  batch = next(task.make_data(32, 0, 1))
  ids = batch["input_ids"]
  prompt = tuple(task.tokenizer(RD.PROMPT, add_special_tokens=False)["input_ids"])
  drills = [r for r in range(32) if any(tuple(ids[r, j:j + len(prompt)]) == prompt
                                        for j in range(ids.shape[1] - len(prompt)))]
  assert 6 <= len(drills) <= 26                         # about half the rows at weight 1:1
  assert not (ids == task.tokenizer.unk_token_id).any()
  for r in drills:   # a drill's answer is trained: 2-5 words and the end of the turn
    assert 3 <= int(batch["loss_mask"][r].sum()) <= 8


def test_the_full_job_drills_in_its_main_run_only():
  full = EP.get_config("")
  assert full.data.sources == (("pixelworld", None, 1.0), ("repeat", "phrases", EP.DRILL_WEIGHT),
                               ("pixelworld", "text_to_video,image_to_video", EP.PLAN_WEIGHT),
                               ("repeat", "boxes", EP.BOX_DRILL_WEIGHT))
  assert full.task.region_boxes and not EP.get_config("quick").task.region_boxes
  assert all(k == "pixelworld" for k, _, _ in full.stages.s2_grounding.data.sources)
  assert all(k == "pixelworld" for k, _, _ in EP.get_config("quick").data.sources)
  llm, plain = EP.get_config("llm"), EP.get_config("llm_plain")
  assert llm.data.sources == full.data.sources
  assert "stages" not in llm and "segmenter" not in llm.model and llm.train.steps == 1000
  assert plain.data.sources == (("pixelworld", None, 1.0),)
