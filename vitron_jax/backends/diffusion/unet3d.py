"""UNet3DConditionModel (ZeroScope / ModelScope text-to-video) with diffusers parity.

    unet = UNet3DConditionModel(UNet3DConditionConfig(...))
    eps = unet.apply(params, sample, timesteps, context)
    #   sample [B, T, h, w, in_channels] (channels-last video latents), timesteps [B] or scalar,
    #   context [B, L, cross_attention_dim]  ->  [B, T, h, w, out_channels]

Any number of frames T >= 1 works (no temporal position embedding). Spatial layers see the
frames stacked in the batch; temporal convs and temporal attention mix along T.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vitron_jax.backends.diffusion.attention_blocks import TransformerTemporal
from vitron_jax.backends.diffusion.config import DiffusersConfig
from vitron_jax.backends.diffusion.embeddings import (TimestepEmbedding, broadcast_timesteps,
                                                      timestep_embedding)
from vitron_jax.backends.diffusion.unet2d import per_block
from vitron_jax.backends.diffusion.unet3d_blocks import DOWN_3D, UP_3D, run_unet3d_body
from vitron_jax.nn.conv import PIXEL_AXES, Conv, GroupNorm


def validate_video_config(cfg, what: str) -> None:
  """Checks shared by UNet3D and I2VGen-XL configs."""
  n = len(cfg.block_out_channels)
  if len(cfg.down_block_types) != n or len(cfg.up_block_types) != n:
    raise ValueError(f"{what}: down_block_types and up_block_types must have one entry per "
                     f"block_out_channels ({n})")
  for t in cfg.down_block_types:
    if t not in DOWN_3D:
      raise ValueError(f"{what}: unsupported down block {t!r}; expected one of {sorted(DOWN_3D)}")
  for t in cfg.up_block_types:
    if t not in UP_3D:
      raise ValueError(f"{what}: unsupported up block {t!r}; expected one of {sorted(UP_3D)}")
  if not isinstance(cfg.attention_head_dim, int):
    raise ValueError(f"{what}: attention_head_dim must be an int (the first temporal transformer "
                     f"uses it as its head size), got {cfg.attention_head_dim!r}")
  for c in cfg.block_out_channels:
    if c % cfg.attention_head_dim:
      raise ValueError(f"{what}: block width {c} is not a multiple of attention_head_dim "
                       f"{cfg.attention_head_dim}")
  if not isinstance(cfg.layers_per_block, int):
    raise ValueError(f"{what}: layers_per_block must be an int, got {cfg.layers_per_block!r}")


def check_video(x, channels: int, name: str = "sample") -> tuple[int, int]:
  """A channels-last video `[B, T, H, W, C]`; returns (B, T)."""
  if x.ndim != 5:
    raise ValueError(f"{name} must be channels-last video latents [batch, frames, height, width, "
                     f"channels], got shape {tuple(x.shape)}")
  if x.shape[-1] != channels:
    raise ValueError(f"{name} has {x.shape[-1]} latent channels, but the config takes "
                     f"in_channels={channels} (shape {tuple(x.shape)}, channels last)")
  if x.shape[1] < 1:
    raise ValueError(f"{name} must have at least one frame, got shape {tuple(x.shape)}")
  return x.shape[0], x.shape[1]


def check_context(context, batch: int, dim: int, name: str = "encoder_hidden_states") -> None:
  if context.ndim != 3 or context.shape[0] != batch or context.shape[-1] != dim:
    raise ValueError(f"{name} must have shape [batch={batch}, tokens, cross_attention_dim={dim}]"
                     f", got {tuple(context.shape)}")


@dataclasses.dataclass(frozen=True)
class UNet3DConditionConfig(DiffusersConfig):
  """diffusers `UNet3DConditionModel` config (same names and defaults)."""
  _class_name = "UNet3DConditionModel"
  _unsupported = {"num_attention_heads": None}
  sample_size: int | None = None
  in_channels: int = 4
  out_channels: int = 4
  down_block_types: tuple[str, ...] = ("CrossAttnDownBlock3D", "CrossAttnDownBlock3D",
                                       "CrossAttnDownBlock3D", "DownBlock3D")
  up_block_types: tuple[str, ...] = ("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D",
                                     "CrossAttnUpBlock3D")
  block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
  layers_per_block: int = 2
  downsample_padding: int = 1
  mid_block_scale_factor: float = 1.0
  act_fn: str = "silu"
  norm_num_groups: int = 32
  norm_eps: float = 1e-5
  cross_attention_dim: int = 1024
  attention_head_dim: int = 64
  time_cond_proj_dim: int | None = None

  def validate(self) -> None:
    validate_video_config(self, "UNet3DConditionModel")


class UNet3DConditionModel(nn.Module):
  """Text-to-video noise prediction UNet; see the module docstring for shapes."""
  config: UNet3DConditionConfig
  dtype: Any = jnp.float32
  remat: bool = False

  @nn.compact
  def __call__(self, sample: jax.Array, timesteps: jax.Array, encoder_hidden_states: jax.Array,
               *, timestep_cond: jax.Array | None = None) -> jax.Array:
    cfg = self.config
    cfg.validate()
    b, t = check_video(sample, cfg.in_channels)
    check_context(encoder_hidden_states, b, cfg.cross_attention_dim)
    _, _, h, w, _ = sample.shape
    kw = dict(dtype=self.dtype)
    ted = cfg.block_out_channels[0] * 4

    ts = broadcast_timesteps(timesteps, b)
    t_emb = timestep_embedding(ts, cfg.block_out_channels[0], True, 0)
    emb = TimestepEmbedding(ted, cfg.act_fn, cond_proj_dim=cfg.time_cond_proj_dim,
                            name="time_embedding", **kw)(t_emb.astype(self.dtype), timestep_cond)
    emb = jnp.repeat(emb, t, axis=0)
    context = jnp.repeat(encoder_hidden_states.astype(self.dtype), t, axis=0)

    x = sample.astype(self.dtype).reshape(b * t, h, w, cfg.in_channels)
    x = Conv(cfg.block_out_channels[0], (3, 3), padding=1, name="conv_in", **kw)(x)
    x = TransformerTemporal(8, cfg.attention_head_dim, t, norm_num_groups=cfg.norm_num_groups,
                            name="transformer_in", **kw)(x)
    heads = per_block(cfg.attention_head_dim, len(cfg.block_out_channels), "attention_head_dim")
    common = dict(groups=cfg.norm_num_groups, eps=cfg.norm_eps, act=cfg.act_fn,
                  remat=self.remat, **kw)
    x = run_unet3d_body(cfg, x, emb, context, t, heads, common, (h, w))
    x = GroupNorm(cfg.norm_num_groups, eps=cfg.norm_eps, name="conv_norm_out", **kw)(x)
    x = jax.nn.silu(x)
    x = Conv(cfg.out_channels, (3, 3), padding=1, axes=PIXEL_AXES, name="conv_out", **kw)(x)
    return x.reshape(b, t, h, w, cfg.out_channels)


def unet3d_init_inputs(config: UNet3DConditionConfig) -> tuple:
  """Smallest valid `(sample, timesteps, context)` for `init` / `eval_shape`."""
  f = 2 ** (len(config.block_out_channels) - 1)
  return (jnp.zeros((1, 1, f, f, config.in_channels)), jnp.zeros((1,)),
          jnp.zeros((1, 1, config.cross_attention_dim)))
