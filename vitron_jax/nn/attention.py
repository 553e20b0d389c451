"""The one attention op of the project.

Everything that attends (Llama, CLIP, the UNets, SAM) calls `dot_product_attention`, a thin
wrapper over `jax.nn.dot_product_attention` that

* takes `[batch, q_len, heads, head_dim]` queries and `[batch, kv_len, kv_heads, head_dim]`
  keys/values (grouped-query attention when `heads` is a multiple of `kv_heads`);
* accepts a causal flag, a boolean mask broadcastable to `[batch, heads, q_len, kv_len]`
  (True = attend) and an additive bias (relative position terms);
* with `segment_mask` / `segment_positions`, keeps the samples of a packed row apart;
* picks the implementation per platform: cuDNN flash attention on GPU when dtype and shapes
  allow it, XLA everywhere else. `implementation=` forces one.
"""
from __future__ import annotations

from typing import Literal, Optional

import jax
import jax.numpy as jnp

Implementation = Optional[Literal["xla", "cudnn"]]


def causal_mask(q_len: int, kv_len: int, offset: jax.Array | int = 0) -> jax.Array:
  """Boolean `[q_len, kv_len]` mask: query i (at absolute position offset+i) sees keys <= it."""
  q_pos = jnp.arange(q_len)[:, None] + offset
  k_pos = jnp.arange(kv_len)[None, :]
  return k_pos <= q_pos


def padding_mask(q_valid: jax.Array, kv_valid: jax.Array) -> jax.Array:
  """`[B, 1, T, S]` mask from per-token validity `[B, T]` and `[B, S]` (True = real token)."""
  return q_valid[:, None, :, None] & kv_valid[:, None, None, :]


def segment_mask(q_segments: jax.Array, kv_segments: jax.Array) -> jax.Array:
  """`[B, 1, T, S]` mask for packed sequences from segment ids `[B, T]` and `[B, S]` (1, 2, ...
  per sample, 0 = padding): a query sees the keys of its own segment, never padding keys."""
  same = q_segments[:, None, :, None] == kv_segments[:, None, None, :]
  return same & (kv_segments > 0)[:, None, None, :]


def segment_positions(segment_ids: jax.Array) -> jax.Array:
  """`[B, T]` positions restarting at 0 where the segment id changes (packed rows); padding
  (segment 0) gets 0, as `vitron_jax.data.pipeline.pack_rows` writes them."""
  idx = jnp.arange(segment_ids.shape[1], dtype=jnp.int32)[None]
  starts = jnp.concatenate([jnp.ones_like(segment_ids[:, :1], bool),
                            segment_ids[:, 1:] != segment_ids[:, :-1]], axis=1)
  first = jax.lax.cummax(jnp.where(starts, idx, 0), axis=1)
  return jnp.where(segment_ids > 0, idx - first, 0)


def _cudnn_ok(q: jax.Array, bias, mask) -> bool:
  if jax.default_backend() != "gpu":
    return False
  if q.dtype not in (jnp.bfloat16, jnp.float16):
    return False
  head_dim = q.shape[-1]
  if head_dim % 8 or head_dim > 128:
    return False
  return bias is None  # cuDNN takes masks as bias; keep arbitrary biases on XLA.


def _check(q, k, v):
  if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
    raise ValueError(
        "attention expects q, k, v of shape [batch, len, heads, head_dim]; got "
        f"q{tuple(q.shape)} k{tuple(k.shape)} v{tuple(v.shape)}")
  if k.shape != v.shape[:-1] + (k.shape[-1],) or k.shape[:3] != v.shape[:3]:
    raise ValueError(f"attention: keys {tuple(k.shape)} and values {tuple(v.shape)} disagree")
  if q.shape[2] % k.shape[2]:
    raise ValueError(
        f"attention: query heads ({q.shape[2]}) must be a multiple of kv heads ({k.shape[2]})")


def dot_product_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    mask: jax.Array | None = None,
    bias: jax.Array | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    implementation: Implementation = None,
) -> jax.Array:
  """Scaled dot-product attention; returns `[batch, q_len, heads, head_dim_v]`."""
  _check(q, k, v)
  if implementation is None:
    implementation = "cudnn" if _cudnn_ok(q, bias, mask) else "xla"
  if mask is not None:
    mask = jnp.asarray(mask, dtype=bool)
    while mask.ndim < 4:
      mask = mask[None]
  if is_causal and q.shape[1] != k.shape[1]:
    # jax's is_causal aligns the top-left corner; with a cache offset we need an explicit mask.
    cm = causal_mask(q.shape[1], k.shape[1], k.shape[1] - q.shape[1])[None, None]
    mask = cm if mask is None else (mask & cm)
    is_causal = False
  return jax.nn.dot_product_attention(
      q, k, v, bias=bias, mask=mask, is_causal=is_causal, scale=scale,
      implementation=implementation)
