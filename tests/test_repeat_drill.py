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
                               ("pixelworld", "text_to_video,image_to_video", EP.PLAN_WEIGHT))
  assert all(k == "pixelworld" for k, _, _ in full.stages.s2_grounding.data.sources)
  assert all(k == "pixelworld" for k, _, _ in EP.get_config("quick").data.sources)
  llm, plain = EP.get_config("llm"), EP.get_config("llm_plain")
  assert llm.data.sources == full.data.sources
  assert "stages" not in llm and "segmenter" not in llm.model and llm.train.steps == 1000
  assert plain.data.sources == (("pixelworld", None, 1.0),)
