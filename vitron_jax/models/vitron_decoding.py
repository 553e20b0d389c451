"""Cached decoding for VITRON, with the query bank fed in one extra jitted step.

    out = generate(model, params, prompt_batch, max_new_tokens=64)
    out.tokens        # [B, N] generated ids (pad after a stop token)
    out.signals       # [B, max_invocations, K_max, D] hidden states at the query slots
    out.signal_valid  # [B, max_invocations, K_max];  out.signal_modules [B, max_invocations]

The prompt batch goes through `Vitron.embed_inputs`, the same assembly path as training
(left-padded: `attention_mask[:, -1]` all True). Inside one `lax.while_loop` each step feeds the
last token; when that token is an invocation's trigger (`</inv>`, or a module token in
"superlink" routing) for some rows, a `lax.cond` feeds those rows' K query embeddings (the bank
of the module last named in the answer) into the KV cache in one step, records the final-norm
hidden states there, and takes the next token from the logits at the last query slot. The other
rows' query slots are padding (invalid in the cache, never attended), so every row sees exactly
the sequence it would see in training. Positions count real tokens only.

`forced_tokens` `[B, N]` (-1 = sample) teacher-forces tokens, e.g. to score an answer or to
check that decoding reproduces the training forward. With a `grammar`
(`protocol.grammar.InvocationGrammar`) every sampled token is one the invocation grammar
allows, within the tokens left: an invocation the model opens is always parseable and closed.
"""
from __future__ import annotations

import functools
from typing import Any, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vitron_jax.models.decoding import SamplingConfig, sample_logits
from vitron_jax.models.llama import init_cache
from vitron_jax.models.vitron import Vitron, check_batch
from vitron_jax.models.vitron_config import VitronConfig
from vitron_jax.protocol.grammar import InvocationGrammar


class VitronGenerateOutput(NamedTuple):
  tokens: jax.Array          # [B, N] int32
  lengths: jax.Array         # [B] int32, the stop token included
  signals: jax.Array         # [B, I, K_max, D]
  signal_valid: jax.Array    # [B, I, K_max] bool
  signal_modules: jax.Array  # [B, I] int32 head module index, -1 = none
  num_invocations: jax.Array  # [B] int32 (may exceed I: the extra ones got no queries)


def _module_index(config: VitronConfig, tok: jax.Array) -> tuple[jax.Array, jax.Array]:
  """`[B]` token ids -> (is any module token `[B]` bool, head module index or -1 `[B]`)."""
  ids = jnp.asarray(config.module_ids, jnp.int32)
  eq = tok[:, None] == ids[None]
  any_module = jnp.any(tok[:, None] == jnp.asarray(config.slot_ids.modules)[None], -1)
  return any_module, jnp.where(eq.any(-1), jnp.argmax(eq, -1), -1).astype(jnp.int32)


def _decode(config: VitronConfig, params: Any, batch: Mapping[str, Any], rng: jax.Array,
            forced: jax.Array, *, max_new_tokens: int, max_invocations: int,
            sampling: SamplingConfig, stop_tokens: tuple[int, ...],
            pad_token_id: int, grammar: InvocationGrammar | None) -> VitronGenerateOutput:
  model = Vitron(config)
  variables = {"params": params}
  head = config.head
  k = head.k_max
  mask = batch["attention_mask"].astype(bool)
  b, p = mask.shape
  d = config.llm.hidden_size
  cache = init_cache(config.llm, b, p + max_new_tokens + max_invocations * k)
  stops = jnp.asarray(stop_tokens or (-1,), jnp.int32)

  # under the grammar an invocation closes one token early when `</inv>` triggers the query
  # slots, so that the loop still feeds it and the slots run
  reserve = 1 if head.uses_signals else 0

  def pick(i, logits, rng, gstate):
    if grammar is not None:
      left = jnp.maximum(max_new_tokens - 1 - reserve - i, 0)
      logits = jnp.where(grammar.allowed(gstate, left), logits, -jnp.inf)
    tok = sample_logits(logits, rng, sampling)
    f = forced[:, i]
    tok = jnp.where(f >= 0, f, tok).astype(jnp.int32)
    return tok, (grammar.advance(gstate, tok) if grammar is not None else gstate)

  emb, _ = model.apply(variables, batch, method=Vitron.embed_inputs)
  out = model.apply(variables, emb, mask, cache, "last", method=Vitron.decode_embeds)
  rng, sub = jax.random.split(rng)
  tok, gstate = pick(0, out.logits[:, -1], sub, grammar.init(b) if grammar is not None else ())
  done = jnp.any(tok[:, None] == stops[None], -1)
  tokens = jnp.full((b, max_new_tokens), pad_token_id, jnp.int32).at[:, 0].set(tok)
  signals = jnp.zeros((b, max_invocations, max(k, 1), d), out.hidden_states.dtype)
  sig_valid = jnp.zeros((b, max_invocations, max(k, 1)), bool)
  sig_mod = jnp.full((b, max_invocations), -1, jnp.int32)
  state = dict(i=jnp.asarray(1, jnp.int32), cache=out.cache, tok=tok, done=done, tokens=tokens,
               lengths=jnp.ones((b,), jnp.int32), rng=rng,
               module=jnp.full((b,), -1, jnp.int32), n_inv=jnp.zeros((b,), jnp.int32),
               signals=signals, sig_valid=sig_valid, sig_mod=sig_mod, grammar=gstate)

  def cond(s):
    return (s["i"] < max_new_tokens) & ~jnp.all(s["done"])

  def body(s):
    tok_emb = model.apply(variables, s["tok"][:, None], method=Vitron.embed_tokens)
    o = model.apply(variables, tok_emb, None, s["cache"], "last", method=Vitron.decode_embeds)
    logits, cache = o.logits[:, -1], o.cache
    named, mod = _module_index(config, s["tok"])
    module = jnp.where(named, mod, s["module"])  # a module without a head resets to -1
    if head.routing == "superlink":
      trigger = mod >= 0
    else:
      trigger = s["tok"] == config.slot_ids.inv_close
    trigger = trigger & (module >= 0) & ~s["done"] & (s["n_inv"] < max_invocations)
    if not head.uses_signals:
      trigger = jnp.zeros_like(trigger)
    slot = jnp.minimum(s["n_inv"], max_invocations - 1)

    def run_queries(args):
      cache, logits = args
      bank, valid = model.apply(variables, module, method=Vitron.query_bank)
      valid = valid & trigger[:, None]
      oq = model.apply(variables, bank, valid, cache, "all", method=Vitron.decode_embeds)
      last = jnp.maximum(jnp.sum(valid, -1) - 1, 0)
      q_logits = jnp.take_along_axis(oq.logits, last[:, None, None], axis=1)[:, 0]
      logits = jnp.where(trigger[:, None], q_logits.astype(logits.dtype), logits)
      return oq.cache, logits, oq.hidden_states, valid

    def skip(args):
      cache, logits = args
      return cache, logits, jnp.zeros((b, k, d), out.hidden_states.dtype), jnp.zeros((b, k), bool)

    if head.uses_signals:
      cache, logits, hq, qvalid = jax.lax.cond(jnp.any(trigger), run_queries, skip,
                                               (cache, logits))
      rows = jnp.arange(b)
      put = lambda arr, new: arr.at[rows, slot].set(
          jnp.where(trigger.reshape((b,) + (1,) * (new.ndim - 1)), new, arr[rows, slot]))
      signals, sig_valid = put(s["signals"], hq), put(s["sig_valid"], qvalid)
      sig_mod = put(s["sig_mod"], module)
    else:
      signals, sig_valid, sig_mod = s["signals"], s["sig_valid"], s["sig_mod"]
    rng, sub = jax.random.split(s["rng"])
    nxt, gstate = pick(s["i"], logits, sub, s["grammar"])
    nxt = jnp.where(s["done"], pad_token_id, nxt)
    tokens = jax.lax.dynamic_update_slice(s["tokens"], nxt[:, None], (0, s["i"]))
    lengths = s["lengths"] + (~s["done"]).astype(jnp.int32)
    done = s["done"] | jnp.any(nxt[:, None] == stops[None], -1)
    return dict(i=s["i"] + 1, cache=cache, tok=nxt, done=done, tokens=tokens, lengths=lengths,
                rng=rng, module=module, n_inv=s["n_inv"] + trigger.astype(jnp.int32),
                signals=signals, sig_valid=sig_valid, sig_mod=sig_mod, grammar=gstate)

  s = jax.lax.while_loop(cond, body, state)
  sig, sv = s["signals"][:, :, :k], s["sig_valid"][:, :, :k]
  return VitronGenerateOutput(s["tokens"], s["lengths"], sig, sv, s["sig_mod"], s["n_inv"])


@functools.lru_cache(maxsize=16)
def _compiled(config: VitronConfig, max_new_tokens: int, max_invocations: int,
              sampling: SamplingConfig, stop_tokens: tuple[int, ...], pad_token_id: int,
              grammar: InvocationGrammar | None):
  return jax.jit(functools.partial(_decode, config, max_new_tokens=max_new_tokens,
                                   max_invocations=max_invocations, sampling=sampling,
                                   stop_tokens=stop_tokens, pad_token_id=pad_token_id,
                                   grammar=grammar))


def generate(model: Vitron, params: Any, batch: Mapping[str, Any], *, max_new_tokens: int,
             max_invocations: int = 1, rng: jax.Array | None = None, temperature: float = 0.0,
             top_p: float = 1.0, stop_tokens: Sequence[int] | None = None,
             pad_token_id: int | None = None, forced_tokens: Any = None,
             grammar: InvocationGrammar | None = None) -> VitronGenerateOutput:
  """Generate after a left-padded prompt batch (see the module docstring)."""
  config = model.config
  sampling = SamplingConfig(float(temperature), float(top_p))
  for name, v in (("max_new_tokens", max_new_tokens), ("max_invocations", max_invocations)):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
      raise ValueError(f"{name} must be a positive integer, got {v!r}")
  if "input_ids" not in batch or "attention_mask" not in batch:
    raise ValueError("generate: the prompt batch needs input_ids and attention_mask")
  mask = np.asarray(batch["attention_mask"]).astype(bool)
  if mask.ndim != 2 or not mask[:, -1].all():
    raise ValueError("attention_mask must be [batch, length] and left-padded: the last prompt "
                     "position of every sequence must be a real token")
  b = mask.shape[0]
  if forced_tokens is None:
    forced_tokens = np.full((b, max_new_tokens), -1, np.int32)
  forced_tokens = np.asarray(forced_tokens, np.int32)
  if forced_tokens.shape != (b, max_new_tokens):
    raise ValueError(f"forced_tokens must be [batch, max_new_tokens] = {(b, max_new_tokens)}, "
                     f"got {forced_tokens.shape}")
  if (forced_tokens >= config.llm.vocab_size).any() or (forced_tokens < -1).any():
    raise ValueError(f"forced_tokens must be -1 (sample) or ids in [0, "
                     f"{config.llm.vocab_size})")
  stop = tuple(int(t) for t in (config.llm.stop_tokens if stop_tokens is None else stop_tokens))
  if pad_token_id is None:
    pad_token_id = config.llm.pad_token_id if config.llm.pad_token_id is not None else (
        stop[0] if stop else 0)
  if sampling.temperature > 0 and rng is None:
    raise ValueError("generate: sampling (temperature > 0) needs an `rng` key")
  rng = jax.random.key(0) if rng is None else rng
  if grammar is not None and grammar.vocab_size != config.llm.vocab_size:
    raise ValueError(f"grammar covers {grammar.vocab_size} token ids, the LLM's vocabulary "
                     f"has {config.llm.vocab_size}")
  prompt = dict(batch)
  prompt.pop("query_mask", None)  # a prompt has no query slots yet
  prompt.pop("module_ids", None)
  check_batch(config, prompt)
  fn = _compiled(config, int(max_new_tokens), int(max_invocations), sampling, stop,
                 int(pad_token_id), grammar)
  return fn(params, prompt, rng, jnp.asarray(forced_tokens))
