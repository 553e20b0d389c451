"""The Llama decoder (Llama-2 / Vicuna architecture) in Flax linen, and its configuration.

Parameter names mirror transformers' `LlamaForCausalLM` so that conversion is a rename plus a
transpose of every kernel (`vitron_jax.convert.llama`):

    embed_tokens/embedding                      [vocab, embed]   model.embed_tokens.weight
    layers_{i}/self_attn/{q,k,v,o}_proj/kernel  [in, out]        model.layers.{i}.self_attn.*.weight
    layers_{i}/mlp/{gate,up,down}_proj/kernel   [in, out]        model.layers.{i}.mlp.*.weight
    layers_{i}/{input,post_attention}_layernorm/weight           model.layers.{i}.*.weight
    norm/weight, lm_head/kernel [embed, vocab]                   model.norm.weight, lm_head.weight

With `scan_layers=True` the layers are one `nn.scan`ned block named `layers` whose parameters
carry a leading `[num_hidden_layers]` axis (logical name "layers"); numerics are identical.
Entry points (all through `module.apply({"params": params}, ..., method=...)`):
* `__call__(input_ids, attention_mask=None, positions=None, segment_ids=None)` -> logits;
* `forward(input_ids | inputs_embeds, attention_mask, positions, segment_ids, cache, logits)`
  -> `LlamaOutput(logits, hidden_states, cache)`: embeddings in, final-norm hidden states out, a
  KV cache in and out (`init_cache`), logits for all / the last / no positions, packed rows;
* `embed(ids)` -> `[B, T, embed]` token embeddings (to splice visual tokens in);
* `logits(hidden)` -> `[B, T, vocab]` from final-norm hidden states.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from vitron_jax.nn.attention import (causal_mask, dot_product_attention, segment_mask,
                                     segment_positions)
from vitron_jax.nn.checks import check_token_ids
from vitron_jax.nn.layers import Dense, Embed
from vitron_jax.nn.mlp import ACTIVATIONS, GatedMLP
from vitron_jax.nn.norms import RMSNorm
from vitron_jax.nn.rope import RopeConfig, apply_rope, rope_frequencies

REMAT_POLICIES = ("none", "full", "dots_saveable", "nothing_saveable", "everything_saveable",
                  "dots_with_no_batch_dims_saveable", "checkpoint_dots",
                  "checkpoint_dots_with_no_batch_dims")
Cache = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
  """Architecture (mirrors `transformers.LlamaConfig`) plus run-time options.

  `head_dim` defaults to `hidden_size // num_attention_heads`, `num_key_value_heads` to
  `num_attention_heads`, `rope` to the default rotary embedding with theta 10000.
  `dtype` is the compute dtype, `param_dtype` the storage dtype (names as numpy spells them).
  `scan_layers`: one `nn.scan` over the layers (constant compile time in depth);
  `remat_policy`: "none", "full" or a `jax.checkpoint_policies` name; `attention_chunk` > 0
  splits uncached causal attention into query blocks that skip the masked triangle (a CPU/XLA
  speed option; exact).
  """
  vocab_size: int = 32000
  hidden_size: int = 4096
  intermediate_size: int = 11008
  num_hidden_layers: int = 32
  num_attention_heads: int = 32
  num_key_value_heads: int | None = None
  head_dim: int | None = None
  rms_norm_eps: float = 1e-6
  rope: RopeConfig | None = None
  max_position_embeddings: int = 2048
  tie_word_embeddings: bool = False
  attention_bias: bool = False
  mlp_bias: bool = False
  hidden_act: str = "silu"
  initializer_range: float = 0.02
  bos_token_id: int | None = 1
  eos_token_id: int | tuple[int, ...] | None = 2
  pad_token_id: int | None = None
  # run-time options (not part of the HF config)
  scan_layers: bool = True
  remat_policy: str = "none"
  dtype: str = "float32"
  param_dtype: str = "float32"
  attention_chunk: int = 0  # >0: causal attention in query blocks of this size (see below)

  def __post_init__(self):
    def fix(name, value):
      object.__setattr__(self, name, value)

    for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                 "num_attention_heads", "max_position_embeddings"):
      v = getattr(self, name)
      if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
        raise ValueError(f"LlamaConfig.{name} must be a positive integer, got {v!r}")
    if self.num_key_value_heads is None:
      fix("num_key_value_heads", self.num_attention_heads)
    if self.head_dim is None:
      if self.hidden_size % self.num_attention_heads:
        raise ValueError(f"LlamaConfig: hidden_size ({self.hidden_size}) must be a multiple of "
                         f"num_attention_heads ({self.num_attention_heads}) when head_dim is "
                         "not given")
      fix("head_dim", self.hidden_size // self.num_attention_heads)
    if self.num_key_value_heads <= 0 or self.num_attention_heads % self.num_key_value_heads:
      raise ValueError(f"LlamaConfig: num_attention_heads ({self.num_attention_heads}) must be a "
                       f"multiple of num_key_value_heads ({self.num_key_value_heads})")
    if self.rope is None:
      fix("rope", RopeConfig(head_dim=self.head_dim,
                             max_position_embeddings=self.max_position_embeddings))
    elif isinstance(self.rope, Mapping):
      fix("rope", RopeConfig(**self.rope))
    if self.rope.head_dim != self.head_dim:
      raise ValueError(f"LlamaConfig: rope.head_dim ({self.rope.head_dim}) must equal head_dim "
                       f"({self.head_dim})")
    if isinstance(self.eos_token_id, (list, tuple)):
      fix("eos_token_id", tuple(int(t) for t in self.eos_token_id))
    if self.hidden_act not in ACTIVATIONS:
      raise ValueError(f"LlamaConfig.hidden_act {self.hidden_act!r} unknown; expected one of "
                       f"{sorted(ACTIVATIONS)}")
    if not isinstance(self.attention_chunk, int) or self.attention_chunk < 0:
      raise ValueError(f"LlamaConfig.attention_chunk must be an integer >= 0, got "
                       f"{self.attention_chunk!r}")
    if self.remat_policy not in REMAT_POLICIES:
      raise ValueError(f"LlamaConfig.remat_policy {self.remat_policy!r} unknown; expected one "
                       f"of {REMAT_POLICIES}")
    for name in ("dtype", "param_dtype"):
      v = getattr(self, name)
      try:
        fix(name, jnp.dtype(v).name)
      except TypeError as e:
        raise ValueError(f"LlamaConfig.{name} must name a dtype, got {v!r}") from e

  @property
  def stop_tokens(self) -> tuple[int, ...]:
    e = self.eos_token_id
    return () if e is None else (e,) if isinstance(e, int) else tuple(e)

  def replace(self, **kw) -> "LlamaConfig":
    return dataclasses.replace(self, **kw)

  @classmethod
  def vicuna_7b(cls, **kw) -> "LlamaConfig":
    """Vicuna-7B v1.5 (Llama-2-7B architecture)."""
    base = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008,
                num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                rms_norm_eps=1e-5, max_position_embeddings=4096, tie_word_embeddings=False,
                bos_token_id=1, eos_token_id=2, pad_token_id=0)
    base.update(kw)
    return cls(**base)

  def to_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    if isinstance(d["eos_token_id"], tuple):
      d["eos_token_id"] = list(d["eos_token_id"])
    return d

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "LlamaConfig":
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
      raise ValueError(f"LlamaConfig.from_dict: unknown keys {unknown}")
    return cls(**dict(d))

  @classmethod
  def from_hf_dict(cls, d: Mapping[str, Any], **runtime) -> "LlamaConfig":
    """From a transformers `config.json` dict (v5 `rope_parameters` or v4 `rope_scaling`)."""
    if d.get("model_type", "llama") != "llama":
      raise ValueError(f"expected a llama config, got model_type={d.get('model_type')!r}")
    if float(d.get("attention_dropout") or 0.0) != 0.0:
      raise ValueError(f"attention_dropout={d['attention_dropout']} is not supported (expected 0)")
    heads = d["num_attention_heads"]
    head_dim = d.get("head_dim") or d["hidden_size"] // heads
    rope = RopeConfig.from_hf(head_dim, d["max_position_embeddings"],
                              d.get("rope_parameters") or d.get("rope_scaling"),
                              d.get("rope_theta"))
    eos = d.get("eos_token_id")
    return cls(
        vocab_size=d["vocab_size"], hidden_size=d["hidden_size"],
        intermediate_size=d["intermediate_size"], num_hidden_layers=d["num_hidden_layers"],
        num_attention_heads=heads, num_key_value_heads=d.get("num_key_value_heads") or heads,
        head_dim=head_dim, rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)), rope=rope,
        max_position_embeddings=d["max_position_embeddings"],
        tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
        attention_bias=bool(d.get("attention_bias", False)),
        mlp_bias=bool(d.get("mlp_bias", False)), hidden_act=d.get("hidden_act", "silu"),
        initializer_range=float(d.get("initializer_range", 0.02)),
        bos_token_id=d.get("bos_token_id"),
        eos_token_id=tuple(eos) if isinstance(eos, list) else eos,
        pad_token_id=d.get("pad_token_id"), **runtime)

  @classmethod
  def from_hf(cls, hf_config, **runtime) -> "LlamaConfig":
    """From a `transformers.LlamaConfig`; `runtime` sets scan_layers, remat_policy, dtypes."""
    return cls.from_hf_dict(hf_config.to_dict(), **runtime)

  def to_hf_dict(self) -> dict[str, Any]:
    """The transformers `config.json` content (v5 layout)."""
    rope = self.rope.to_hf()
    if self.rope.original_max_position_embeddings is not None:
      rope.setdefault("original_max_position_embeddings",
                      self.rope.original_max_position_embeddings)
    eos = self.eos_token_id
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": self.vocab_size, "hidden_size": self.hidden_size,
        "intermediate_size": self.intermediate_size,
        "num_hidden_layers": self.num_hidden_layers,
        "num_attention_heads": self.num_attention_heads,
        "num_key_value_heads": self.num_key_value_heads, "head_dim": self.head_dim,
        "hidden_act": self.hidden_act, "max_position_embeddings": self.max_position_embeddings,
        "initializer_range": self.initializer_range, "rms_norm_eps": self.rms_norm_eps,
        "use_cache": True, "bos_token_id": self.bos_token_id,
        "eos_token_id": list(eos) if isinstance(eos, tuple) else eos,
        "pad_token_id": self.pad_token_id, "pretraining_tp": 1,
        "tie_word_embeddings": self.tie_word_embeddings, "rope_parameters": rope,
        "attention_bias": self.attention_bias, "attention_dropout": 0.0,
        "mlp_bias": self.mlp_bias, "dtype": self.param_dtype,
    }

  def to_hf(self):
    """A `transformers.LlamaConfig` (imports transformers)."""
    import transformers  # pylint: disable=import-outside-toplevel
    d = self.to_hf_dict()
    del d["architectures"], d["model_type"]
    return transformers.LlamaConfig(**d)


class LlamaOutput(NamedTuple):
  logits: jax.Array | None          # [B, T, vocab], [B, 1, vocab] ("last") or None ("none")
  hidden_states: jax.Array          # [B, T, embed], after the final norm
  cache: Cache | None               # updated KV cache when one was given


def init_cache(config: LlamaConfig, batch_size: int, max_length: int,
               dtype: Any = None) -> Cache:
  """An empty KV cache (a plain pytree).

  k, v: `[layers, B, max_length, kv_heads, head_dim]`; valid: `[B, max_length]` bool (slot holds
  a real token); index: int32 scalar (slots filled so far, shared by the batch); pos: `[B]` int32
  (the next token's position per sequence: left-padded sequences start at 0).
  """
  dtype = jnp.dtype(dtype or config.dtype)
  shape = (config.num_hidden_layers, batch_size, max_length, config.num_key_value_heads,
           config.head_dim)
  return {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype),
          "valid": jnp.zeros((batch_size, max_length), bool),
          "index": jnp.zeros((), jnp.int32), "pos": jnp.zeros((batch_size,), jnp.int32)}


_constrain = nn.with_logical_constraint


def _tokens_2d(x):
  """`[B, T, D]` -> `[B*T, D]` before a projection: with one contracting dimension in the
  weight gradient, XLA needs no transposed copies of activations (~20% of a CPU train step)."""
  return x.reshape(-1, x.shape[-1])


def _causal_attention(q, k, v, mask, chunk: int):
  """Causal attention; with `chunk` > 0 (and no cache) queries go in blocks of `chunk`, each
  attending only to the keys up to its end, which skips the masked upper triangle (about half
  the score/value flops on long sequences). Same result as one call for every query that
  sees at least one key (fully masked padding rows are garbage either way)."""
  t = q.shape[1]
  if not chunk or t <= chunk:
    return dot_product_attention(q, k, v, mask=mask, is_causal=mask is None)
  outs = []
  for s in range(0, t, chunk):
    e = min(s + chunk, t)
    m = None if mask is None else mask[:, :, s:e, :e]
    # `is_causal` with fewer queries than keys aligns the last query with the last key.
    outs.append(dot_product_attention(q[:, s:e], k[:, :e], v[:, :e], mask=m,
                                      is_causal=mask is None))
  return jnp.concatenate(outs, axis=1)


class LlamaAttention(nn.Module):
  """Grouped-query self-attention with rotary embeddings and an optional KV cache."""
  config: LlamaConfig

  @nn.compact
  def __call__(self, x, cos, sin, mask, layer_cache, cache_index):
    c = self.config
    b, t, _ = x.shape
    kw = dict(use_bias=c.attention_bias, dtype=c.dtype, param_dtype=c.param_dtype,
              kernel_init=nn.initializers.normal(c.initializer_range))
    hd, h, kvh = c.head_dim, c.num_attention_heads, c.num_key_value_heads
    x = _tokens_2d(x)
    q = Dense(h * hd, axes=("embed", "heads"), name="q_proj", **kw)(x).reshape(b, t, h, hd)
    k = Dense(kvh * hd, axes=("embed", "heads"), name="k_proj", **kw)(x).reshape(b, t, kvh, hd)
    v = Dense(kvh * hd, axes=("embed", "heads"), name="v_proj", **kw)(x).reshape(b, t, kvh, hd)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    names = ("batch", "act_length", "act_heads", "act_kv")
    q, k, v = _constrain(q, names), _constrain(k, names), _constrain(v, names)
    new_cache = None
    if layer_cache is not None:
      # Either this layer's `[B, S, kv, hd]` slices (scanned layers) or the whole stacked
      # `[L, B, S, kv, hd]` cache plus this layer's index (unrolled layers: the new entries are
      # written in place, nothing else is copied).
      layer = layer_cache.get("layer")
      ck, cv = layer_cache["k"], layer_cache["v"]
      if layer is None:
        start = (0, cache_index, 0, 0)
        k = jax.lax.dynamic_update_slice(ck, k.astype(ck.dtype), start)
        v = jax.lax.dynamic_update_slice(cv, v.astype(cv.dtype), start)
        new_cache = {"k": k, "v": v}
      else:
        start = (layer, 0, cache_index, 0, 0)
        ck = jax.lax.dynamic_update_slice(ck, k[None].astype(ck.dtype), start)
        cv = jax.lax.dynamic_update_slice(cv, v[None].astype(cv.dtype), start)
        new_cache = {"k": ck, "v": cv, "layer": layer}
        k, v = ck[layer], cv[layer]
      k, v = k.astype(q.dtype), v.astype(q.dtype)
    out = _causal_attention(q, k, v, mask, c.attention_chunk if layer_cache is None else 0)
    out = _constrain(out, names).reshape(b * t, h * hd)
    o = Dense(c.hidden_size, axes=("heads", "embed"), name="o_proj", **kw)(out)
    return o.reshape(b, t, c.hidden_size), new_cache


class LlamaDecoderLayer(nn.Module):
  """Pre-norm block: `h + attn(norm(h))`, then `h + mlp(norm(h))`.

  `__call__(h [B,T,D], layer_cache, cos, sin, mask, cache_index) -> (h, layer_cache)`, the
  signature `nn.scan` wants (carry first, per-layer cache as the scanned input/output).
  """
  config: LlamaConfig

  @nn.compact
  def __call__(self, h, layer_cache, cos, sin, mask, cache_index):
    c = self.config
    norm = dict(eps=c.rms_norm_eps, dtype=c.dtype, param_dtype=c.param_dtype)
    x = RMSNorm(name="input_layernorm", **norm)(h)
    a, new_cache = LlamaAttention(c, name="self_attn")(x, cos, sin, mask, layer_cache,
                                                       cache_index)
    h = h + a
    x = RMSNorm(name="post_attention_layernorm", **norm)(h)
    h = h + GatedMLP(c.intermediate_size, act=c.hidden_act, use_bias=c.mlp_bias, dtype=c.dtype,
                     param_dtype=c.param_dtype, name="mlp")(_tokens_2d(x)).reshape(h.shape)
    return _constrain(h, ("batch", "act_length", "act_embed")), new_cache


def _layer_class(config: LlamaConfig):
  cls = LlamaDecoderLayer
  if config.remat_policy == "none":
    return cls
  policy = None if config.remat_policy == "full" else getattr(jax.checkpoint_policies,
                                                              config.remat_policy)
  return nn.remat(cls, policy=policy, prevent_cse=not config.scan_layers)


def default_positions(attention_mask: jax.Array | None, batch: int, length: int,
                      start: jax.Array | None = None) -> jax.Array:
  """`[B, T]` positions: `start + (number of real tokens before)`; padding gets `start`.

  Left-padded prompts thus start at position 0 (as transformers' `generate` does).
  """
  start = jnp.zeros((batch,), jnp.int32) if start is None else start
  if attention_mask is None:
    return start[:, None] + jnp.arange(length, dtype=jnp.int32)[None]
  pos = jnp.cumsum(attention_mask.astype(jnp.int32), axis=1) - 1
  return start[:, None] + jnp.maximum(pos, 0)


class Llama(nn.Module):
  """`LlamaForCausalLM` in Flax; see the module docstring for the entry points."""
  config: LlamaConfig

  def setup(self):
    c = self.config
    self.embed_tokens = Embed(c.vocab_size, c.hidden_size, dtype=c.dtype,
                              param_dtype=c.param_dtype,
                              embedding_init=nn.initializers.normal(c.initializer_range))
    layer = _layer_class(c)
    if c.scan_layers:
      stack = nn.scan(layer, variable_axes={"params": 0}, split_rngs={"params": True},
                      in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast),
                      length=c.num_hidden_layers,
                      metadata_params={nn.PARTITION_NAME: "layers"})
      self.layers = stack(c)
    else:
      self.layers = [layer(c) for _ in range(c.num_hidden_layers)]
    self.norm = RMSNorm(eps=c.rms_norm_eps, dtype=c.dtype, param_dtype=c.param_dtype)
    if not c.tie_word_embeddings:
      self.lm_head = Dense(c.vocab_size, axes=("embed", "vocab"), use_bias=False, dtype=c.dtype,
                           param_dtype=c.param_dtype,
                           kernel_init=nn.initializers.normal(c.initializer_range))

  def embed(self, ids: jax.Array) -> jax.Array:
    """`[B, T]` token ids -> `[B, T, embed]` embeddings (ids checked when concrete)."""
    check_token_ids(ids, self.config.vocab_size, "input_ids")
    return self.embed_tokens(ids)

  def logits(self, hidden: jax.Array) -> jax.Array:
    """Final-norm hidden states `[B, T, embed]` -> logits `[B, T, vocab]`."""
    flat = _tokens_2d(hidden)
    if self.config.tie_word_embeddings:
      out = self.embed_tokens.attend(flat)
    else:
      out = self.lm_head(flat)
    out = out.reshape(hidden.shape[:-1] + (self.config.vocab_size,))
    return _constrain(out, ("batch", "act_length", "act_vocab"))

  def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None,
               positions: jax.Array | None = None,
               segment_ids: jax.Array | None = None) -> jax.Array:
    """`[B, T]` ids -> `[B, T, vocab]` logits."""
    return self.forward(input_ids, attention_mask=attention_mask, positions=positions,
                        segment_ids=segment_ids).logits

  def forward(self, input_ids: jax.Array | None = None, *,
              inputs_embeds: jax.Array | None = None,
              attention_mask: jax.Array | None = None,
              positions: jax.Array | None = None,
              segment_ids: jax.Array | None = None,
              cache: Cache | None = None,
              logits: str = "all") -> LlamaOutput:
    """The full entry.

    input_ids `[B, T]` int or inputs_embeds `[B, T, embed]` (exactly one); attention_mask
    `[B, T]` bool (True = real token; padding keys are never attended); positions `[B, T]` int
    (default: counted over real tokens, continuing from the cache, or restarting in each
    segment); segment_ids `[B, T]` int (packed samples 1, 2, ...; 0 = padding; a token attends
    only to earlier tokens of its segment; no cache); cache from `init_cache` (the T new tokens
    are written at `cache["index"]`); logits "all" | "last" | "none".
    """
    c = self.config
    if (input_ids is None) == (inputs_embeds is None):
      raise ValueError("Llama.forward: give exactly one of input_ids and inputs_embeds")
    if logits not in ("all", "last", "none"):
      raise ValueError(f"Llama.forward: logits must be 'all', 'last' or 'none', got {logits!r}")
    if input_ids is not None:
      if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be [batch, length], got shape {input_ids.shape}")
      h = self.embed(input_ids)
    else:
      if inputs_embeds.ndim != 3 or inputs_embeds.shape[-1] != c.hidden_size:
        raise ValueError(f"inputs_embeds must be [batch, length, {c.hidden_size}], got shape "
                         f"{inputs_embeds.shape}")
      h = inputs_embeds.astype(c.dtype)
    b, t = h.shape[:2]
    if attention_mask is not None:
      if attention_mask.shape != (b, t):
        raise ValueError(f"attention_mask must be [batch, length] = {(b, t)}, got shape "
                         f"{attention_mask.shape}")
      attention_mask = attention_mask.astype(bool)
    if positions is not None and positions.shape != (b, t):
      raise ValueError(f"positions must be [batch, length] = {(b, t)}, got {positions.shape}")
    if segment_ids is not None:
      if cache is not None:
        raise ValueError("Llama.forward: segment_ids (packed sequences) are not supported with "
                         "a KV cache; pass one of them")
      if segment_ids.shape != (b, t) or not jnp.issubdtype(segment_ids.dtype, jnp.integer):
        raise ValueError(f"segment_ids must be integer [batch, length] = {(b, t)}, got shape "
                         f"{segment_ids.shape} dtype {segment_ids.dtype}")

    index = None
    if cache is None:
      mask = None if attention_mask is None else attention_mask[:, None, None, :]
      if segment_ids is not None:
        seg = segment_mask(segment_ids, segment_ids)
        mask = seg if mask is None else mask & seg
      if mask is not None:
        mask = mask & causal_mask(t, t)[None, None]
      if positions is None:
        positions = (default_positions(attention_mask, b, t) if segment_ids is None
                     else segment_positions(segment_ids))
    else:
      index = cache["index"]
      s = cache["k"].shape[2]
      if cache["k"].shape[1] != b or cache["k"].shape[0] != c.num_hidden_layers:
        raise ValueError(f"cache is for {cache['k'].shape[1]} sequences and "
                         f"{cache['k'].shape[0]} layers; input has batch {b}, model "
                         f"{c.num_hidden_layers} layers")
      if t > s:
        raise ValueError(f"{t} new tokens do not fit a cache of length {s}")
      new_valid = jnp.ones((b, t), bool) if attention_mask is None else attention_mask
      valid = jax.lax.dynamic_update_slice(cache["valid"], new_valid, (0, index))
      mask = valid[:, None, None, :] & causal_mask(t, s, index)[None, None]
      if positions is None:
        positions = default_positions(attention_mask, b, t, cache["pos"])
    cos, sin = rope_frequencies(c.rope, positions)
    h = _constrain(h, ("batch", "act_length", "act_embed"))

    kv = None if cache is None else {"k": cache["k"], "v": cache["v"]}
    if c.scan_layers:
      h, kv = self.layers(h, kv, cos, sin, mask, index)
    else:
      for i, layer in enumerate(self.layers):
        h, kv = layer(h, None if kv is None else {"k": kv["k"], "v": kv["v"], "layer": i},
                      cos, sin, mask, index)
    h = self.norm(h)

    new_cache = None
    if cache is not None:
      added = t if attention_mask is None else jnp.sum(attention_mask, axis=1, dtype=jnp.int32)
      new_cache = {"k": kv["k"], "v": kv["v"], "valid": valid, "index": index + t,
                   "pos": cache["pos"] + added}
    out = None
    if logits == "all":
      out = self.logits(h)
    elif logits == "last":
      out = self.logits(h[:, -1:])
    return LlamaOutput(out, h, new_cache)


def unstack_layers(params: Mapping[str, Any], num_layers: int) -> dict[str, Any]:
  """Scanned params (`layers/...` with a leading `[L]` axis) -> unscanned (`layers_{i}/...`)."""
  params = dict(params)
  stacked = params.pop("layers")
  for i in range(num_layers):
    params[f"layers_{i}"] = jax.tree_util.tree_map(lambda x, i=i: x[i], stacked)
  return params


def stack_layers(params: Mapping[str, Any], num_layers: int) -> dict[str, Any]:
  """Unscanned params (`layers_{i}/...`) -> scanned (`layers/...` stacked on a leading axis)."""
  params = dict(params)
  per_layer = [params.pop(f"layers_{i}") for i in range(num_layers)]
  params["layers"] = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *per_layer)
  return params
