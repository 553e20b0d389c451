"""UNet2D and VAE blocks (diffusers `unet_2d_blocks.py`), channels-last `[B, H, W, C]`.

Down blocks return `(x, skips)` where `skips` are the states the matching up block consumes
(one per resnet plus one after the downsampler); up blocks pop them from the end.
`cond` is `(context [B, S, D], context_mask [B,1,1,S] | None, gligen_objs | None,
gligen_enabled | None)`, handed to every Transformer2D.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vitron_jax.backends.diffusion.attention_blocks import Transformer2D
from vitron_jax.backends.diffusion.cross_attention import Attention
from vitron_jax.backends.diffusion.resnet import Downsample2D, ResnetBlock2D, Upsample2D

Cond = tuple


def maybe_remat(cls, remat: bool):
  """`nn.remat(cls)` when `remat` (activation checkpointing per block), else `cls`."""
  return nn.remat(cls) if remat else cls


class ResnetKw(nn.Module):
  """Common resnet settings (a mixin holding fields; never called)."""
  groups: int = 32
  eps: float = 1e-5
  act: str = "silu"
  time_embedding_norm: str = "default"
  output_scale_factor: float = 1.0
  dtype: Any = jnp.float32
  remat: bool = False

  def resnet(self, out: int, name: str, groups_out: int | None = None):
    cls = maybe_remat(ResnetBlock2D, self.remat)
    return cls(out, groups=self.groups, groups_out=groups_out, eps=self.eps, act=self.act,
               time_embedding_norm=self.time_embedding_norm,
               output_scale_factor=self.output_scale_factor, dtype=self.dtype, name=name)


class AttnKw(ResnetKw):
  """Resnet settings plus the cross-attention transformer's (mixin)."""
  num_attention_heads: int = 1
  transformer_layers: Sequence[int] | int = 1
  cross_attention_dim: int = 768
  use_linear_projection: bool = False
  attention_type: str = "default"

  def transformer(self, channels: int, i: int, name: str):
    layers = self.transformer_layers
    layers = layers if isinstance(layers, int) else layers[i]
    cls = maybe_remat(Transformer2D, self.remat)
    return cls(self.num_attention_heads, channels // self.num_attention_heads, layers,
               self.cross_attention_dim, self.groups, self.use_linear_projection,
               self.attention_type, dtype=self.dtype, name=name)


# ---------------------------------------------------------------------------- VAE blocks


class DownEncoderBlock2D(ResnetKw):
  out_channels: int = 0
  num_layers: int = 1
  add_downsample: bool = True
  downsample_padding: int = 0

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for i in range(self.num_layers):
      x = self.resnet(self.out_channels, f"resnets_{i}")(x, None)
    if self.add_downsample:
      x = Downsample2D(self.out_channels, self.downsample_padding, dtype=self.dtype,
                       name="downsamplers_0")(x)
    return x


class UpDecoderBlock2D(ResnetKw):
  out_channels: int = 0
  num_layers: int = 1
  add_upsample: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for i in range(self.num_layers):
      x = self.resnet(self.out_channels, f"resnets_{i}")(x, None)
    if self.add_upsample:
      x = Upsample2D(self.out_channels, dtype=self.dtype, name="upsamplers_0")(x)
    return x


class UNetMidBlock2D(ResnetKw):
  """resnet -> [spatial self-attention (GN, residual) -> resnet] x num_layers (VAE mid)."""
  num_layers: int = 1
  attention_head_dim: int | None = None
  add_attention: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, temb: jax.Array | None = None) -> jax.Array:
    c = x.shape[-1]
    head_dim = self.attention_head_dim or c
    x = self.resnet(c, "resnets_0")(x, temb)
    for i in range(self.num_layers):
      if self.add_attention:
        x = Attention(c // head_dim, head_dim, bias=True, norm_num_groups=self.groups,
                      eps=self.eps, residual_connection=True,
                      rescale_output_factor=self.output_scale_factor, dtype=self.dtype,
                      name=f"attentions_{i}")(x)
      x = self.resnet(c, f"resnets_{i + 1}")(x, temb)
    return x


# --------------------------------------------------------------------------- UNet blocks


class DownBlock2D(ResnetKw):
  out_channels: int = 0
  num_layers: int = 1
  add_downsample: bool = True
  downsample_padding: int = 1

  @nn.compact
  def __call__(self, x: jax.Array, temb: jax.Array, cond: Cond = ()) -> tuple[jax.Array, list]:
    skips = []
    for i in range(self.num_layers):
      x = self.resnet(self.out_channels, f"resnets_{i}")(x, temb)
      skips.append(x)
    if self.add_downsample:
      x = Downsample2D(self.out_channels, self.downsample_padding, dtype=self.dtype,
                       name="downsamplers_0")(x)
      skips.append(x)
    return x, skips


class CrossAttnDownBlock2D(AttnKw):
  out_channels: int = 0
  num_layers: int = 1
  add_downsample: bool = True
  downsample_padding: int = 1

  @nn.compact
  def __call__(self, x: jax.Array, temb: jax.Array, cond: Cond = ()) -> tuple[jax.Array, list]:
    skips = []
    for i in range(self.num_layers):
      x = self.resnet(self.out_channels, f"resnets_{i}")(x, temb)
      x = self.transformer(self.out_channels, i, f"attentions_{i}")(x, *cond)
      skips.append(x)
    if self.add_downsample:
      x = Downsample2D(self.out_channels, self.downsample_padding, dtype=self.dtype,
                       name="downsamplers_0")(x)
      skips.append(x)
    return x, skips


class UNetMidBlock2DCrossAttn(AttnKw):
  num_layers: int = 1

  @nn.compact
  def __call__(self, x: jax.Array, temb: jax.Array, cond: Cond = ()) -> jax.Array:
    c = x.shape[-1]
    x = self.resnet(c, "resnets_0")(x, temb)
    for i in range(self.num_layers):
      x = self.transformer(c, i, f"attentions_{i}")(x, *cond)
      x = self.resnet(c, f"resnets_{i + 1}")(x, temb)
    return x


class UpBlock2D(ResnetKw):
  out_channels: int = 0
  num_layers: int = 1
  add_upsample: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, skips: list, temb: jax.Array, cond: Cond = (),
               upsample_size: Sequence[int] | None = None) -> jax.Array:
    skips = list(skips)
    for i in range(self.num_layers):
      x = jnp.concatenate([x, skips.pop()], axis=-1)
      x = self.resnet(self.out_channels, f"resnets_{i}")(x, temb)
    if self.add_upsample:
      x = Upsample2D(self.out_channels, dtype=self.dtype, name="upsamplers_0")(x, upsample_size)
    return x


class CrossAttnUpBlock2D(AttnKw):
  out_channels: int = 0
  num_layers: int = 1
  add_upsample: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, skips: list, temb: jax.Array, cond: Cond = (),
               upsample_size: Sequence[int] | None = None) -> jax.Array:
    skips = list(skips)
    for i in range(self.num_layers):
      x = jnp.concatenate([x, skips.pop()], axis=-1)
      x = self.resnet(self.out_channels, f"resnets_{i}")(x, temb)
      x = self.transformer(self.out_channels, i, f"attentions_{i}")(x, *cond)
    if self.add_upsample:
      x = Upsample2D(self.out_channels, dtype=self.dtype, name="upsamplers_0")(x, upsample_size)
    return x
