"""The per-backend projector: signal tokens `[v_p; v_s]` -> the backend's condition tokens.

A small transformer with learned output queries (DESIGN.md §3): `num_tokens` queries of width
`d_model` self-attend, cross-attend to the projected signal tokens (padding masked), go through
an MLP, `depth` times; a final LayerNorm and `output_proj` give `[B, num_tokens, width]`, the
backend's `condition_shape`. Parameters: `input_proj`, `queries`, `layers_{i}`, `final_norm`,
`output_proj`.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vitron_jax.nn.layers import Dense
from vitron_jax.nn.norms import LayerNorm
from vitron_jax.nn.transformer_block import TransformerBlock


class ConditionProjector(nn.Module):
  """`v` `[B, K, d_in]`, `valid` `[B, K]` -> condition `[B, num_tokens, width]`."""
  num_tokens: int
  width: int
  d_model: int = 256
  depth: int = 2
  num_heads: int = 8
  mlp_ratio: float = 4.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, v: jax.Array, valid: jax.Array | None = None) -> jax.Array:
    if v.ndim != 3:
      raise ValueError(f"condition projector input must be [batch, tokens, width], got shape "
                       f"{tuple(v.shape)}")
    b, k, _ = v.shape
    if valid is None:
      valid = jnp.ones((b, k), bool)
    if valid.shape != (b, k):
      raise ValueError(f"condition projector valid mask must be {(b, k)}, got "
                       f"{tuple(valid.shape)}")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    ctx = Dense(self.d_model, axes=(None, "embed"), name="input_proj", **kw)(v)
    queries = self.param("queries", nn.with_logical_partitioning(
        nn.initializers.normal(0.02), (None, "embed")), (self.num_tokens, self.d_model),
                         self.param_dtype)
    x = jnp.broadcast_to(queries.astype(ctx.dtype), (b, self.num_tokens, self.d_model))
    for i in range(self.depth):
      x = TransformerBlock(self.num_heads, self.mlp_ratio, cross=True, name=f"layers_{i}",
                           **kw)(x, None, ctx, valid)
    x = LayerNorm(name="final_norm", **kw)(x)
    return Dense(self.width, axes=("embed", None), name="output_proj", **kw)(x)
