"""Routing accuracy of free-running answers against expected invocations."""
import pytest
from hypothesis import given, settings, strategies as st

from vitron_jax.data.pixelworld import PixelWorld, WorldConfig
from vitron_jax.eval import routing as RT
from vitron_jax.protocol import invocation as I

EXP = I.Invocation("segment_video", "the red circle", ((0.1, 0.1, 0.5, 0.5),), (2, 6))
EXP_TEXT = f"Sure. {I.render(EXP)}"


def test_perfect_scores_one():
  assert RT.routing_scores(EXP_TEXT, EXP_TEXT) == dict.fromkeys(RT.FIELDS, 1.0)
  assert RT.routing_scores(I.render(EXP), EXP) == dict.fromkeys(RT.FIELDS, 1.0)
  assert RT.routing_scores("A red circle.", None) == dict.fromkeys(RT.FIELDS, 1.0)


def test_ground_truth_answers_of_every_task_route_perfectly():
  world = PixelWorld(WorldConfig(image_size=32, num_frames=4), seed=2)
  samples = [world[i] for i in range(60)]
  answers = [s["conversations"][1]["value"] for s in samples]
  expected = [a if "module" in s["truth"] else None for a, s in zip(answers, samples)]
  assert RT.routing_accuracy(answers, expected) == dict.fromkeys(RT.FIELDS, 1.0)


@pytest.mark.parametrize("pred,zero,one", [
    # wrong module, everything else right
    (I.render(I.Invocation("segment_image", "the red circle", EXP.boxes, EXP.time_span)),
     ["module", "all"], ["invoked", "parsed", "command", "region"]),
    # paraphrased command with the same content words
    (I.render(I.Invocation("segment_video", "circle that is red", EXP.boxes, EXP.time_span)),
     ["command_exact"], ["module", "command", "region", "all"]),
    # wrong colour in the command
    (I.render(I.Invocation("segment_video", "the blue circle", EXP.boxes, EXP.time_span)),
     ["command", "all"], ["module", "region"]),
    # box far off
    (I.render(I.Invocation("segment_video", "the red circle", ((0.6, 0.6, 0.9, 0.9),),
                           EXP.time_span)), ["region", "all"], ["module", "command"]),
    # time span missing
    (I.render(I.Invocation("segment_video", "the red circle", EXP.boxes)),
     ["region", "all"], ["module", "command"]),
    # malformed invocation
    ("<inv><seg_video><cmd>the red circle</cmd><region><loc0001></region></inv>",
     ["parsed", "module", "command", "region", "all"], ["invoked"]),
    # no invocation at all
    ("The red circle is at the top.", list(RT.FIELDS), []),
])
def test_known_wrong(pred, zero, one):
  sc = RT.routing_scores(pred, EXP)
  for k in zero:
    assert sc[k] == 0.0, (k, sc)
  for k in one:
    assert sc[k] == 1.0, (k, sc)


def test_an_empty_layout_box_is_matched_by_an_empty_box_only():
  """A text -> video layout's object out of view in a frame has the empty box."""
  empty, box = (0.0, 0.0, 0.0, 0.0), (0.1, 0.1, 0.5, 0.5)
  exp = I.Invocation("generate_video", "a red circle moving left", (box, empty))
  for boxes, right in (((box, empty), 1.0), ((box, (0.3, 0.3, 0.3, 0.6)), 1.0),
                       ((box, box), 0.0), ((empty, empty), 0.0)):
    got = I.render(I.Invocation("generate_video", "a red circle moving left", boxes))
    assert RT.routing_scores(got, exp)["region"] == right, boxes


def test_invocation_where_none_expected_is_wrong():
  assert RT.routing_scores(EXP_TEXT, None) == dict.fromkeys(RT.FIELDS, 0.0)


def test_bad_expected_and_lengths():
  with pytest.raises(ValueError, match="malformed invocation"):
    RT.routing_scores("x", "<inv><seg_image>")
  with pytest.raises(ValueError, match="predictions"):
    RT.routing_accuracy(["a"], [])
  assert RT.ROUTING_CHANCE["module"] == 1 / 8


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=80), st.none(), st.integers(),
                 st.lists(st.sampled_from(["<inv>", "</inv>", "<cmd>", "</cmd>", "<seg_video>",
                                           "<region>", "</region>", "<loc0100>", "<t02>", "red",
                                           "circle", " "]), max_size=20).map("".join)))
def test_fuzz_predictions(pred):
  sc = RT.routing_scores(pred, EXP)
  assert set(sc) == set(RT.FIELDS) and all(v in (0.0, 1.0) for v in sc.values())
  assert set(RT.routing_scores(pred, None).values()) <= {0.0, 1.0}


def _clip(*moves):
  """An object-major 2-frame layout: per object (first box, last box)."""
  boxes = tuple(b for pair in moves for b in pair)
  return I.render(I.Invocation("generate_video", "a red circle", boxes))


A = (0.4, 0.4, 0.6, 0.6)


def _shift(box, dx, dy):
  return (box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy)


def test_a_move_is_still_or_its_main_direction():
  assert RT.move_of(A, A) == RT.move_of(A, _shift(A, 0.04, -0.04)) == "still"
  assert RT.move_of(A, _shift(A, -0.3, 0.1)) == "left"
  assert RT.move_of(A, _shift(A, 0.3, 0.1)) == "right"
  assert RT.move_of(A, _shift(A, 0.1, -0.3)) == "up"
  assert RT.move_of(A, _shift(A, 0.0, 0.2)) == "down"


def test_plan_moves_scores_each_object_of_the_expected_layout():
  exp = _clip((A, _shift(A, 0.3, 0)), (A, A), (A, _shift(A, 0, -0.3)))
  assert RT.plan_moves(exp, exp, 2) == 1.0
  # other starts and distances, the same moves: right
  assert RT.plan_moves(_clip((_shift(A, -0.3, 0), _shift(A, -0.1, 0)), (A, A),
                             (_shift(A, 0.2, 0.2), _shift(A, 0.2, 0.0))), exp, 2) == 1.0
  # a static plan gets the still object only; a missing object and a bad answer score 0
  assert RT.plan_moves(_clip((A, A), (A, A), (A, A)), exp, 2) == pytest.approx(1 / 3)
  assert RT.plan_moves(_clip((A, _shift(A, 0.3, 0))), exp, 2) == pytest.approx(1 / 3)
  assert RT.plan_moves("no call", exp, 2) == 0.0
  with pytest.raises(ValueError, match="plans no clip of 2 frames"):
    RT.plan_moves(exp, I.render(I.Invocation("generate_video", "a red circle", ())), 2)
  # an object in view in one frame only is not scored; with none left, nothing is
  gone = (0.0, 0.0, 0.0, 0.0)
  half = _clip((A, _shift(A, 0.3, 0)), (gone, A))
  assert RT.plan_moves(exp, half, 2) == 1.0
  assert RT.plan_moves(_clip((A, A), (A, _shift(A, 0.3, 0))), half, 2) == 0.0
  assert RT.plan_moves(exp, _clip((gone, A)), 2) is None


def test_ground_truth_plans_move_as_the_world_moves_their_objects():
  world = PixelWorld(WorldConfig(image_size=32, num_frames=3), seed=1)
  for task in ("text_to_video", "image_to_video"):
    for i in range(40):
      s = world.sample(i, task)
      gpt = s["conversations"][1]["value"]
      assert RT.plan_moves(gpt, gpt, 3) == 1.0
      boxes = I.find_invocation(gpt).boxes
      spans = [RT._visible_span(boxes[3 * k:3 * k + 3]) for k in range(len(boxes) // 3)]
      moves = [RT.move_of(*b) for b in spans if b is not None]
      assert sorted(moves) == sorted(o["motion"].replace("static", "still")
                                     for o, b in zip(s["objects"], spans) if b is not None)
