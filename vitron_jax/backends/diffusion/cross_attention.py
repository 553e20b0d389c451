"""diffusers' `Attention` (self / cross / VAE spatial) and `FeedForward`, channels-last.

Parameter names mirror PyTorch: `to_q`, `to_k`, `to_v`, `to_out_0` (PyTorch `to_out.0`),
`group_norm`; `ff/net_0/proj` and `ff/net_2`. Attention runs through the project's one op,
`vitron_jax.nn.attention.dot_product_attention`, with scale `dim_head ** -0.5`.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vitron_jax.nn.attention import dot_product_attention
from vitron_jax.nn.conv import GroupNorm
from vitron_jax.nn.layers import Dense


def key_padding_mask(mask: jax.Array | None, batch: int, kv_len: int,
                     name: str = "encoder_attention_mask") -> jax.Array | None:
  """`[B, S]` keep-mask (True/1 = attend) -> boolean `[B, 1, 1, S]` for the attention op."""
  if mask is None:
    return None
  if mask.shape != (batch, kv_len):
    raise ValueError(f"{name} must have shape [batch, tokens] = [{batch}, {kv_len}], "
                     f"got {tuple(mask.shape)}")
  return mask.astype(bool)[:, None, None, :]


class Attention(nn.Module):
  """Multi-head attention on `[B, L, C]` (or `[B, H, W, C]`, flattened to `L = H*W`).

  `context` `[B, S, D]` makes it cross-attention (keys/values from the context); `mask` is a
  boolean `[B, 1, 1, S]` (True = attend). `partition=False` leaves the weights unannotated
  (tiny widths that no mesh axis divides). With `norm_num_groups` a GroupNorm named
  `group_norm` runs first (the VAE's spatial attention); `residual_connection` adds the input
  back and `rescale_output_factor` divides the result, as in diffusers.
  """
  heads: int
  dim_head: int
  out_dim: int | None = None
  bias: bool = False
  out_bias: bool = True
  norm_num_groups: int | None = None
  eps: float = 1e-5
  residual_connection: bool = False
  rescale_output_factor: float = 1.0
  partition: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, context: jax.Array | None = None,
               mask: jax.Array | None = None) -> jax.Array:
    residual = x
    shape = x.shape
    if x.ndim == 4:
      x = x.reshape(shape[0], shape[1] * shape[2], shape[3])
    if x.ndim != 3:
      raise ValueError(f"Attention expects [B, L, C] or [B, H, W, C], got {tuple(shape)}")
    if self.norm_num_groups is not None:
      x = GroupNorm(self.norm_num_groups, eps=self.eps, dtype=self.dtype, name="group_norm")(x)
    ctx = x if context is None else context
    inner = self.heads * self.dim_head
    qkv_axes, out_axes = (("embed", "heads"), ("heads", "embed")) if self.partition else (
        (None, None), (None, None))
    kw = dict(axes=qkv_axes, use_bias=self.bias, dtype=self.dtype)
    q = Dense(inner, name="to_q", **kw)(x)
    k = Dense(inner, name="to_k", **kw)(ctx)
    v = Dense(inner, name="to_v", **kw)(ctx)
    b, lq = q.shape[:2]
    split = lambda t: t.reshape(t.shape[0], t.shape[1], self.heads, self.dim_head)
    o = dot_product_attention(split(q), split(k), split(v), mask=mask,
                              scale=self.dim_head ** -0.5)
    o = o.reshape(b, lq, inner)
    out_dim = self.out_dim or shape[-1]
    o = Dense(out_dim, axes=out_axes, use_bias=self.out_bias, dtype=self.dtype,
              name="to_out_0")(o)
    if len(shape) == 4:
      o = o.reshape(shape[:3] + (out_dim,))
    if self.residual_connection:
      o = o + residual
    if self.rescale_output_factor != 1.0:
      o = o / self.rescale_output_factor
    return o


class _Proj(nn.Module):
  """`GEGLU` / `GELU` input projection of FeedForward (`net.0`), holding `proj`."""
  features: int
  kind: str
  bias: bool = True
  partition: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    gated = self.kind in ("geglu",)
    axes = ("embed", "mlp") if self.partition else (None, None)
    h = Dense(self.features * (2 if gated else 1), axes=axes, use_bias=self.bias,
              dtype=self.dtype, name="proj")(x)
    if self.kind == "geglu":
      h, gate = jnp.split(h, 2, axis=-1)
      return h * jax.nn.gelu(gate, approximate=False)
    if self.kind == "gelu":
      return jax.nn.gelu(h, approximate=False)
    if self.kind == "gelu-approximate":
      return jax.nn.gelu(h, approximate=True)
    raise ValueError(f"unsupported feed-forward activation_fn {self.kind!r}; expected 'geglu', "
                     "'gelu' or 'gelu-approximate'")


class FeedForward(nn.Module):
  """`net_2(act(net_0(x)))`, inner width `inner_dim or dim * mult` (diffusers FeedForward)."""
  dim_out: int | None = None
  mult: int = 4
  inner_dim: int | None = None
  activation_fn: str = "geglu"
  bias: bool = True
  partition: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    inner = self.inner_dim or int(x.shape[-1] * self.mult)
    h = _Proj(inner, self.activation_fn, self.bias, self.partition, self.dtype, name="net_0")(x)
    axes = ("mlp", "embed") if self.partition else (None, None)
    return Dense(self.dim_out or x.shape[-1], axes=axes, use_bias=self.bias,
                 dtype=self.dtype, name="net_2")(h)
