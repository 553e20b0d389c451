"""The invocation grammar as a token automaton (`protocol.grammar`): it accepts every answer
PixelWorld expects, and whatever it lets a model write parses; constrained VITRON decoding."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vitron_testlib as lib
from vitron_jax.data import pixelworld_tokenizer as PT
from vitron_jax.data.pixelworld import TASKS, PixelWorld, WorldConfig
from vitron_jax.models.vitron import Vitron
from vitron_jax.models.vitron_decoding import generate
from vitron_jax.protocol import grammar as G
from vitron_jax.protocol import invocation as I
from vitron_jax.protocol.tokenizer import decode_text, encode_model_text, protocol_ids


@functools.lru_cache(maxsize=1)
def pixelworld():
  tok = PT.load("pixelworld")
  vocab = len(tok) + 37  # padding rows past the tokenizer, as a padded LLM vocabulary has
  return tok, G.InvocationGrammar.from_tokenizer(tok, vocab, stop_tokens=(tok.eos_token_id,))


def _walk(grammar, ids, total):
  """Feed ids one by one with a budget of `total` tokens; the first refused index or None,
  and the final state."""
  allowed, advance = _jitted(grammar)
  state = grammar.init(1)
  for k, i in enumerate(ids):
    if not bool(allowed(state, total - 1 - k)[0, i]):
      return k, state
    state = advance(state, jnp.asarray([i]))
  return None, state


@functools.lru_cache(maxsize=4)
def _jitted(grammar):
  return jax.jit(grammar.allowed), jax.jit(grammar.advance)


def test_every_expected_pixelworld_answer_is_allowed_token_by_token():
  tok, grammar = pixelworld()
  world = PixelWorld(WorldConfig(image_size=32, num_frames=2, max_objects=3), split="train")
  seen = 0
  for sub in TASKS:
    for i in range(4):
      answer = world.sample(i, task=sub)["conversations"][1]["value"]
      ids = encode_model_text(tok, answer) + [tok.eos_token_id]
      refused, state = _walk(grammar, ids, total=len(ids))  # the exact budget it needs
      assert refused is None, (sub, answer, decode_text(tok, ids[:refused + 1]))
      assert int(state.mode[0]) == G.TEXT
      seen += I.find_invocation(answer) is not None
  assert seen > 20  # the walk went through invocations, not only free text


def _constrained_samples(grammar, logits_fn, steps, batch, first=None, seed=0):
  """Sample `steps` tokens per row from `logits_fn(key) -> [B, V]` under the grammar."""
  allowed, advance = _jitted(grammar)
  state, rows = grammar.init(batch), []
  key = jax.random.key(seed)
  for k in range(steps):
    key, sub = jax.random.split(key)
    logits = jnp.where(allowed(state, steps - 1 - k), logits_fn(sub), -jnp.inf)
    tok = jax.random.categorical(sub, logits).astype(jnp.int32)
    if k == 0 and first is not None:
      tok = jnp.full((batch,), first, jnp.int32)
    state = advance(state, tok)
    rows.append(np.asarray(tok))
  return np.stack(rows, 1), state


@pytest.mark.parametrize("steps", [8, 14, 40])
def test_whatever_the_grammar_allows_parses(steps):
  tok, grammar = pixelworld()
  ids = protocol_ids(tok)
  vocab = grammar.vocab_size
  # logits that favour protocol tokens, so that random rows go through every branch
  bias = np.zeros(vocab, np.float32)
  bias[list(ids.locs)] = -2.0
  bias[[ids.region_open, ids.region_close, ids.inv_close, ids.cmd_close]] = 3.0
  bias[list(ids.times)] = 1.0
  logits_fn = lambda key: jax.random.normal(key, (48, vocab)) * 3.0 + bias
  tokens, _ = _constrained_samples(grammar, logits_fn, steps, 48, first=ids.inv_open,
                                   seed=steps)
  kinds = set()
  for row in tokens:
    text = decode_text(tok, [int(t) for t in row])
    inv = I.find_invocation(text)
    assert isinstance(inv, I.Invocation), (text, inv)
    kinds.add((bool(inv.boxes), inv.time_span is not None))
  if steps == 40:  # random rows reached boxes, time spans and plain commands
    assert len(kinds) >= 3, kinds


def test_boxes_keep_their_corners_in_order_and_regions_their_cap():
  tok, _ = pixelworld()
  ids = protocol_ids(tok)
  grammar = G.InvocationGrammar.from_tokenizer(tok, len(tok), stop_tokens=(tok.eos_token_id,),
                                               max_boxes=1)
  head = [ids.inv_open, ids.modules[2], ids.cmd_open, tok.convert_tokens_to_ids("red"),
          ids.cmd_close, ids.region_open, ids.locs[500], ids.locs[300]]
  refused, state = _walk(grammar, head, total=64)
  assert refused is None
  ok = np.asarray(grammar.allowed(state, 60))[0]
  locs = np.asarray(ids.locs)
  assert not ok[locs[:500]].any() and ok[locs[500:]].all()  # x2 >= x1
  assert not ok[ids.region_close] and not ok[tok.eos_token_id]
  refused, state = _walk(grammar, head + [ids.locs[600], ids.locs[299]], total=64)
  assert refused == 9  # y2 < y1
  _, state = _walk(grammar, head + [ids.locs[600], ids.locs[400]], total=64)
  ok = np.asarray(grammar.allowed(state, 60))[0]
  assert not ok[locs].any()  # max_boxes=1 reached: only the time span or the close remain
  assert ok[ids.region_close] and ok[list(ids.times)].all()


def test_the_token_budget_closes_what_was_opened():
  tok, grammar = pixelworld()
  ids = protocol_ids(tok)
  red = tok.convert_tokens_to_ids("red")
  opened = [ids.inv_open, ids.modules[0], ids.cmd_open, red]
  _, state = _walk(grammar, opened, total=64)
  ok = np.asarray(grammar.allowed(state, 1))[0]  # two tokens in all: </cmd> </inv>
  assert ok.sum() == 1 and ok[ids.cmd_close]
  _, state = _walk(grammar, [ids.inv_open], total=64)
  assert not np.asarray(grammar.allowed(grammar.init(1), 4))[0, ids.inv_open]  # needs 5 more
  assert np.asarray(grammar.allowed(grammar.init(1), 5))[0, ids.inv_open]
  # a refused (e.g. forced) token drops the row back to free text
  state = grammar.advance(state, jnp.asarray([red]))
  assert int(state.mode[0]) == G.TEXT


def test_bad_grammar_inputs_are_named():
  tok, _ = pixelworld()
  ids = protocol_ids(tok)
  with pytest.raises(ValueError, match="outside the vocabulary"):
    G.InvocationGrammar.from_ids(ids, 100)
  with pytest.raises(ValueError, match="max_boxes"):
    G.InvocationGrammar.from_tokenizer(tok, len(tok), max_boxes=0)
  cfg = lib.config("hybrid")
  params = lib.params(cfg)
  prompt, _ = lib.conversation(cfg, None, "what is this?")
  batch = lib.builder(cfg).pack([prompt], len(prompt["input_ids"]), side="left")
  batch["images"] = lib.images(1, cfg)
  with pytest.raises(ValueError, match="grammar covers"):
    generate(Vitron(cfg), params, batch, max_new_tokens=4,
             grammar=G.InvocationGrammar.from_tokenizer(tok, len(tok)))


def test_constrained_vitron_decoding_writes_parseable_invocations():
  """A random tiny VITRON sampling at temperature 1 (byte-level tokenizer): unconstrained, the
  invocations it is made to open do not parse; under the grammar every one does, and the
  query slots still run after its `</inv>`."""
  cfg = lib.config("hybrid")
  params = lib.params(cfg)
  tok = lib.tokenizer()
  prompt, _ = lib.conversation(cfg, None, "what is this?")
  batch = lib.builder(cfg).pack([prompt] * 8, len(prompt["input_ids"]), side="left")
  batch["images"] = lib.images(8, cfg)
  n = 24
  forced = np.full((8, n), -1, np.int32)
  forced[:, 0] = protocol_ids(tok).inv_open
  grammar = G.InvocationGrammar.from_tokenizer(tok, cfg.llm.vocab_size,
                                               stop_tokens=(tok.eos_token_id,))
  parsed = {}
  for name, g in (("free", None), ("grammar", grammar)):
    out = generate(Vitron(cfg), params, batch, max_new_tokens=n, forced_tokens=forced,
                   temperature=1.0, rng=jax.random.key(5), grammar=g,
                   stop_tokens=(tok.eos_token_id,))
    texts = [decode_text(tok, [int(t) for t in row[:k]])
             for row, k in zip(np.asarray(out.tokens), np.asarray(out.lengths))]
    parsed[name] = [I.find_invocation(t) for t in texts]
    if g is not None:
      heads = [cfg.head.index(i.module) if i.module in cfg.head.modules else -1
               for i in parsed[name]]
      np.testing.assert_array_equal(np.asarray(out.signal_modules)[:, 0], heads)
  assert not any(isinstance(p, I.Invocation) for p in parsed["free"])
  assert all(isinstance(p, I.Invocation) for p in parsed["grammar"]), parsed["grammar"]
