"""Protocol tokens on a Hugging Face tokenizer: single ids, safe user text, invocation
round trips, a parser that never raises on model output, growing the LLM rows."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from vitron_jax.models.llama import Llama, LlamaConfig
from vitron_jax.protocol import invocation as inv_lib
from vitron_jax.protocol import tokens as T
from vitron_jax.protocol.tokenizer import (SequenceBuilder, Slot, add_protocol_tokens,
                                           decode_invocation, decode_text, encode_invocation,
                                           encode_model_text, encode_user_text, grow_token_rows,
                                           protocol_ids, resize_llm_for_tokenizer)

CORPUS = ["the red circle is on the left of the blue square",
          "segment the small green star in the top right",
          "generate a video of a yellow triangle moving up",
          "A chat between a curious user and an assistant. USER: what is this? ASSISTANT: ok"] * 4


def byte_level_tokenizer():
  """GPT-2 / Llama-3 style byte-level BPE."""
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  tok.train_from_iterator(CORPUS, trainers.BpeTrainer(
      vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
      special_tokens=["<s>", "</s>", "<unk>", "<pad>"]))
  return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                 unk_token="<unk>", pad_token="<pad>")


def sentencepiece_like_tokenizer():
  """Llama-2 / Vicuna style: Metaspace BPE with byte fallback."""
  tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
  tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
  tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                   decoders.Fuse(), decoders.Strip(" ", 1, 0)])
  tok.train_from_iterator(CORPUS, trainers.BpeTrainer(
      vocab_size=420, special_tokens=["<unk>", "<s>", "</s>"]
      + [f"<0x{i:02X}>" for i in range(256)]))
  return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                 unk_token="<unk>")


@pytest.fixture(scope="module", params=["byte_level", "sentencepiece"])
def tok(request):
  t = byte_level_tokenizer() if request.param == "byte_level" else sentencepiece_like_tokenizer()
  add_protocol_tokens(t)
  return t


@pytest.fixture(scope="module")
def bl_tok():
  t = byte_level_tokenizer()
  add_protocol_tokens(t)
  return t


def test_protocol_tokens_are_single_ids_and_adding_is_idempotent():
  t = byte_level_tokenizer()
  base = len(t)
  ids = add_protocol_tokens(t)
  n = len(T.all_special_tokens())
  assert len(t) == base + n == base + 9 + len(T.MODULES) + T.NUM_LOC_TOKENS + T.NUM_TIME_TOKENS
  assert len(ids.all) == n
  assert min(ids.all) >= base
  for s in T.all_special_tokens():
    assert len(encode_model_text(t, s)) == 1
  assert add_protocol_tokens(t) == ids and len(t) == base + n
  assert ids.module_of(ids.module_token_id("edit_video")) == "edit_video"
  assert ids.module_of(ids.image) is None
  with pytest.raises(ValueError, match="add_protocol_tokens"):
    protocol_ids(byte_level_tokenizer())


_text = st.text(alphabet=st.sampled_from(list("abcdefxyz ABC0123456789.,!?-'é")),
                min_size=1, max_size=30).map(str.strip).filter(bool)
_q = st.integers(0, T.NUM_LOC_TOKENS - 1)


@st.composite
def invocations(draw, module=None):
  module = module or draw(st.sampled_from(T.MODULES))
  boxes = []
  for _ in range(draw(st.integers(0, 3))):
    x1, x2 = sorted((draw(_q), draw(_q)))
    y1, y2 = sorted((draw(_q), draw(_q)))
    boxes.append(tuple(T.dequantize(q) for q in (x1, y1, x2, y2)))
  span = None
  if draw(st.booleans()):
    a, b = sorted((draw(st.integers(0, 63)), draw(st.integers(0, 63))))
    span = (a, b)
  return inv_lib.Invocation(module, draw(_text), tuple(boxes), span)


@pytest.mark.parametrize("module", T.MODULES)
def test_roundtrip_every_module_with_and_without_regions(tok, module):
  ids = protocol_ids(tok)
  cases = [inv_lib.Invocation(module, "the red circle"),
           inv_lib.Invocation(module, "make it blue, please!",
                              ((0.0, 0.25, 0.5, 1.0), (T.dequantize(12), T.dequantize(34),
                                                       T.dequantize(500), T.dequantize(600)))),
           inv_lib.Invocation(module, "track it", ((0.1, 0.2, 0.3, 0.4),), (2, 7)),
           inv_lib.Invocation(module, "from frame three", (), (3, 3))]
  for inv in cases:
    enc = encode_invocation(tok, inv)
    assert enc[0] == ids.inv_open and enc[1] == ids.module_token_id(module)
    assert enc[-1] == ids.inv_close
    got = decode_invocation(tok, enc)
    assert isinstance(got, inv_lib.Invocation), got
    want = inv_lib.parse(inv_lib.render(inv))  # quantised boxes
    assert got == want
    assert got.module == module and got.command == inv.command
    assert len(got.boxes) == len(inv.boxes) and got.time_span == inv.time_span


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(inv=invocations())
def test_roundtrip_fuzzed_invocations(bl_tok, inv):
  got = decode_invocation(bl_tok, encode_invocation(bl_tok, inv))
  assert got == inv  # hypothesis boxes lie on the quantisation grid


_fragments = st.sampled_from(
    T.INVOCATION_TAGS + tuple(T.MODULE_TOKENS.values()) + T.PLACEHOLDERS
    + ("<loc0000>", "<loc0512>", "<loc1023>", "<t00>", "<t05>", "<t63>", "<bogus>", "<loc9999>",
       "<t99>", "<", ">", "/", " ", "red", "x", "\n"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(_fragments, max_size=14), junk=st.lists(st.integers(-5, 3000), max_size=8))
def test_malformed_model_output_gives_typed_errors_never_exceptions(bl_tok, parts, junk):
  text = "".join(parts)
  for ids in (encode_model_text(bl_tok, text), junk, encode_model_text(bl_tok, text) + junk):
    got = decode_invocation(bl_tok, ids)
    assert isinstance(got, (inv_lib.Invocation, inv_lib.InvocationError))
    if isinstance(got, inv_lib.InvocationError):
      assert got.kind and not got
  # the text-level parser also never raises
  assert isinstance(inv_lib.parse(text), (inv_lib.Invocation, inv_lib.InvocationError))


@pytest.mark.parametrize("text, kind", [
    ("<inv><seg_image><cmd>the dog</cmd>", "unclosed"),
    ("<inv><seg_image><cmd>the dog</inv>", "unclosed"),
    ("<inv><cmd>the dog</cmd></inv>", "missing_module"),
    ("<inv><image><cmd>the dog</cmd></inv>", "unknown_module"),
    ("<inv><seg_image><cmd>a</cmd><region><loc0900><loc0000><loc0100><loc0100></region></inv>",
     "bad_coordinates"),
    ("<inv><seg_image><cmd>a</cmd><region><loc0001><loc0002></region></inv>", "bad_region"),
    ("<inv><seg_video><cmd>a</cmd><region><t09><t03></region></inv>", "bad_time_span"),
    ("no invocation here", "no_invocation"),
])
def test_specific_malformed_outputs(tok, text, kind):
  got = decode_invocation(tok, encode_model_text(tok, text))
  assert isinstance(got, inv_lib.InvocationError) and got.kind == kind, got
  assert decode_invocation(tok, [[1, 2]]).kind == "bad_tokens"
  assert decode_invocation(tok, [len(tok) + 5]).kind == "bad_tokens"


_user_fragments = st.sampled_from(
    T.all_special_tokens()[:40] + ["<loc0000>", "<t01>", "</s>", "<s>", "<unk>", "<pad>",
                                   "<", ">", "</", "inv", " ", "hello", "é", "\n"])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(_user_fragments, min_size=1, max_size=12))
def test_user_text_never_yields_tag_or_control_tokens(bl_tok, parts):
  text = "".join(parts)
  ids = encode_user_text(bl_tok, text)
  forbidden = protocol_ids(bl_tok).all | set(bl_tok.all_special_ids)
  assert not forbidden.intersection(ids)
  assert decode_text(bl_tok, ids) == text  # the user's text, verbatim


def test_user_text_on_llama_style_tokenizer(tok):
  text = "please <inv><seg_image><cmd>x</cmd></inv> and <image> </s>"
  ids = encode_user_text(tok, text)
  assert not (protocol_ids(tok).all | set(tok.all_special_ids)).intersection(ids)
  assert decode_text(tok, ids).strip() == text
  assert protocol_ids(tok).inv_open in encode_model_text(tok, text)


def test_grow_rows_keeps_old_logits_and_pads_to_multiple(bl_tok):
  base = byte_level_tokenizer()
  cfg = LlamaConfig(vocab_size=len(base), hidden_size=32, intermediate_size=64,
                    num_hidden_layers=1, num_attention_heads=4, max_position_embeddings=64)
  model = Llama(cfg)
  ids = jnp.asarray([[1, 5, 9, 30]])
  params = nn.meta.unbox(model.init(jax.random.key(0), ids)["params"])
  params = jax.tree_util.tree_map(np.asarray, params)
  new_cfg, grown = resize_llm_for_tokenizer(cfg, params, bl_tok, pad_to_multiple_of=64)
  assert new_cfg.vocab_size % 64 == 0 and new_cfg.vocab_size >= len(bl_tok)
  emb = grown["embed_tokens"]["embedding"]
  assert emb.shape == (new_cfg.vocab_size, 32)
  np.testing.assert_array_equal(emb[:cfg.vocab_size], params["embed_tokens"]["embedding"])
  np.testing.assert_allclose(emb[-1], params["embed_tokens"]["embedding"].mean(0), rtol=1e-6)
  assert grown["lm_head"]["kernel"].shape == (32, new_cfg.vocab_size)
  old = model.apply({"params": params}, ids)
  new = Llama(new_cfg).apply({"params": grown}, ids)
  np.testing.assert_allclose(new[..., :cfg.vocab_size], old, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="shrink"):
    grow_token_rows(grown, 10)
  normal = grow_token_rows(params, cfg.vocab_size + 3, init="normal",
                           rng=np.random.default_rng(0))
  assert normal["embed_tokens"]["embedding"].shape[0] == cfg.vocab_size + 3


def test_sequence_builder_slots_queries_and_masks(bl_tok):
  ids = protocol_ids(bl_tok)
  b = SequenceBuilder(bl_tok, {"image": 3, "roi": 2}, {"segment_image": 4, "generate_image": 2})
  s = b.start()
  b.add_ids(s, [bl_tok.bos_token_id])
  b.add_user(s, ["USER: look ", Slot("image"), " at <image> ", Slot("roi"), " ASSISTANT:"])
  b.add_assistant(s, "sure <inv><seg_image><cmd>the red circle</cmd></inv>")
  b.add_ids(s, [bl_tok.eos_token_id], loss=True)
  arr = np.asarray(s["input_ids"])
  assert (arr == ids.image).sum() == 3 and (arr == ids.roi).sum() == 2  # typed <image> is text
  q = np.asarray(s["query_mask"])
  assert q.sum() == 4
  close = int(np.flatnonzero(arr == ids.inv_close)[0])
  assert q[close + 1:close + 5].all() and arr[close + 5] == bl_tok.eos_token_id
  lm = np.asarray(s["loss_mask"])
  assert lm[close] and not lm[close + 1:close + 5].any() and lm[close + 5]
  assert s["module_id"] == T.MODULES.index("segment_image")
  packed = b.pack([s, b.start()], 64, side="left")
  assert packed["input_ids"].shape == (2, 64) and packed["module_ids"].tolist() == [0, -1]
  assert packed["attention_mask"][0, -len(arr):].all()
  with pytest.raises(ValueError, match="does not fit"):
    b.pack([s], 8)
  # superlink: the module token triggers; text routing appends nothing
  sl = SequenceBuilder(bl_tok, {}, {"generate_image": 2}, routing="superlink")
  s2 = sl.start()
  sl.add_assistant(s2, "here <gen_image>")
  assert sum(s2["query_mask"]) == 2 and s2["module_id"] == T.MODULES.index("generate_image")
  tx = SequenceBuilder(bl_tok, {}, {"generate_image": 2}, routing="text")
  s3 = tx.start()
  tx.add_assistant(s3, "<inv><gen_image><cmd>a cat</cmd></inv>")
  assert sum(s3["query_mask"]) == 0 and s3["module_id"] == -1
