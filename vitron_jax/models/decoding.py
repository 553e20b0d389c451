"""KV-cache generation for `Llama`: prefill, then one jitted `lax.while_loop` of single steps.

    out = generate(module, params, prompt_ids, attention_mask, max_new_tokens=32)
    out.tokens   # [B, max_new_tokens]: generated ids, `pad_token_id` after a stop token
    out.lengths  # [B]: generated tokens per sequence, the stop token included

Greedy (`temperature=0`), temperature and nucleus (`top_p`) sampling. Prompts of unequal
length are left-padded (`attention_mask` False on the left); positions are counted over real
tokens, so a padded prompt gives the tokens it gives alone. Every sequence stops on its own at
any of `stop_tokens` (default: the config's eos ids); the loop ends when all have stopped or
`max_new_tokens` are out. The cache is static: `[layers, B, prompt + max_new_tokens, ...]`.
A prompt may also be given as embeddings (`inputs_embeds`, e.g. with visual tokens spliced
in); the ids that follow are embedded by the model.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vitron_jax.models.llama import Llama, LlamaConfig, init_cache, unstack_layers
from vitron_jax.nn.checks import check_token_ids


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """`temperature == 0` is greedy; `top_p < 1` keeps the smallest set of tokens whose
  probability reaches `top_p` (the most likely token always stays)."""
  temperature: float = 0.0
  top_p: float = 1.0

  def __post_init__(self):
    if not self.temperature >= 0.0:
      raise ValueError(f"temperature must be >= 0, got {self.temperature}")
    if not 0.0 < self.top_p <= 1.0:
      raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


class GenerateOutput(NamedTuple):
  tokens: jax.Array   # [B, max_new_tokens] int32
  lengths: jax.Array  # [B] int32


def sample_logits(logits: jax.Array, rng: jax.Array, sampling: SamplingConfig) -> jax.Array:
  """`[B, vocab]` logits -> `[B]` int32 token ids."""
  logits = logits.astype(jnp.float32)
  if sampling.temperature == 0.0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits / sampling.temperature
  if sampling.top_p < 1.0:
    sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # mass of strictly more likely tokens
    keep = before < sampling.top_p
    threshold = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1, keepdims=True)
    logits = jnp.where(logits >= threshold, logits, -jnp.inf)
  return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


def _decode(config: LlamaConfig, params: Any, input_ids: jax.Array | None,
            inputs_embeds: jax.Array | None, attention_mask: jax.Array, rng: jax.Array, *,
            max_new_tokens: int, sampling: SamplingConfig, stop_tokens: tuple[int, ...],
            pad_token_id: int) -> GenerateOutput:
  if config.scan_layers:  # per-layer weights as loop constants: no per-step slicing of stacks
    params = unstack_layers(params, config.num_hidden_layers)
  config = config.replace(scan_layers=False, remat_policy="none")
  model = Llama(config)
  variables = {"params": params}
  b, prompt_len = attention_mask.shape
  cache = init_cache(config, b, prompt_len + max_new_tokens)
  stops = jnp.asarray(stop_tokens or (-1,), jnp.int32)

  def is_stop(tok):
    return jnp.any(tok[:, None] == stops[None, :], axis=-1)

  out = model.apply(variables, input_ids, inputs_embeds=inputs_embeds,
                    attention_mask=attention_mask, cache=cache, logits="last",
                    method=Llama.forward)
  rng, sub = jax.random.split(rng)
  tok = sample_logits(out.logits[:, -1], sub, sampling)
  done = is_stop(tok)
  tokens = jnp.full((b, max_new_tokens), pad_token_id, jnp.int32).at[:, 0].set(tok)
  lengths = jnp.ones((b,), jnp.int32)

  def cond(state):
    i, _, _, done, *_ = state
    return (i < max_new_tokens) & ~jnp.all(done)

  def body(state):
    i, cache, tok, done, tokens, lengths, rng = state
    o = model.apply(variables, tok[:, None], cache=cache, logits="last", method=Llama.forward)
    rng, sub = jax.random.split(rng)
    nxt = sample_logits(o.logits[:, -1], sub, sampling)
    nxt = jnp.where(done, pad_token_id, nxt)
    tokens = jax.lax.dynamic_update_slice(tokens, nxt[:, None], (0, i))
    lengths = lengths + (~done).astype(jnp.int32)
    done = done | is_stop(nxt)
    return i + 1, o.cache, nxt, done, tokens, lengths, rng

  state = (jnp.asarray(1, jnp.int32), out.cache, tok, done, tokens, lengths, rng)
  state = jax.lax.while_loop(cond, body, state)
  return GenerateOutput(state[4], state[5])


@functools.lru_cache(maxsize=32)
def _compiled(config: LlamaConfig, max_new_tokens: int, sampling: SamplingConfig,
              stop_tokens: tuple[int, ...], pad_token_id: int):
  return jax.jit(functools.partial(_decode, config, max_new_tokens=max_new_tokens,
                                   sampling=sampling, stop_tokens=stop_tokens,
                                   pad_token_id=pad_token_id))


def generate(module: Llama, params: Any, input_ids: Any = None,
             attention_mask: Any = None, *, max_new_tokens: int,
             inputs_embeds: Any = None, rng: jax.Array | None = None,
             temperature: float = 0.0, top_p: float = 1.0,
             stop_tokens: Sequence[int] | None = None,
             pad_token_id: int | None = None) -> GenerateOutput:
  """Generate up to `max_new_tokens` after a (left-padded) prompt, in one jitted call.

  input_ids `[B, P]` int, or inputs_embeds `[B, P, embed]`; attention_mask `[B, P]` bool
  (default all True) must be left-padded (its last column all True). `rng` is needed when
  sampling (`temperature > 0`). Returns `GenerateOutput(tokens [B, N], lengths [B])`.
  """
  config = module.config
  sampling = SamplingConfig(float(temperature), float(top_p))
  if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) \
      or max_new_tokens < 1:
    raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
  if (input_ids is None) == (inputs_embeds is None):
    raise ValueError("generate: give exactly one of input_ids and inputs_embeds")
  if input_ids is not None:
    check_token_ids(input_ids, config.vocab_size, "input_ids")
    if np.ndim(input_ids) != 2:
      raise ValueError(f"input_ids must be [batch, length], got shape {np.shape(input_ids)}")
    input_ids = jnp.asarray(input_ids, jnp.int32)
    shape = input_ids.shape
  else:
    inputs_embeds = jnp.asarray(inputs_embeds)
    if inputs_embeds.ndim != 3 or inputs_embeds.shape[-1] != config.hidden_size:
      raise ValueError(f"inputs_embeds must be [batch, length, {config.hidden_size}], got "
                       f"shape {inputs_embeds.shape}")
    shape = inputs_embeds.shape[:2]
  if attention_mask is None:
    attention_mask = np.ones(shape, bool)
  attention_mask = np.asarray(attention_mask).astype(bool)
  if attention_mask.shape != tuple(shape):
    raise ValueError(f"attention_mask must have the prompt's shape {tuple(shape)}, got "
                     f"{attention_mask.shape}")
  if not attention_mask[:, -1].all():
    raise ValueError("attention_mask must be left-padded: the last prompt position of every "
                     "sequence must be a real token")
  stop = tuple(int(t) for t in (config.stop_tokens if stop_tokens is None else stop_tokens))
  check_token_ids(np.asarray(stop, np.int64), config.vocab_size, "stop_tokens")
  if pad_token_id is None:
    pad_token_id = config.pad_token_id if config.pad_token_id is not None else (
        stop[0] if stop else 0)
  check_token_ids(np.asarray([pad_token_id]), config.vocab_size, "pad_token_id")
  if sampling.temperature > 0 and rng is None:
    raise ValueError("generate: sampling (temperature > 0) needs an `rng` key")
  if rng is None:
    rng = jax.random.key(0)
  fn = _compiled(config, int(max_new_tokens), sampling, stop, int(pad_token_id))
  return fn(params, input_ids, inputs_embeds, jnp.asarray(attention_mask), rng)
