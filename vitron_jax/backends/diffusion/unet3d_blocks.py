"""UNet3D blocks (diffusers `unet_3d_blocks.py`): ZeroScope / ModelScope / I2VGen-XL.

Frames are stacked in the batch: x `[B*T, H, W, C]`, temb `[B*T, D]`, context `[B*T, S, D]`,
with `num_frames=T` static. Each resnet is followed by a temporal conv stack; each spatial
Transformer2D (always linear projections here) by a temporal transformer. In these blocks
diffusers' `num_attention_heads` argument is the *head size*: heads = channels // it.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vitron_jax.backends.diffusion.attention_blocks import Transformer2D, TransformerTemporal
from vitron_jax.backends.diffusion.resnet import Downsample2D, TemporalConvLayer, Upsample2D
from vitron_jax.backends.diffusion.unet_blocks import ResnetKw, maybe_remat


class Video3DKw(ResnetKw):
  """Settings shared by the 3D blocks (a mixin holding fields; never called)."""
  num_frames: int = 1
  head_dim: int = 64
  cross_attention_dim: int = 1024

  def temp_conv(self, name: str):
    return TemporalConvLayer(self.num_frames, self.groups, dtype=self.dtype, name=name)

  def spatial(self, channels: int, name: str):
    cls = maybe_remat(Transformer2D, self.remat)
    return cls(channels // self.head_dim, self.head_dim, 1, self.cross_attention_dim,
               self.groups, use_linear_projection=True, dtype=self.dtype, name=name)

  def temporal(self, channels: int, name: str):
    cls = maybe_remat(TransformerTemporal, self.remat)
    return cls(channels // self.head_dim, self.head_dim, self.num_frames,
               norm_num_groups=self.groups, dtype=self.dtype, name=name)


class DownBlock3D(Video3DKw):
  out_channels: int = 0
  num_layers: int = 1
  add_downsample: bool = True
  downsample_padding: int = 1

  @nn.compact
  def __call__(self, x: jax.Array, temb: jax.Array, context=None) -> tuple[jax.Array, list]:
    skips = []
    for i in range(self.num_layers):
      x = self.resnet(self.out_channels, f"resnets_{i}")(x, temb)
      x = self.temp_conv(f"temp_convs_{i}")(x)
      skips.append(x)
    if self.add_downsample:
      x = Downsample2D(self.out_channels, self.downsample_padding, dtype=self.dtype,
                       name="downsamplers_0")(x)
      skips.append(x)
    return x, skips


class CrossAttnDownBlock3D(Video3DKw):
  out_channels: int = 0
  num_layers: int = 1
  add_downsample: bool = True
  downsample_padding: int = 1

  @nn.compact
  def __call__(self, x: jax.Array, temb: jax.Array, context=None) -> tuple[jax.Array, list]:
    skips = []
    c = self.out_channels
    for i in range(self.num_layers):
      x = self.resnet(c, f"resnets_{i}")(x, temb)
      x = self.temp_conv(f"temp_convs_{i}")(x)
      x = self.spatial(c, f"attentions_{i}")(x, context)
      x = self.temporal(c, f"temp_attentions_{i}")(x)
      skips.append(x)
    if self.add_downsample:
      x = Downsample2D(c, self.downsample_padding, dtype=self.dtype, name="downsamplers_0")(x)
      skips.append(x)
    return x, skips


class UNetMidBlock3DCrossAttn(Video3DKw):
  num_layers: int = 1

  @nn.compact
  def __call__(self, x: jax.Array, temb: jax.Array, context=None) -> jax.Array:
    c = x.shape[-1]
    x = self.resnet(c, "resnets_0")(x, temb)
    x = self.temp_conv("temp_convs_0")(x)
    for i in range(self.num_layers):
      x = self.spatial(c, f"attentions_{i}")(x, context)
      x = self.temporal(c, f"temp_attentions_{i}")(x)
      x = self.resnet(c, f"resnets_{i + 1}")(x, temb)
      x = self.temp_conv(f"temp_convs_{i + 1}")(x)
    return x


class UpBlock3D(Video3DKw):
  out_channels: int = 0
  num_layers: int = 1
  add_upsample: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, skips: list, temb: jax.Array, context=None,
               upsample_size: Sequence[int] | None = None) -> jax.Array:
    skips = list(skips)
    for i in range(self.num_layers):
      x = jnp.concatenate([x, skips.pop()], axis=-1)
      x = self.resnet(self.out_channels, f"resnets_{i}")(x, temb)
      x = self.temp_conv(f"temp_convs_{i}")(x)
    if self.add_upsample:
      x = Upsample2D(self.out_channels, dtype=self.dtype, name="upsamplers_0")(x, upsample_size)
    return x


class CrossAttnUpBlock3D(Video3DKw):
  out_channels: int = 0
  num_layers: int = 1
  add_upsample: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, skips: list, temb: jax.Array, context=None,
               upsample_size: Sequence[int] | None = None) -> jax.Array:
    skips = list(skips)
    c = self.out_channels
    for i in range(self.num_layers):
      x = jnp.concatenate([x, skips.pop()], axis=-1)
      x = self.resnet(c, f"resnets_{i}")(x, temb)
      x = self.temp_conv(f"temp_convs_{i}")(x)
      x = self.spatial(c, f"attentions_{i}")(x, context)
      x = self.temporal(c, f"temp_attentions_{i}")(x)
    if self.add_upsample:
      x = Upsample2D(c, dtype=self.dtype, name="upsamplers_0")(x, upsample_size)
    return x


DOWN_3D = {"DownBlock3D": DownBlock3D, "CrossAttnDownBlock3D": CrossAttnDownBlock3D}
UP_3D = {"UpBlock3D": UpBlock3D, "CrossAttnUpBlock3D": CrossAttnUpBlock3D}


def run_unet3d_body(parent_cfg, x: jax.Array, emb: jax.Array, context: jax.Array,
                    num_frames: int, heads: tuple[int, ...], common: dict,
                    sample_hw: tuple[int, int]) -> jax.Array:
  """Down blocks, mid block and up blocks shared by UNet3D and I2VGen-XL.

  Call from a compact `__call__`; `parent_cfg` has `block_out_channels`, `layers_per_block`,
  `down_block_types`, `up_block_types`, `downsample_padding` (optional),
  `mid_block_scale_factor` (optional); `heads` holds the per-block head *size*.
  """
  cfg = parent_cfg
  n = len(cfg.block_out_channels)
  kw = dict(num_frames=num_frames, cross_attention_dim=cfg.cross_attention_dim, **common)
  pad = getattr(cfg, "downsample_padding", 1)
  skips = [x]
  for i, kind in enumerate(cfg.down_block_types):
    block = DOWN_3D[kind](out_channels=cfg.block_out_channels[i], num_layers=cfg.layers_per_block,
                          add_downsample=i < n - 1, downsample_padding=pad, head_dim=heads[i],
                          name=f"down_blocks_{i}", **kw)
    x, res = block(x, emb, context)
    skips.extend(res)
  x = UNetMidBlock3DCrossAttn(head_dim=heads[-1], name="mid_block",
                              **{**kw, "output_scale_factor": getattr(
                                  cfg, "mid_block_scale_factor", 1.0)})(x, emb, context)
  forward_size = any(s % (2 ** (n - 1)) for s in sample_hw)
  rev_ch, rev_heads = tuple(reversed(cfg.block_out_channels)), heads[::-1]
  for i, kind in enumerate(cfg.up_block_types):
    num = cfg.layers_per_block + 1
    res, skips = skips[-num:], skips[:-num]
    final = i == n - 1
    size = skips[-1].shape[1:3] if (not final and forward_size) else None
    block = UP_3D[kind](out_channels=rev_ch[i], num_layers=num, add_upsample=not final,
                        head_dim=rev_heads[i], name=f"up_blocks_{i}", **kw)
    x = block(x, res, emb, context, size)
  return x
