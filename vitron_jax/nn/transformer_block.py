"""A small pre-norm transformer block (self-attention, optional cross-attention, MLP).

Used by the VITRON heads that are not ports of a PyTorch model: the backend condition
projector (learned output queries cross-attending to signal tokens) and the synergy task
discriminator (self-attention over `v_s` tokens). Parameter names follow the PyTorch habit
(`self_attn/{q,k,v,out}_proj`, `cross_attn/...`, `norm1`, `norm2`, `norm3`, `mlp/{fc1,fc2}`).

Shapes: queries `[B, Lq, D]`, context `[B, Lk, Dc]`; masks are per-token validity
`[B, L]` (True = real token). A row whose keys are all invalid attends uniformly to them
(no NaN); callers give such rows zero weight in their losses.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vitron_jax.nn.attention import dot_product_attention
from vitron_jax.nn.layers import Dense
from vitron_jax.nn.mlp import MLP
from vitron_jax.nn.norms import LayerNorm


class MultiHeadAttention(nn.Module):
  """`[B, Lq, D]` queries attend to `[B, Lk, Dc]` keys/values -> `[B, Lq, D]`."""
  num_heads: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, context: jax.Array,
               key_valid: jax.Array | None = None) -> jax.Array:
    b, lq, d = x.shape
    lk = context.shape[1]
    if d % self.num_heads:
      raise ValueError(f"attention width {d} must be a multiple of num_heads {self.num_heads}")
    hd = d // self.num_heads
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    q = Dense(d, axes=("embed", "heads"), name="q_proj", **kw)(x)
    k = Dense(d, axes=("embed", "heads"), name="k_proj", **kw)(context)
    v = Dense(d, axes=("embed", "heads"), name="v_proj", **kw)(context)
    q = q.reshape(b, lq, self.num_heads, hd)
    k = k.reshape(b, lk, self.num_heads, hd)
    v = v.reshape(b, lk, self.num_heads, hd)
    mask = None if key_valid is None else key_valid.astype(bool)[:, None, None, :]
    o = dot_product_attention(q, k, v, mask=mask).reshape(b, lq, d)
    return Dense(d, axes=("heads", "embed"), name="out_proj", **kw)(o)


class TransformerBlock(nn.Module):
  """`x += self_attn(norm1(x))`; `x += cross_attn(norm2(x), context)` (if `cross`);
  `x += mlp(norm3(x))`. `[B, L, D] -> [B, L, D]`."""
  num_heads: int
  mlp_ratio: float = 4.0
  cross: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, valid: jax.Array | None = None,
               context: jax.Array | None = None,
               context_valid: jax.Array | None = None) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    d = x.shape[-1]
    h = LayerNorm(name="norm1", **kw)(x)
    x = x + MultiHeadAttention(self.num_heads, name="self_attn", **kw)(h, h, valid)
    if self.cross:
      if context is None:
        raise ValueError("TransformerBlock(cross=True) needs a context [B, Lk, Dc]")
      h = LayerNorm(name="norm2", **kw)(x)
      x = x + MultiHeadAttention(self.num_heads, name="cross_attn", **kw)(h, context,
                                                                          context_valid)
    h = LayerNorm(name="norm3", **kw)(x)
    return x + MLP(int(d * self.mlp_ratio), act="gelu", name="mlp", **kw)(h)
