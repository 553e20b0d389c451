"""Attribute accuracy from free text: QA, captions, regional captions."""
import pytest
from hypothesis import given, settings, strategies as st

from vitron_jax.eval import attributes as A
from vitron_jax.eval import text as TX


def test_parsers():
  assert TX.colours("A Red circle and a BLUE <loc0001> star.") == ["red", "blue"]
  assert TX.shapes("two circles, a rhombus and a plus") == ["circle", "diamond", "cross"]
  assert TX.first_number("There are 3.") == 3
  assert TX.first_number("I count four objects") == 4
  assert TX.first_number("There are no circles.") == 0
  assert TX.first_number("nothing") is None
  assert TX.yes_no("Yes, there is.") == "yes" and TX.yes_no("Nope") == "no"
  assert TX.directions("It does not move.") == ["static"]
  assert TX.directions("it moves upwards") == ["up"]
  assert TX.mentions("a large red circle and a blue star") == [
      {"size": "large", "colour": "red", "shape": "circle"}, {"colour": "blue", "shape": "star"}]
  assert TX.colour_shape_pairs("make the red circle blue") == {("red", "circle")}


@pytest.mark.parametrize("qtype,answer,good,bad", [
    ("colour", "red", "It is red.", "It is blue."),
    ("shape", "star", "A star.", "A circle."),
    ("size", "large", "It is large.", "It is small."),
    ("count", "2", "There are two.", "There are 3."),
    ("count", "0", "There are none.", "One."),
    ("exist", "yes", "Yes.", "No, there is not."),
    ("exist", "no", "No.", "Yes, I can see it."),
    ("relation", "left", "It is to the left of the blue star.", "It is above the blue star."),
    ("motion", "static", "It does not move.", "It moves left."),
    ("motion", "down", "It moves down.", "Up."),
    ("change", "blue", "It turns from red to blue.", "It turns blue then red."),
    ("changes", "no", "No.", "Yes, it turns blue."),
    ("event", "yes", "Yes, it does.", "No."),
])
def test_qa_correct_and_wrong(qtype, answer, good, bad):
  truth = {"qtype": qtype, "answer": answer}
  assert A.qa_correct(good, truth) == 1.0
  assert A.qa_correct(bad, truth) == 0.0
  assert A.qa_correct("", truth) == 0.0


def test_qa_hedging_is_wrong():
  assert A.qa_correct("It is red or blue.", {"qtype": "colour", "answer": "red"}) == 0.0


def test_qa_accuracy_aggregates():
  truths = [{"qtype": "colour", "answer": "red"}, {"qtype": "colour", "answer": "blue"},
            {"qtype": "exist", "answer": "yes"}]
  out = A.qa_accuracy(["red", "red", "yes"], truths)
  assert out == {"colour": 0.5, "exist": 1.0, "all": pytest.approx(2 / 3)}
  with pytest.raises(ValueError, match="predictions"):
    A.qa_accuracy(["red"], truths)
  with pytest.raises(ValueError, match="unknown QA type"):
    A.qa_correct("x", {"qtype": "smell", "answer": "x"})


def test_chance_levels():
  assert A.QA_CHANCE["colour"] == 1 / 8 and A.QA_CHANCE["exist"] == 0.5
  assert A.count_chance(4) == 0.2
  objs = [{"colour": "red", "shape": "star", "size": "small"}]
  assert A.caption_chance(objs) == pytest.approx(1 / 56)
  assert A.caption_chance([]) == 0.0


def test_caption_scores():
  objs = [{"colour": "red", "shape": "circle", "size": "large"},
          {"colour": "blue", "shape": "star", "size": "small"}]
  perfect = A.caption_scores("A large red circle and a small blue star on a black background.",
                             objs)
  assert perfect == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "f1_size": 1.0}
  half = A.caption_scores("A large red circle and a green ring.", objs)
  assert half["precision"] == 0.5 and half["recall"] == 0.5 and half["f1"] == 0.5
  assert A.caption_scores("Nothing here.", objs)["f1"] == 0.0
  assert A.caption_scores("", [])["f1"] == 1.0


def test_region_caption_scores():
  obj = {"colour": "red", "shape": "circle", "size": "large"}
  assert A.region_caption_scores("It is a large red circle.", obj)["all"] == 1.0
  got = A.region_caption_scores("A small red square.", obj)
  assert got == {"colour": 1.0, "shape": 0.0, "size": 0.0, "all": 0.0}
  assert A.REGION_CHANCE["all"] == pytest.approx(1 / 8 * 1 / 7 * 1 / 3)


_TRUTHS = st.sampled_from([
    {"qtype": q, "answer": a} for q, a in [("colour", "red"), ("shape", "ring"), ("size", "small"),
                                            ("count", "3"), ("exist", "no"),
                                            ("relation", "below"), ("motion", "left"),
                                            ("change", "pink"), ("changes", "yes"),
                                            ("event", "no")]])
_JUNK = st.one_of(st.text(max_size=60), st.none(), st.integers(), st.binary(max_size=10),
                  st.lists(st.text(max_size=5), max_size=3))


@settings(max_examples=300, deadline=None)
@given(_JUNK, _TRUTHS)
def test_fuzz_free_text_never_crashes(pred, truth):
  assert A.qa_correct(pred, truth) in (0.0, 1.0)
  objs = [{"colour": "red", "shape": "circle", "size": "large"}]
  sc = A.caption_scores(pred, objs)
  assert all(0.0 <= v <= 1.0 for v in sc.values())
  assert all(0.0 <= v <= 1.0 for v in A.region_caption_scores(pred, objs[0]).values())
