"""The segmenter grounds what edits and image -> video plans name (`train/phrase_grounding.py`):
the phrases each invocation names, boxes found in their place (a perfect grounder gives back
PixelWorld's expected invocation), the answers rewritten only where they change, and the
run's wiring (`task.ground_with_segmenter`)."""
import json
import os
import sys

import flax
import jax
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import pixelworld as EP  # noqa: E402

from vitron_jax.data.pixelworld import PixelWorld  # noqa: E402
from vitron_jax.data.pixelworld import sample as SP  # noqa: E402
from vitron_jax.protocol import invocation as I  # noqa: E402
from vitron_jax.train.editor import edited_object  # noqa: E402
from vitron_jax.train.phrase_grounding import anchored_path  # noqa: E402
from vitron_jax.train.task import build_task  # noqa: E402

EDIT, I2V = "edit_image", "image_to_video"


@pytest.fixture(scope="module")
def task():
  c = EP.get_config("quick_gen")
  c.task.ground_with_segmenter = True
  return build_task(c)


@pytest.fixture(scope="module")
def params(task):
  return flax.linen.meta.unbox(jax.jit(task.init)(jax.random.PRNGKey(0)))


def _expected(sample) -> I.Invocation:
  return I.find_invocation(sample["conversations"][1]["value"])


def _edits(task, n=40):
  w = PixelWorld(task.world_config, split="heldout", seed=0)
  return [w.sample(i, task="image_edit") for i in range(n)]


def test_edit_commands_name_the_object_they_change():
  assert edited_object("make the red circle blue") == ("recolour", "the red circle")
  assert edited_object("remove   the large star") == ("remove", "the large star")
  assert edited_object("move the small red ring to the top left") == ("move", "the small red ring")
  assert edited_object("move the object") == ("move", "the object")
  for other in ("add a red circle in the top left", "make the circle", "remove", "paint it"):
    assert edited_object(other) is None, other


def test_every_pixelworld_edit_names_its_object(task):
  """The grammar covers what PixelWorld asks: each recolour / remove / move names the object
  whose box is the invocation's first; an add names none."""
  ops = set()
  for s in _edits(task):
    inv, truth = _expected(s), s["truth"]
    target = edited_object(inv.command)
    if truth["op"] == "add":
      assert target is None
      continue
    op, phrase = target
    ops.add(op)
    assert op == truth["op"] and phrase.startswith("the ")
    k = truth["object"]
    # (through the location tokens' 1024 bins)
    np.testing.assert_allclose(inv.boxes[0], SP.norm_box(s["targets"]["boxes"][0], 32),
                               atol=1e-3)
    assert s["objects"][k]["shape"] in phrase or phrase.split()[-1] in ("object", "one",
                                                                        "shape")
  assert ops == {"recolour", "remove", "move"}


def test_a_perfect_grounder_gives_back_the_expected_edit(task):
  att = task.backends[EDIT]
  changed = 0
  for s in _edits(task):
    inv = _expected(s)
    phrases = att.grounded_phrases(inv)
    if s["truth"]["op"] == "add":
      assert phrases == []
      continue
    wrong = I.Invocation(EDIT, inv.command, ((0.0, 0.0, 0.1, 0.1),) * len(inv.boxes))
    assert att.with_grounded(wrong, [inv.boxes[0]]).boxes[0] == inv.boxes[0]
    if s["truth"]["op"] != "move":  # a move's destination is a place in words: the LLM's
      assert att.with_grounded(wrong, [inv.boxes[0]]) == inv
      changed += 1
    else:
      assert att.with_grounded(wrong, [inv.boxes[0]]).boxes[1:] == wrong.boxes[1:]
    assert att.with_grounded(wrong, [None]) == wrong  # nothing found: the LLM's boxes stand
  assert changed > 5


def test_planned_paths_start_where_the_object_is():
  path = [(0.1, 0.1, 0.3, 0.3), (0.3, 0.2, 0.5, 0.4)]  # moves right 0.2 and down 0.1
  assert anchored_path(path, None) == tuple(path)
  got = np.asarray(anchored_path(path, (0.5, 0.5, 0.6, 0.6)))
  np.testing.assert_allclose(got, [[0.5, 0.5, 0.6, 0.6], [0.7, 0.6, 0.8, 0.7]], atol=1e-9)
  edge = anchored_path(path, (0.85, 0.0, 0.95, 0.1))  # clipped to the image
  np.testing.assert_allclose(edge[1], [1.0, 0.1, 1.0, 0.2], atol=1e-9)


def test_a_perfect_grounder_gives_back_the_expected_plan():
  """With each object's true first-frame box, the plan of a still / moving object is the
  expected layout (an object that enters or leaves changes size at the border: not checked)."""
  task = build_task(EP.get_config(""))
  att, t = task.backends[I2V], task.world_config.num_frames
  w = PixelWorld(task.world_config, split="heldout", seed=0)
  checked = 0
  for i in range(12):
    inv = _expected(w.sample(i, task=I2V))
    phrases = att.grounded_phrases(inv)
    assert len(phrases) * t == len(inv.boxes)
    starts = [inv.boxes[k * t] for k in range(len(phrases))]
    shifted = []  # each object's whole path moved to the left edge: the plan misplaced
    for k in range(len(phrases)):
      path = inv.boxes[k * t:(k + 1) * t]
      dx = min(b[0] for b in path)
      shifted += [(x1 - dx, y1, x2 - dx, y2) for x1, y1, x2, y2 in path]
    moved = I.Invocation(I2V, inv.command, tuple(shifted))
    got = att.with_grounded(moved, starts)
    for k in range(len(phrases)):
      path = np.asarray(inv.boxes[k * t:(k + 1) * t])
      sizes = path[:, 2:] - path[:, :2]
      if np.allclose(sizes, sizes[0], atol=1e-6):
        np.testing.assert_allclose(got.boxes[k * t:(k + 1) * t], path, atol=1e-6)
        checked += 1
  assert checked >= 6
  bad = I.Invocation(I2V, "the red circle is moving left", ((0.1, 0.1, 0.2, 0.2),) * 3)
  assert att.grounded_phrases(bad) == []  # 3 boxes are not 2 frames of whole objects


def test_the_segmenter_finds_a_box_or_nothing_per_phrase(task, params):
  g, s = task.grounder, _edits(task, 3)
  sp = params["backends"]["segment_image"]
  found = g.find(sp, [x["images"][0] for x in s] * 2,
                 ["the red circle", "the star", "the large blue one",
                  "the " + "red " * 40 + "circle", "the square", "the object"])
  assert len(found) == 6 and found[3] is None  # too long for its text encoder: not found
  for b in found:
    assert b is None or (len(b) == 4 and 0 <= b[0] <= b[2] <= 1 and 0 <= b[1] <= b[3] <= 1)
  with pytest.raises(ValueError, match="one image per phrase"):
    g.find(sp, [s[0]["images"][0]], ["a", "b"])


def test_answers_are_rewritten_where_the_segmenter_finds_the_object(task, params, monkeypatch):
  samples = [s for s in _edits(task) if s["truth"]["op"] in ("recolour", "remove")][:3]
  cap = PixelWorld(task.world_config, split="val", seed=0).sample(0, task="image_caption")
  truth = [_expected(s).boxes[0] for s in samples]
  answers = [f"Sure. {I.render(I.Invocation(EDIT, _expected(s).command, ((0.0, 0.0, 0.2, 0.2),)))}"
             for s in samples] + ["A red circle."]
  calls = []

  def find(sp, images, phrases):
    calls.append(list(phrases))
    return [truth[0], None, truth[2]]
  monkeypatch.setattr(task.grounder, "find", find)
  got, n = task.backend_answers(task.backends[EDIT], params, samples + [cap], answers)
  assert calls == [[edited_object(_expected(s).command)[1] for s in samples]]
  assert n == 2 and got[1] == answers[1] and got[3] == answers[3]
  for i in (0, 2):
    assert got[i].startswith("Sure. ") and I.find_invocation(got[i]) == _expected(samples[i])
  # backends that name nothing in the image are handed the answers as written
  assert task.backend_answers(task.backends["generate_image"], params, samples,
                              answers[:3]) == (answers[:3], 0)


def test_grounding_needs_the_segmenter():
  c = EP.get_config("quick_gen")
  del c.model["segmenter"]
  del c.task.backend_rows["segment_image"]
  del c.model.head.backends["segment_image"]
  c.task.ground_with_segmenter = True
  with pytest.raises(ValueError, match="ground_with_segmenter needs the image segmenter"):
    build_task(c)


def test_the_evaluation_scores_grounded_edits_and_says_so(task, params, tmp_path, monkeypatch):
  """The edit row is scored on the segmenter's boxes, the text rows on the answers as written;
  the metrics count the grounded answers and the report says what was grounded."""
  monkeypatch.setattr(task.cfg.eval, "split", "heldout")
  monkeypatch.setattr(task.cfg.eval, "pictures", 0)
  w = PixelWorld(task.world_config, split="heldout", seed=0)
  edit = next(s for s in _edits(task) if s["truth"]["op"] == "recolour")
  samples = [edit if t == "image_edit" else w.sample(0, task=t) for t in task.subtasks]
  monkeypatch.setattr(task, "eval_samples", lambda split=None: samples)
  expected = [s["conversations"][1]["value"] for s in samples]
  # the LLM misplaces every box; the segmenter finds the objects where they are
  wrong = [a if I.find_invocation(a) is None or not I.find_invocation(a).boxes else
           I.replace_invocation(a, I.Invocation(
               I.find_invocation(a).module, I.find_invocation(a).command,
               ((0.0, 0.0, 0.05, 0.05),) * len(I.find_invocation(a).boxes)))
           for a in expected]
  head = task.vcfg.head
  sig = (np.ones((head.k_max, task.vcfg.llm.hidden_size), np.float32), np.ones(head.k_max, bool),
         head.index(EDIT))
  monkeypatch.setattr(task, "answer", lambda *a, **kw: (wrong, [sig] * len(wrong)))
  monkeypatch.setattr(task.grounder, "find", lambda p, ims, ps: [_expected(edit).boxes[0]] * len(ps))
  written = []
  real = task.backends[EDIT].score
  monkeypatch.setattr(task.backends[EDIT], "score",
                      lambda m, mp, bp, ss, answers, sg: written.extend(answers) or real(
                          m, mp, bp, ss, answers, sg))
  metrics = task.evaluate(params, step=0, workdir=str(tmp_path))
  assert metrics["grounded/edit_image"] == 1.0
  assert I.find_invocation(written[samples.index(edit)]) == _expected(edit)
  lines = (tmp_path / "eval" / "answers_00000000.jsonl").read_text().splitlines()
  assert [json.loads(x)["answer"] for x in lines] == wrong  # the answers as the LLM wrote them
  assert "found the objects named by 1 `edit_image` answers'" in (
      tmp_path / "report.md").read_text()


def test_the_object_box_leaves_stray_pixels_out():
  from vitron_jax.train.phrase_grounding import object_box
  m = np.zeros((32, 32), bool)
  assert object_box(m) is None
  m[10:20, 4:12] = True   # the object
  m[30, 30] = m[0, 31] = True  # stray pixels would stretch a box of the whole mask
  assert object_box(m) == (4.0, 10.0, 12.0, 20.0)
  m[20, 12] = True  # touching diagonally: part of it
  assert object_box(m) == (4.0, 10.0, 13.0, 21.0)
