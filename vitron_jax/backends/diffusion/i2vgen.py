"""I2VGenXLUNet (image-to-video) with diffusers parity, channels-last.

    unet = I2VGenXLUNet(I2VGenXLConfig(...))
    eps = unet.apply(params, sample, timesteps, fps, image_latents, image_embeddings, context)
    #   sample          [B, T, h, w, in_channels]  noisy video latents
    #   timesteps       [B] or scalar;  fps [B] or scalar (frame-rate micro-condition)
    #   image_latents   [B, T, h, w, 4]  scaled VAE latents of the conditioning image in frame 0,
    #                   frame-position planes after it (see `image_latents_for_frames`)
    #   image_embeddings [B, D] or [B, 1, D]  CLIP image embedding (D = cross_attention_dim)
    #   context         [B, L, D]  text encoder states
    #   -> [B, T, h, w, out_channels]

The image enters three ways, as in the reference: (1) its latents, encoded per frame by convs
and a temporal transformer, are concatenated to the sample's channels; (2) the first frame's
latents become 64 extra context tokens (conv stack with an adaptive 32x32 pool); (3) the CLIP
embedding becomes `in_channels` more context tokens. fps is embedded like a timestep and added.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vitron_jax.backends.diffusion.config import DiffusersConfig
from vitron_jax.backends.diffusion.cross_attention import Attention, FeedForward
from vitron_jax.backends.diffusion.embeddings import (TimestepEmbedding, broadcast_timesteps,
                                                      mlp_embedding, timestep_embedding)
from vitron_jax.backends.diffusion.attention_blocks import TransformerTemporal
from vitron_jax.backends.diffusion.unet2d import per_block
from vitron_jax.backends.diffusion.unet3d import (check_context, check_video,
                                                  validate_video_config)
from vitron_jax.backends.diffusion.unet3d_blocks import run_unet3d_body
from vitron_jax.nn.conv import PIXEL_AXES, Conv, GroupNorm, adaptive_avg_pool2d
from vitron_jax.nn.norms import LayerNorm

#: the reference hard-codes 4 channels for the conditioning image latents (SD VAE).
IMAGE_LATENT_CHANNELS = 4


@dataclasses.dataclass(frozen=True)
class I2VGenXLConfig(DiffusersConfig):
  """diffusers `I2VGenXLUNet` config (same names and defaults)."""
  _class_name = "I2VGenXLUNet"
  sample_size: int | None = None
  in_channels: int = 4
  out_channels: int = 4
  down_block_types: tuple[str, ...] = ("CrossAttnDownBlock3D", "CrossAttnDownBlock3D",
                                       "CrossAttnDownBlock3D", "DownBlock3D")
  up_block_types: tuple[str, ...] = ("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D",
                                     "CrossAttnUpBlock3D")
  block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
  layers_per_block: int = 2
  norm_num_groups: int = 32
  cross_attention_dim: int = 1024
  attention_head_dim: int = 64
  #: read and written back but unused: the reference sets heads from attention_head_dim.
  num_attention_heads: int | tuple[int, ...] | None = None

  def validate(self) -> None:
    validate_video_config(self, "I2VGenXLUNet")


def image_latents_for_frames(first_frame: jax.Array, num_frames: int) -> jax.Array:
  """`[B, h, w, 4]` image latents -> `[B, T, h, w, 4]`: the image, then planes (i+1)/(T-1).

  The reference pipeline's `prepare_image_latents` (after VAE encoding and scaling).
  """
  planes = [first_frame[:, None]]
  for i in range(num_frames - 1):
    planes.append(jnp.ones_like(first_frame)[:, None] * ((i + 1) / (num_frames - 1)))
  return jnp.concatenate(planes, axis=1)


class I2VGenXLTransformerTemporalEncoder(nn.Module):
  """`x + attn1(norm1(x))` then `+ ff(x)` (no norm before ff), on `[N, T, dim]`.

  Its width is the latent channel count (4), so its weights are left unpartitioned.
  """
  heads: int
  dim_head: int
  ff_inner_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = LayerNorm(name="norm1", dtype=self.dtype)(x)
    x = x + Attention(self.heads, self.dim_head, partition=False, name="attn1",
                      dtype=self.dtype)(h)
    return x + FeedForward(inner_dim=self.ff_inner_dim, activation_fn="gelu", partition=False,
                           name="ff", dtype=self.dtype)(x)


def _check_i2v_inputs(cfg: I2VGenXLConfig, sample, fps, image_latents, image_embeddings,
                      context):
  b, t = check_video(sample, cfg.in_channels)
  broadcast_timesteps(fps, b, name="fps")
  want = sample.shape[:4] + (IMAGE_LATENT_CHANNELS,)
  if image_latents.shape != want:
    raise ValueError(f"image_latents must have shape {want} (the sample's batch, frames and "
                     f"size, {IMAGE_LATENT_CHANNELS} VAE channels), got "
                     f"{tuple(image_latents.shape)}; a frame count different from the sample's "
                     "cannot be taken")
  emb = image_embeddings
  if emb.ndim == 3 and emb.shape[1] == 1:
    emb = emb[:, 0]
  if emb.shape != (b, cfg.cross_attention_dim):
    raise ValueError(f"image_embeddings must have shape [{b}, {cfg.cross_attention_dim}] (or "
                     f"[{b}, 1, {cfg.cross_attention_dim}]), got {tuple(image_embeddings.shape)}")
  check_context(context, b, cfg.cross_attention_dim)
  return b, t, emb


class I2VGenXLUNet(nn.Module):
  """Image-conditioned video noise prediction; see the module docstring for shapes."""
  config: I2VGenXLConfig
  dtype: Any = jnp.float32
  remat: bool = False

  @nn.compact
  def __call__(self, sample: jax.Array, timesteps: jax.Array, fps: jax.Array,
               image_latents: jax.Array, image_embeddings: jax.Array,
               encoder_hidden_states: jax.Array) -> jax.Array:
    cfg = self.config
    cfg.validate()
    b, t, img_emb = _check_i2v_inputs(cfg, sample, fps, image_latents, image_embeddings,
                                      encoder_hidden_states)
    _, _, h, w, c_in = sample.shape
    kw = dict(dtype=self.dtype)
    c0, d = cfg.block_out_channels[0], cfg.cross_attention_dim
    ted = c0 * 4

    # 1-3. time + fps embeddings, one per frame.
    ts = broadcast_timesteps(timesteps, b)
    t_emb = TimestepEmbedding(ted, "silu", name="time_embedding", **kw)(
        timestep_embedding(ts, c0, True, 0).astype(self.dtype))
    fps_b = broadcast_timesteps(fps, b, name="fps")
    fps_emb = mlp_embedding(timestep_embedding(fps_b, c0, True, 0).astype(self.dtype),
                            "fps_embedding", ted, ted, self.dtype)
    emb = jnp.repeat(t_emb + fps_emb, t, axis=0)

    # 4. context: text tokens, first-frame latent tokens, image-embedding tokens.
    x0 = image_latents[:, 0].astype(self.dtype)
    x0 = jax.nn.silu(Conv(c_in * 8, (3, 3), padding=1,
                          name="image_latents_context_embedding_0", **kw)(x0))
    x0 = adaptive_avg_pool2d(x0, (32, 32))
    x0 = jax.nn.silu(Conv(c_in * 16, (3, 3), strides=2, padding=1,
                          name="image_latents_context_embedding_3", **kw)(x0))
    x0 = Conv(d, (3, 3), strides=2, padding=1, name="image_latents_context_embedding_5", **kw)(x0)
    img_tokens = x0.reshape(b, -1, d)
    emb_tokens = mlp_embedding(img_emb.astype(self.dtype), "context_embedding", ted, d * c_in,
                               self.dtype).reshape(b, c_in, d)
    context = jnp.concatenate([encoder_hidden_states.astype(self.dtype), img_tokens, emb_tokens],
                              axis=1)
    context = jnp.repeat(context, t, axis=0)

    # image latents: per-frame convs, then a temporal transformer per pixel.
    il = image_latents.astype(self.dtype).reshape(b * t, h, w, IMAGE_LATENT_CHANNELS)
    il = jax.nn.silu(Conv(c_in * 4, (3, 3), padding=1, name="image_latents_proj_in_0", **kw)(il))
    il = jax.nn.silu(Conv(c_in * 4, (3, 3), padding=1, name="image_latents_proj_in_2", **kw)(il))
    il = Conv(c_in, (3, 3), padding=1, axes=PIXEL_AXES, name="image_latents_proj_in_4",
              **kw)(il)
    il = jnp.transpose(il.reshape(b, t, h, w, c_in), (0, 2, 3, 1, 4)).reshape(b * h * w, t, c_in)
    il = I2VGenXLTransformerTemporalEncoder(2, c_in, c_in * 4,
                                            name="image_latents_temporal_encoder", **kw)(il)
    il = jnp.transpose(il.reshape(b, h, w, t, c_in), (0, 3, 1, 2, 4))

    # 5. pre-process, 6-8. the 3D UNet body, 9. post-process.
    x = jnp.concatenate([sample.astype(self.dtype), il], axis=-1).reshape(b * t, h, w, 2 * c_in)
    x = Conv(c0, (3, 3), padding=1, name="conv_in", **kw)(x)
    x = TransformerTemporal(8, cfg.attention_head_dim, t, norm_num_groups=cfg.norm_num_groups,
                            name="transformer_in", **kw)(x)
    heads = per_block(cfg.attention_head_dim, len(cfg.block_out_channels), "attention_head_dim")
    common = dict(groups=cfg.norm_num_groups, eps=1e-5, act="silu", remat=self.remat, **kw)
    x = run_unet3d_body(cfg, x, emb, context, t, heads, common, (h, w))
    x = jax.nn.silu(GroupNorm(cfg.norm_num_groups, eps=1e-5, name="conv_norm_out", **kw)(x))
    x = Conv(cfg.out_channels, (3, 3), padding=1, axes=PIXEL_AXES, name="conv_out", **kw)(x)
    return x.reshape(b, t, h, w, cfg.out_channels)


def i2vgen_init_inputs(config: I2VGenXLConfig) -> tuple:
  """Smallest valid `(sample, timesteps, fps, image_latents, image_embeddings, context)`."""
  f = 2 ** (len(config.block_out_channels) - 1)
  d = config.cross_attention_dim
  return (jnp.zeros((1, 1, f, f, config.in_channels)), jnp.zeros((1,)), jnp.zeros((1,)),
          jnp.zeros((1, 1, f, f, IMAGE_LATENT_CHANNELS)), jnp.zeros((1, d)),
          jnp.zeros((1, 1, d)))
