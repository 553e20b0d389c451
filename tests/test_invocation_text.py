"""Protocol text: special tokens, invocation render/parse, box tokens."""
import pytest
from hypothesis import given, settings, strategies as st

from vitron_jax.protocol import invocation as I
from vitron_jax.protocol import tokens as T


def test_special_tokens_ordered_and_unique():
  toks = T.all_special_tokens()
  assert len(toks) == len(set(toks))
  assert toks[:3] == ["<image>", "<video>", "<roi>"]
  assert toks[3:9] == ["<inv>", "</inv>", "<cmd>", "</cmd>", "<region>", "</region>"]
  assert toks[9:16] == list(T.MODULE_TOKENS.values())
  assert toks[16] == "<loc0000>" and toks[16 + 1023] == "<loc1023>"
  assert toks[-64] == "<t00>" and toks[-1] == "<t63>"
  assert len(toks) == 3 + 6 + 7 + 1024 + 64
  toks.append("x")  # a copy: the module's list is not mutated
  assert "x" not in T.all_special_tokens()


def test_module_mapping_round_trips():
  assert T.MODULES == ("segment_image", "segment_video", "generate_image", "edit_image",
                       "generate_video", "image_to_video", "edit_video")
  for m, t in T.MODULE_TOKENS.items():
    assert T.TOKEN_MODULES[t] == m and T.module_token(m) == t
  with pytest.raises(ValueError, match="unknown module"):
    T.module_token("segment")


def test_quantize_and_token_checks():
  assert T.quantize(0.0) == 0 and T.quantize(1.0) == 1023 and T.quantize(0.5) == 512
  assert T.loc_token(7) == "<loc0007>" and T.time_token(3) == "<t03>"
  for bad in (-0.1, 1.1, float("nan")):
    with pytest.raises(ValueError):
      T.quantize(bad)
  with pytest.raises(ValueError):
    T.loc_token(1024)
  with pytest.raises(ValueError):
    T.time_token(64)


def test_render_example_and_parse():
  inv = I.Invocation("segment_image", "the red circle",
                     ((12 / 1023, 34 / 1023, 500 / 1023, 600 / 1023),))
  text = I.render(inv)
  assert text == ("<inv><seg_image><cmd>the red circle</cmd><region><loc0012><loc0034>"
                  "<loc0500><loc0600></region></inv>")
  assert I.parse(text) == inv
  assert I.parse("  " + text.replace("><", "> <") + "\n") == inv  # whitespace tolerated
  video = I.Invocation("segment_video", "the ring", ((0.0, 0.0, 1.0, 1.0),), (2, 5))
  assert I.render(video).endswith("<loc1023><loc1023><t02><t05></region></inv>")
  assert I.parse(I.render(video)) == video
  bare = I.Invocation("generate_video", "a star moving left")
  assert I.render(bare) == "<inv><gen_video><cmd>a star moving left</cmd></inv>"


def test_invocation_validates_its_fields():
  with pytest.raises(ValueError, match="module"):
    I.Invocation("paint", "x")
  with pytest.raises(ValueError, match="command"):
    I.Invocation("edit_image", " ")
  with pytest.raises(ValueError, match="protocol tokens"):
    I.Invocation("edit_image", "make <inv> red")
  with pytest.raises(ValueError, match="x1 <= x2"):
    I.Invocation("edit_image", "x", ((0.5, 0.0, 0.4, 1.0),))
  with pytest.raises(ValueError, match="normalised"):
    I.Invocation("edit_image", "x", ((0.0, 0.0, 1.5, 1.0),))
  with pytest.raises(ValueError, match="time_span"):
    I.Invocation("segment_video", "x", (), (5, 2))


coord = st.integers(0, 1023)


@st.composite
def invocations(draw):
  module = draw(st.sampled_from(T.MODULES))
  words = draw(st.lists(st.text(st.characters(blacklist_characters="<>", codec="utf-8"),
                                min_size=1, max_size=8), min_size=1, max_size=5))
  command = " ".join(words).strip() or "x"
  boxes = []
  for _ in range(draw(st.integers(0, 3))):
    x = sorted(draw(st.tuples(coord, coord)))
    y = sorted(draw(st.tuples(coord, coord)))
    boxes.append((x[0] / 1023, y[0] / 1023, x[1] / 1023, y[1] / 1023))
  span = None
  if draw(st.booleans()):
    span = tuple(sorted(draw(st.tuples(st.integers(0, 63), st.integers(0, 63)))))
  return I.Invocation(module, command, tuple(boxes), span)


@settings(max_examples=300, deadline=None)
@given(invocations())
def test_render_parse_identity(inv):
  text = I.render(inv)
  assert I.parse(text) == inv
  assert I.find_invocation(f"Sure, here it is. {text} Anything else?") == inv
  rest, found = I.split_answer(f"Sure. {text} Done.")
  assert found == inv and rest == "Sure. Done."


@pytest.mark.parametrize("text,kind", [
    ("", "no_invocation"),
    ("hello", "no_invocation"),
    ("x <inv><seg_image><cmd>a</cmd></inv>", "leading_text"),
    ("<inv><seg_image><cmd>a</cmd>", "unclosed"),
    ("<inv><seg_image><cmd>a</inv>", "unclosed"),
    ("<inv><cmd>a</cmd></inv>", "missing_module"),
    ("<inv>segment<cmd>a</cmd></inv>", "missing_module"),
    ("<inv><seg_foo><cmd>a</cmd></inv>", "unknown_module"),
    ("<inv><seg_image>a</inv>", "missing_cmd"),
    ("<inv><seg_image><cmd>  </cmd></inv>", "empty_cmd"),
    ("<inv><seg_image><cmd>a <loc0001></cmd></inv>", "bad_cmd"),
    ("<inv><seg_image><cmd>a</cmd><region><loc0001></region></inv>", "bad_region"),
    ("<inv><seg_image><cmd>a</cmd><region></region></inv>", "bad_region"),
    ("<inv><seg_image><cmd>a</cmd><region>1 2 3 4</region></inv>", "bad_region"),
    ("<inv><seg_image><cmd>a</cmd><region><loc0500><loc0000><loc0100><loc0001></region></inv>",
     "bad_coordinates"),
    ("<inv><seg_image><cmd>a</cmd><region><loc0000><loc0000><loc2000><loc0001></region></inv>",
     "bad_coordinates"),
    ("<inv><seg_video><cmd>a</cmd><region><t05><t02></region></inv>", "bad_time_span"),
    ("<inv><seg_video><cmd>a</cmd><region><t05></region></inv>", "bad_time_span"),
    ("<inv><seg_video><cmd>a</cmd><region><t01><t02><loc0000></region></inv>", "bad_region"),
    ("<inv><seg_image><cmd>a</cmd><region><loc0000><loc0000><loc0001><loc0001></region>",
     "unclosed"),
    ("<inv><seg_image><cmd>a</cmd> junk</inv>", "trailing_text"),
    ("<inv><seg_image><cmd>a</cmd></inv> junk", "trailing_text"),
    ("<inv><inv><seg_image><cmd>a</cmd></inv>", "nested"),
])
def test_malformed_invocations_give_typed_errors(text, kind):
  got = I.parse(text)
  assert isinstance(got, I.InvocationError), got
  assert got.kind == kind, got
  assert not got


def test_replace_invocation_keeps_the_text_around_it():
  old = I.Invocation("edit_image", "remove the red circle", ((0.1, 0.1, 0.2, 0.2),))
  new = I.Invocation("edit_image", "remove the red circle", ((0.5, 0.5, 0.75, 0.75),))
  answer = f"Sure. {I.render(old)} Done. {I.render(old)}"
  got = I.replace_invocation(answer, new)
  assert got == f"Sure. {I.render(new)} Done. {I.render(old)}"  # the first one only
  assert I.render(I.find_invocation(got)) == I.render(new)
  for bad in ("no invocation here", "ok <inv><edit_image><cmd>a"):
    with pytest.raises(ValueError, match="no closed invocation"):
      I.replace_invocation(bad, new)


def test_find_invocation_none_and_errors():
  assert I.find_invocation("a red circle") is None
  assert I.find_invocation("ok <inv><seg_image><cmd>a") == I.InvocationError(
      "unclosed", "<inv> without </inv>")
  assert I.parse(None).kind == "not_text"
  assert I.find_invocation(3).kind == "not_text"


_ALPHABET = st.sampled_from(
    ["<inv>", "</inv>", "<cmd>", "</cmd>", "<region>", "</region>", "<seg_image>",
     "<seg_video>", "<loc0000>", "<loc1023>", "<loc0512>", "<loc9999>", "<t00>", "<t63>",
     "<t99>", "<", ">", " ", "a", "red", "<foo>", "\n", "</", "<loc", "<image>"])


@settings(max_examples=500, deadline=None)
@given(st.lists(_ALPHABET, max_size=30).map("".join))
def test_parse_never_raises_on_token_soup(text):
  for got in (I.parse(text), I.find_invocation(text), I.split_answer(text)[1]):
    assert got is None or isinstance(got, (I.Invocation, I.InvocationError))
    if isinstance(got, I.Invocation):  # anything accepted renders back to something parseable
      assert I.parse(I.render(got)) == got
  I.find_boxes(text)
  I.find_time_span(text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_parse_never_raises_on_text(text):
  assert isinstance(I.parse(text), I.InvocationError) or I.parse(text)
  I.find_invocation(text)


def test_box_token_helpers():
  box = (0.25, 0.5, 0.75, 1.0)
  toks = I.box_to_loc_tokens(box)
  assert toks == "<loc0256><loc0512><loc0767><loc1023>"
  back = I.loc_tokens_to_box(toks)
  assert all(abs(a - b) <= 0.5 / 1023 for a, b in zip(back, box))
  assert I.loc_tokens_to_box("<loc0256> <loc0512> <loc0767> <loc1023>") == back
  for bad in ("<loc0256><loc0512><loc0767>", "<loc0256><loc0512><loc0767><loc1024>",
              "<loc0900><loc0512><loc0767><loc1023>", "x", ""):
    with pytest.raises(ValueError):
      I.loc_tokens_to_box(bad)
  with pytest.raises(ValueError):
    I.box_to_loc_tokens((0.5, 0.5, 0.4, 0.6))
  assert I.find_boxes(f"a {toks} and <loc0001><loc0001><loc0000><loc0002> b") == [back]
  assert I.find_time_span("from <t02> to <t05>") == (2, 5)
  assert I.find_time_span("<t05><t02>") is None


def test_pixel_box_helpers():
  # a pixel box on a 64 px image survives tokens -> pixels exactly after rounding
  for box in [(0, 0, 64, 64), (3, 7, 20, 31), (63, 0, 64, 1)]:
    n = I.normalize_box(box, 64, 64)
    px = I.denormalize_box(I.loc_tokens_to_box(I.box_to_loc_tokens(n)), 64, 64)
    assert tuple(round(v) for v in px) == box
  with pytest.raises(ValueError):
    I.normalize_box((0, 0, 65, 10), 64, 64)
  with pytest.raises(ValueError):
    I.normalize_box((0, 0, 1, 1), 0, 64)
