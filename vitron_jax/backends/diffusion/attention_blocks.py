"""Transformer blocks of the UNets: BasicTransformerBlock, Transformer2D, TransformerTemporal.

Shapes (channels last): Transformer2D maps `[B, H, W, C] -> [B, H, W, C]` with cross-attention
to a context `[B, S, D]`; TransformerTemporal maps `[B*T, H, W, C] -> [B*T, H, W, C]` with
self-attention along the T frames of each pixel.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vitron_jax.backends.diffusion.cross_attention import Attention, FeedForward
from vitron_jax.backends.diffusion.gligen import GatedSelfAttentionDense
from vitron_jax.nn.conv import Conv, GroupNorm
from vitron_jax.nn.layers import Dense
from vitron_jax.nn.norms import LayerNorm


class BasicTransformerBlock(nn.Module):
  """norm1 -> self-attn (attn1) -> [GLIGEN fuser] -> norm2 -> cross-attn (attn2) -> norm3 -> ff.

  `cross_attention_dim=None` with `double_self_attention=False` drops attn2; with
  `double_self_attention=True` attn2 is a second self-attention (the temporal blocks).
  x: `[B, L, dim]`; context: `[B, S, cross_attention_dim]`; gligen_objs: `[B, N, D]`.
  """
  dim: int
  heads: int
  dim_head: int
  cross_attention_dim: int | None = None
  double_self_attention: bool = False
  attention_bias: bool = False
  activation_fn: str = "geglu"
  attention_type: str = "default"
  norm_eps: float = 1e-5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, context: jax.Array | None = None,
               context_mask: jax.Array | None = None, gligen_objs: jax.Array | None = None,
               gligen_enabled: jax.Array | None = None) -> jax.Array:
    kw = dict(dtype=self.dtype)
    attn = lambda name: Attention(self.heads, self.dim_head, bias=self.attention_bias,
                                  name=name, **kw)
    h = LayerNorm(eps=self.norm_eps, name="norm1", **kw)(x)
    x = x + attn("attn1")(h)
    if gligen_objs is not None:
      if self.attention_type != "gated":
        raise ValueError("gligen inputs were given but the UNet config has attention_type "
                         f"{self.attention_type!r}, not 'gated'")
      x = GatedSelfAttentionDense(self.dim, self.heads, self.dim_head, name="fuser", **kw)(
          x, gligen_objs, gligen_enabled)
    if self.cross_attention_dim is not None or self.double_self_attention:
      h = LayerNorm(eps=self.norm_eps, name="norm2", **kw)(x)
      if self.double_self_attention:
        x = x + attn("attn2")(h)
      else:
        if context is None:
          raise ValueError("encoder_hidden_states (the cross-attention context) is required")
        x = x + attn("attn2")(h, context, context_mask)
    h = LayerNorm(eps=self.norm_eps, name="norm3", **kw)(x)
    return x + FeedForward(activation_fn=self.activation_fn, name="ff", **kw)(h)


class Transformer2D(nn.Module):
  """diffusers `Transformer2DModel` (continuous input): `[B, H, W, C] -> [B, H, W, C]`.

  GroupNorm (`norm`) -> proj_in (1x1 conv, or linear when `use_linear_projection`) ->
  `num_layers` BasicTransformerBlocks -> proj_out -> + input.
  """
  heads: int
  dim_head: int
  num_layers: int = 1
  cross_attention_dim: int | None = None
  norm_num_groups: int = 32
  use_linear_projection: bool = False
  attention_type: str = "default"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, context: jax.Array | None = None,
               context_mask: jax.Array | None = None, gligen_objs: jax.Array | None = None,
               gligen_enabled: jax.Array | None = None) -> jax.Array:
    b, hgt, wid, c = x.shape
    inner = self.heads * self.dim_head
    kw = dict(dtype=self.dtype)
    residual = x
    h = GroupNorm(self.norm_num_groups, eps=1e-6, name="norm", **kw)(x)
    if self.use_linear_projection:
      h = Dense(inner, axes=("conv_in", "embed"), name="proj_in", **kw)(h)
    else:
      h = Conv(inner, (1, 1), name="proj_in", **kw)(h)
    h = h.reshape(b, hgt * wid, inner)
    for i in range(self.num_layers):
      h = BasicTransformerBlock(inner, self.heads, self.dim_head, self.cross_attention_dim,
                                attention_type=self.attention_type,
                                name=f"transformer_blocks_{i}", **kw)(
          h, context, context_mask, gligen_objs, gligen_enabled)
    h = h.reshape(b, hgt, wid, inner)
    if self.use_linear_projection:
      h = Dense(c, axes=("embed", "conv_out"), name="proj_out", **kw)(h)
    else:
      h = Conv(c, (1, 1), name="proj_out", **kw)(h)
    return h + residual


class TransformerTemporal(nn.Module):
  """diffusers `TransformerTemporalModel`: attention along frames, `[B*T, H, W, C]` in and out.

  GroupNorm over `[B, T, H, W, C]` (statistics across frames, as PyTorch on 5-d input), then
  per pixel a sequence of T tokens through linear proj_in, blocks with two self-attentions
  (`double_self_attention`), linear proj_out, + input.
  """
  heads: int
  dim_head: int
  num_frames: int
  num_layers: int = 1
  norm_num_groups: int = 32
  activation_fn: str = "geglu"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    bt, hgt, wid, c = x.shape
    t = self.num_frames
    b = bt // t
    inner = self.heads * self.dim_head
    kw = dict(dtype=self.dtype)
    residual = x
    h = GroupNorm(self.norm_num_groups, eps=1e-6, name="norm", **kw)(
        x.reshape(b, t, hgt, wid, c))
    h = jnp.transpose(h, (0, 2, 3, 1, 4)).reshape(b * hgt * wid, t, c)
    h = Dense(inner, axes=("conv_in", "embed"), name="proj_in", **kw)(h)
    for i in range(self.num_layers):
      h = BasicTransformerBlock(inner, self.heads, self.dim_head, double_self_attention=True,
                                activation_fn=self.activation_fn,
                                name=f"transformer_blocks_{i}", **kw)(h)
    h = Dense(c, axes=("embed", "conv_out"), name="proj_out", **kw)(h)
    h = jnp.transpose(h.reshape(b, hgt, wid, t, c), (0, 3, 1, 2, 4)).reshape(bt, hgt, wid, c)
    return h + residual
