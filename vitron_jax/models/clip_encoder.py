"""The pre-norm transformer encoder shared by CLIP's vision and text towers.

Parameter names mirror transformers' `CLIPEncoder`: `layers_{i}/self_attn/{q,k,v,out}_proj`,
`layers_{i}/layer_norm1`, `layers_{i}/layer_norm2`, `layers_{i}/mlp/{fc1,fc2}`; Dense kernels
are `[in, out]` (the PyTorch `weight` transposed).
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

ACT_AXES = ("batch", None, None)  # activations [B, L, D]: only the batch is sharded.


class CLIPAttention(nn.Module):
  """Multi-head self-attention `[B, L, D] -> [B, L, D]` with biased q/k/v/out projections."""
  hidden_size: int
  num_heads: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None = None,
               is_causal: bool = False) -> jax.Array:
    b, l, _ = x.shape
    head_dim = self.hidden_size // self.num_heads
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)

    def heads(name):
      y = Dense(self.hidden_size, axes=("embed", "heads"), name=name, **kw)(x)
      return y.reshape(b, l, self.num_heads, head_dim)

    q, k, v = heads("q_proj"), heads("k_proj"), heads("v_proj")
    o = dot_product_attention(q, k, v, mask=mask, is_causal=is_causal,
                              scale=head_dim ** -0.5)
    o = o.reshape(b, l, self.hidden_size)
    return Dense(self.hidden_size, axes=("heads", "embed"), name="out_proj", **kw)(o)


class CLIPEncoderLayer(nn.Module):
  """`x + attn(ln1(x))`, then `x + mlp(ln2(x))`; `[B, L, D] -> [B, L, D]`."""
  hidden_size: int
  num_heads: int
  intermediate_size: int
  hidden_act: str
  layer_norm_eps: float
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None = None,
               is_causal: bool = False) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    h = LayerNorm(eps=self.layer_norm_eps, name="layer_norm1", **kw)(x)
    h = CLIPAttention(self.hidden_size, self.num_heads, name="self_attn", **kw)(
        h, mask=mask, is_causal=is_causal)
    x = x + h
    h = LayerNorm(eps=self.layer_norm_eps, name="layer_norm2", **kw)(x)
    h = MLP(self.intermediate_size, act=self.hidden_act, names=("fc1", "fc2"), name="mlp",
            **kw)(h)
    return nn.with_logical_constraint(x + h, ACT_AXES)


class CLIPEncoder(nn.Module):
  """A stack of `num_layers` encoder layers (unscanned, named `layers_{i}`).

  `__call__(x, mask, is_causal, num_layers=None)` runs the first `num_layers` layers (all by
  default) and returns `(last, hidden_states)` where `hidden_states` is the tuple
  `(x, after layer 1, ..., after layer n)` — HF's `output_hidden_states` convention.
  """
  config: Any  # CLIPVisionConfig or CLIPTextConfig
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def setup(self):
    c = self.config
    self.layers = [
        CLIPEncoderLayer(c.hidden_size, c.num_attention_heads, c.intermediate_size,
                         c.hidden_act, c.layer_norm_eps, dtype=self.dtype,
                         param_dtype=self.param_dtype)
        for _ in range(c.num_hidden_layers)]

  def __call__(self, x: jax.Array, mask: jax.Array | None = None, is_causal: bool = False,
               num_layers: int | None = None) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    n = len(self.layers) if num_layers is None else int(num_layers)
    if not 0 <= n <= len(self.layers):
      raise ValueError(f"num_layers must be in [0, {len(self.layers)}], got {num_layers}")
    hidden = [x]
    for layer in self.layers[:n]:
      x = layer(x, mask=mask, is_causal=is_causal)
      hidden.append(x)
    return x, tuple(hidden)
