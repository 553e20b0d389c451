"""UNet2DConditionModel (Stable Diffusion 1.x / 2.x, GLIGEN, inpainting) with diffusers parity.

    unet = UNet2DConditionModel(UNet2DConditionConfig(...))
    eps = unet.apply(params, sample, timesteps, context)          # noise (or v) prediction
    #   sample [B, h, w, in_channels], timesteps [B] (or scalar), context [B, L, cross_dim]
    #   -> [B, h, w, out_channels]
    eps = unet.apply(params, sample, t, context, gligen=GligenInputs(boxes, phrase_emb, masks))

GLIGEN generation uses `attention_type="gated"` and 4 input channels; GLIGEN inpainting the
same with `in_channels=9`: `concat([noisy_latents, masked_image_latents, mask], -1)` (diffusers'
`StableDiffusionGLIGENPipeline` order: latents (4), latents * keep-mask (4), keep-mask (1)).

Dropout (`dropout` in the config) is a training regularizer of the reference and is not
applied here: the network is deterministic.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vitron_jax.backends.diffusion.config import DiffusersConfig
from vitron_jax.backends.diffusion.cross_attention import key_padding_mask
from vitron_jax.backends.diffusion.embeddings import (TimestepEmbedding, act_fn,
                                                      broadcast_timesteps, timestep_embedding)
from vitron_jax.backends.diffusion.gligen import (DEFAULT_MAX_OBJS, GligenInputs,
                                                  GLIGENTextBoundingboxProjection,
                                                  check_gligen_inputs)
from vitron_jax.backends.diffusion.unet_blocks import (CrossAttnDownBlock2D, CrossAttnUpBlock2D,
                                                       DownBlock2D, UNetMidBlock2DCrossAttn,
                                                       UpBlock2D)
from vitron_jax.nn.conv import PIXEL_AXES, Conv, GroupNorm

_DOWN = ("CrossAttnDownBlock2D", "DownBlock2D")
_UP = ("CrossAttnUpBlock2D", "UpBlock2D")


def per_block(value, n: int, what: str) -> tuple:
  """An int (or None) for every block, or a per-block tuple of length n."""
  if isinstance(value, (tuple, list)):
    if len(value) != n:
      raise ValueError(f"{what} {tuple(value)} must have one entry per block ({n})")
    return tuple(value)
  return (value,) * n


@dataclasses.dataclass(frozen=True)
class UNet2DConditionConfig(DiffusersConfig):
  """diffusers `UNet2DConditionModel` config (same names and defaults)."""
  _class_name = "UNet2DConditionModel"
  _unsupported = {
      "only_cross_attention": False, "reverse_transformer_layers_per_block": None,
      "encoder_hid_dim": None, "encoder_hid_dim_type": None, "num_attention_heads": None,
      "dual_cross_attention": False, "class_embed_type": None, "addition_embed_type": None,
      "addition_time_embed_dim": None, "num_class_embeds": None, "resnet_skip_time_act": False,
      "time_embedding_type": "positional", "projection_class_embeddings_input_dim": None,
      "class_embeddings_concat": False, "mid_block_only_cross_attention": None,
      "cross_attention_norm": None,
  }
  _local_fields = ("gligen_max_objs",)
  sample_size: int | tuple[int, int] | None = None
  in_channels: int = 4
  out_channels: int = 4
  center_input_sample: bool = False
  flip_sin_to_cos: bool = True
  freq_shift: int = 0
  down_block_types: tuple[str, ...] = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                       "CrossAttnDownBlock2D", "DownBlock2D")
  mid_block_type: str | None = "UNetMidBlock2DCrossAttn"
  up_block_types: tuple[str, ...] = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                                     "CrossAttnUpBlock2D")
  block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
  layers_per_block: int | tuple[int, ...] = 2
  downsample_padding: int = 1
  mid_block_scale_factor: float = 1.0
  dropout: float = 0.0
  act_fn: str = "silu"
  norm_num_groups: int = 32
  norm_eps: float = 1e-5
  cross_attention_dim: int = 1280
  transformer_layers_per_block: int | tuple[int, ...] = 1
  attention_head_dim: int | tuple[int, ...] = 8
  use_linear_projection: bool = False
  upcast_attention: bool = False
  resnet_time_scale_shift: str = "default"
  resnet_out_scale_factor: float = 1.0
  time_embedding_dim: int | None = None
  time_embedding_act_fn: str | None = None
  timestep_post_act: str | None = None
  time_cond_proj_dim: int | None = None
  conv_in_kernel: int = 3
  conv_out_kernel: int = 3
  attention_type: str = "default"
  addition_embed_type_num_heads: int = 64
  #: not a diffusers option: the most grounded phrases the GLIGEN position net accepts.
  gligen_max_objs: int = DEFAULT_MAX_OBJS

  def validate(self) -> None:
    n = len(self.block_out_channels)
    if len(self.down_block_types) != n or len(self.up_block_types) != n:
      raise ValueError(f"down_block_types {self.down_block_types} and up_block_types "
                       f"{self.up_block_types} must both have one entry per block_out_channels "
                       f"({n})")
    for t in self.down_block_types:
      if t not in _DOWN:
        raise ValueError(f"unsupported down block {t!r}; expected one of {_DOWN}")
    for t in self.up_block_types:
      if t not in _UP:
        raise ValueError(f"unsupported up block {t!r}; expected one of {_UP}")
    if self.mid_block_type not in ("UNetMidBlock2DCrossAttn", None):
      raise ValueError(f"unsupported mid_block_type {self.mid_block_type!r}")
    if not isinstance(self.cross_attention_dim, int):
      raise ValueError(f"cross_attention_dim must be an int, got {self.cross_attention_dim!r}")
    if self.attention_type not in ("default", "gated"):
      raise ValueError(f"attention_type {self.attention_type!r} is not supported; expected "
                       "'default' or 'gated' (GLIGEN text-only grounding)")
    if self.resnet_time_scale_shift not in ("default", "scale_shift"):
      raise ValueError(f"resnet_time_scale_shift {self.resnet_time_scale_shift!r} is not "
                       "supported; expected 'default' or 'scale_shift'")
    for what in ("layers_per_block", "transformer_layers_per_block", "attention_head_dim"):
      per_block(getattr(self, what), n, what)
    for c, h in zip(self.block_out_channels, self.heads):
      if c % h:
        raise ValueError(f"block width {c} is not divisible by its {h} attention heads")

  @property
  def heads(self) -> tuple[int, ...]:
    """Attention heads per down block (diffusers reads `attention_head_dim` as head count)."""
    return per_block(self.attention_head_dim, len(self.block_out_channels), "attention_head_dim")

  @property
  def time_embed_dim(self) -> int:
    return self.time_embedding_dim or self.block_out_channels[0] * 4

  @property
  def num_upsamplers(self) -> int:
    return len(self.block_out_channels) - 1


class UNet2DConditionModel(nn.Module):
  """Noise-prediction UNet; see the module docstring for shapes."""
  config: UNet2DConditionConfig
  dtype: Any = jnp.float32
  remat: bool = False

  @nn.compact
  def __call__(self, sample: jax.Array, timesteps: jax.Array, encoder_hidden_states: jax.Array,
               *, gligen: GligenInputs | None = None,
               encoder_attention_mask: jax.Array | None = None,
               timestep_cond: jax.Array | None = None) -> jax.Array:
    cfg = self.config
    cfg.validate()
    n = len(cfg.block_out_channels)
    b = _check_inputs(cfg, sample, encoder_hidden_states)
    if cfg.attention_type == "gated" and gligen is None and self.is_initializing():
      gligen = _dummy_gligen(b, cfg.cross_attention_dim)
    if gligen is not None:
      if cfg.attention_type != "gated":
        raise ValueError("gligen inputs need a GLIGEN UNet (config attention_type='gated'), got "
                         f"attention_type={cfg.attention_type!r}")
      check_gligen_inputs(gligen, b, cfg.gligen_max_objs, cfg.cross_attention_dim)
    kw = dict(dtype=self.dtype)

    if cfg.center_input_sample:
      sample = 2 * sample - 1.0
    t = broadcast_timesteps(timesteps, b)
    t_emb = timestep_embedding(t, cfg.block_out_channels[0], cfg.flip_sin_to_cos, cfg.freq_shift)
    emb = TimestepEmbedding(cfg.time_embed_dim, cfg.act_fn, post_act=cfg.timestep_post_act,
                            cond_proj_dim=cfg.time_cond_proj_dim, name="time_embedding", **kw)(
        t_emb.astype(self.dtype), timestep_cond)
    if cfg.time_embedding_act_fn is not None:
      emb = act_fn(cfg.time_embedding_act_fn)(emb)

    context = encoder_hidden_states.astype(self.dtype)
    mask = key_padding_mask(encoder_attention_mask, b, context.shape[1])
    objs = enabled = None
    if gligen is not None:
      objs = GLIGENTextBoundingboxProjection(cfg.cross_attention_dim, cfg.cross_attention_dim,
                                             name="position_net", **kw)(
          gligen.boxes, gligen.masks, gligen.positive_embeddings)
      enabled = gligen.enabled
    cond = (context, mask, objs, enabled)

    k_in = cfg.conv_in_kernel
    x = Conv(cfg.block_out_channels[0], (k_in, k_in), padding=(k_in - 1) // 2, name="conv_in",
             **kw)(sample.astype(self.dtype))

    heads = cfg.heads
    layers = per_block(cfg.layers_per_block, n, "layers_per_block")
    tlayers = per_block(cfg.transformer_layers_per_block, n, "transformer_layers_per_block")
    common = dict(groups=cfg.norm_num_groups, eps=cfg.norm_eps, act=cfg.act_fn,
                  time_embedding_norm=cfg.resnet_time_scale_shift, remat=self.remat, **kw)
    attn = dict(cross_attention_dim=cfg.cross_attention_dim,
                use_linear_projection=cfg.use_linear_projection,
                attention_type=cfg.attention_type)

    skips = [x]
    for i, kind in enumerate(cfg.down_block_types):
      out = cfg.block_out_channels[i]
      args = dict(out_channels=out, num_layers=layers[i], add_downsample=i < n - 1,
                  downsample_padding=cfg.downsample_padding, name=f"down_blocks_{i}", **common)
      if kind == "CrossAttnDownBlock2D":
        block = CrossAttnDownBlock2D(num_attention_heads=heads[i], transformer_layers=tlayers[i],
                                     **attn, **args)
      else:
        block = DownBlock2D(**args)
      x, res = block(x, emb, cond)
      skips.extend(res)

    if cfg.mid_block_type is not None:
      x = UNetMidBlock2DCrossAttn(num_attention_heads=heads[-1], transformer_layers=tlayers[-1],
                                  output_scale_factor=cfg.mid_block_scale_factor,
                                  name="mid_block", **attn, **common)(x, emb, cond)

    forward_size = any(s % (2 ** cfg.num_upsamplers) for s in sample.shape[1:3])
    rev_ch = tuple(reversed(cfg.block_out_channels))
    rev_heads, rev_layers, rev_tl = heads[::-1], layers[::-1], tlayers[::-1]
    for i, kind in enumerate(cfg.up_block_types):
      num = rev_layers[i] + 1
      res, skips = skips[-num:], skips[:-num]
      final = i == n - 1
      size = skips[-1].shape[1:3] if (not final and forward_size) else None
      args = dict(out_channels=rev_ch[i], num_layers=num, add_upsample=not final,
                  name=f"up_blocks_{i}", **common)
      if kind == "CrossAttnUpBlock2D":
        block = CrossAttnUpBlock2D(num_attention_heads=rev_heads[i], transformer_layers=rev_tl[i],
                                   **attn, **args)
      else:
        block = UpBlock2D(**args)
      x = block(x, res, emb, cond, size)

    x = GroupNorm(cfg.norm_num_groups, eps=cfg.norm_eps, name="conv_norm_out", **kw)(x)
    x = act_fn(cfg.act_fn)(x)
    k_out = cfg.conv_out_kernel
    return Conv(cfg.out_channels, (k_out, k_out), padding=(k_out - 1) // 2, axes=PIXEL_AXES,
                name="conv_out",
                **kw)(x)


def _check_inputs(cfg: UNet2DConditionConfig, sample, context) -> int:
  if sample.ndim != 4:
    raise ValueError(f"sample must be channels-last latents [batch, height, width, channels], "
                     f"got shape {tuple(sample.shape)}")
  if sample.shape[-1] != cfg.in_channels:
    raise ValueError(f"sample has {sample.shape[-1]} latent channels, but the UNet config takes "
                     f"in_channels={cfg.in_channels} (shape {tuple(sample.shape)}, channels last)")
  b = sample.shape[0]
  if context.ndim != 3 or context.shape[0] != b or context.shape[-1] != cfg.cross_attention_dim:
    raise ValueError(f"encoder_hidden_states must have shape [batch={b}, tokens, "
                     f"cross_attention_dim={cfg.cross_attention_dim}], got "
                     f"{tuple(context.shape)}")
  return b


def _dummy_gligen(batch: int, dim: int) -> GligenInputs:
  return GligenInputs(jnp.zeros((batch, 1, 4)), jnp.zeros((batch, 1, dim)),
                      jnp.zeros((batch, 1)))


def unet2d_init_inputs(config: UNet2DConditionConfig) -> tuple:
  """Smallest valid `(sample, timesteps, context)` for `init` / `eval_shape`."""
  f = 2 ** config.num_upsamplers
  return (jnp.zeros((1, f, f, config.in_channels)), jnp.zeros((1,)),
          jnp.zeros((1, 1, config.cross_attention_dim)))
