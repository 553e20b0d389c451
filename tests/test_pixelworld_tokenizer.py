"""The word-level PixelWorld tokenizer: complete stored vocabulary, stable ids, protocol tokens,
round trips of invocations, save / load."""
import concurrent.futures

import pytest

from vitron_jax.data import pixelworld_tokenizer as PT
from vitron_jax.data.pixelworld import TASKS, PixelWorld, WorldConfig
from vitron_jax.data.pixelworld import vocab as V
from vitron_jax.data.pixelworld_words import WORDS
from vitron_jax.protocol import invocation as inv_lib
from vitron_jax.protocol import tokens as T
from vitron_jax.protocol.tokenizer import (decode_text, encode_model_text, encode_user_text,
                                           protocol_ids)


@pytest.fixture(scope="module")
def tok():
  return PT.build_tokenizer()


def _samples(n=20):
  cfg = WorldConfig(image_size=32, num_frames=2)
  for split in ("train", "val", "heldout"):
    world = PixelWorld(cfg, split=split)
    for task in TASKS:
      for i in range(n):
        yield world.sample(i, task=task)


def test_stored_word_list_is_complete_and_sorted():
  got = PT.collect_vocabulary(samples_per_task=10)
  assert got, "collect_vocabulary found no words"
  missing = sorted(got - set(WORDS))
  assert not missing, f"words of fresh samples missing from pixelworld_words.WORDS: {missing}"
  assert list(WORDS) == sorted(set(WORDS)), "WORDS must be sorted and unique"
  assert not set(WORDS) & set(PT.CONTROL)


def test_fresh_samples_encode_without_unk(tok):
  unk = tok.unk_token_id
  assert unk == 3
  n = 0
  for s in _samples(20):
    for turn in s["conversations"]:
      ids = encode_model_text(tok, turn["value"])
      assert ids and unk not in ids, (s["id"], s["subtask"], turn["value"],
                                      tok.convert_ids_to_tokens(ids))
      n += 1
  assert n == 3 * len(TASKS) * 20 * 2


def test_every_count_answer_word_is_known(tok):
  """Counts 0..10 are rare in samples (e.g. "Zero.", "I count seven.") but must not be <unk>."""
  for n in V.NUMBER_WORDS:
    for text in (f"{n.capitalize()}.", f"I count {n}.", f"There are {n}."):
      assert tok.unk_token_id not in encode_model_text(tok, text), text


def test_concurrent_encoding_is_consistent(tok):
  """grain runs transforms in threads on one tokenizer; user and model encodings must not mix
  (an HF fast tokenizer keeps split_special_tokens as shared state)."""
  model = ("Sure. <inv><seg_image><cmd>the square</cmd><region><loc0543><loc0032><loc0863>"
           "<loc0352></region></inv>")
  user = "Draw a <inv> red circle and a blue star"
  want_m, want_u = encode_model_text(tok, model), encode_user_text(tok, user)
  assert protocol_ids(tok).inv_open in want_m and protocol_ids(tok).inv_open not in want_u

  def job(i):
    bad = 0
    for _ in range(150):
      try:
        got = encode_model_text(tok, model) if i % 2 else encode_user_text(tok, user)
      except ValueError:
        got = None
      bad += got != (want_m if i % 2 else want_u)
    return bad

  with concurrent.futures.ThreadPoolExecutor(8) as ex:
    assert sum(ex.map(job, range(8))) == 0


def test_unknown_word_becomes_unk_not_dropped(tok):
  ids = encode_model_text(tok, "a zorblax circle")
  assert tok.convert_ids_to_tokens(ids) == ["a", "<unk>", "circle"]


def test_control_ids_and_stable_vocab(tok):
  assert tok.convert_ids_to_tokens([0, 1, 2, 3]) == ["<pad>", "<s>", "</s>", "<unk>"]
  assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
  # the words come right after the control tokens, in WORDS order
  assert tok.convert_ids_to_tokens(list(range(4, 4 + len(WORDS)))) == list(WORDS)
  again = PT.build_tokenizer()
  assert again.get_vocab() == tok.get_vocab()
  assert len(again) == len(tok) == 4 + len(WORDS) + len(T.all_special_tokens())
  assert protocol_ids(again) == protocol_ids(tok)
  plain = PT.build_tokenizer(with_protocol=False)
  assert len(plain) == 4 + len(WORDS)
  with pytest.raises(ValueError, match="protocol token"):
    protocol_ids(plain)


def test_protocol_tokens_are_single_ids(tok):
  ids = protocol_ids(tok)
  assert min(ids.all) >= 4 + len(WORDS)  # added on top of the words
  assert len(ids.all) == len(T.all_special_tokens())
  for t in T.all_special_tokens():
    enc = encode_model_text(tok, t)
    assert len(enc) == 1 and enc[0] in ids.all, (t, enc)
  assert encode_model_text(tok, "<inv>") == [ids.inv_open]
  assert encode_model_text(tok, T.MODULE_TOKENS["segment_image"]) == [
      ids.module_token_id("segment_image")]


@pytest.mark.parametrize("text", [
    "<inv>", "Draw a <inv> red circle", "please <inv><seg_image><cmd>x</cmd></inv> <image> </s>",
    "<loc0001><t00><roi><video>", "hello <s> <pad> <unk>"])
def test_user_text_never_yields_protocol_or_control_ids(tok, text):
  ids = encode_user_text(tok, text)
  assert ids
  assert not protocol_ids(tok).all.intersection(ids), tok.convert_ids_to_tokens(ids)
  assert not {0, 1, 2}.intersection(ids)  # <unk> (3) is allowed: an unknown word
  # the same text as model text does hold protocol ids (when it has a protocol token)
  if any(t in text for t in T.all_special_tokens()):
    assert protocol_ids(tok).all.intersection(encode_model_text(tok, text))


def test_invocation_answers_round_trip(tok):
  seen = set()
  for s in _samples(5):
    gpt = s["conversations"][1]["value"]
    want = inv_lib.find_invocation(gpt)
    if want is None:
      continue
    assert isinstance(want, inv_lib.Invocation), (gpt, want)
    back = decode_text(tok, encode_model_text(tok, gpt))
    got = inv_lib.find_invocation(back)
    assert got == want, (gpt, back, got)
    seen.add(s["subtask"])
  assert seen >= {"ref_seg", "video_seg", "text_to_image", "text_to_video", "image_to_video",
                  "image_edit", "video_edit"}


def test_plain_answer_round_trip_modulo_spaces(tok):
  world = PixelWorld(WorldConfig(image_size=32, num_frames=2))
  for task in ("image_caption", "image_qa", "region_caption"):
    gpt = world.sample(3, task=task)["conversations"][1]["value"]
    back = decode_text(tok, encode_model_text(tok, gpt))
    assert back.replace(" ", "") == gpt.replace(" ", ""), (gpt, back)


def test_save_and_load(tok, tmp_path):
  folder = str(tmp_path / "tok")
  PT.save(tok, folder)
  again = PT.load(folder)
  assert len(again) == len(tok)
  assert protocol_ids(again) == protocol_ids(tok)
  for text in ("There is a medium blue star on a checkered background.",
               "Sure. <inv><seg_image><cmd>the square</cmd><region><loc0543><loc0032><loc0863>"
               "<loc0352></region></inv>", "a zorblax circle"):
    assert encode_model_text(again, text) == encode_model_text(tok, text)
  assert encode_user_text(again, "<inv> red") == encode_user_text(tok, "<inv> red")
  assert (again.pad_token_id, again.eos_token_id) == (tok.pad_token_id, tok.eos_token_id)
  assert PT.load("pixelworld").get_vocab() == tok.get_vocab()


def test_load_missing_folder_says_so():
  with pytest.raises(FileNotFoundError, match=r"no/such/folder.*pixelworld.*folder"):
    PT.load("no/such/folder")
