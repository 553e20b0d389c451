"""AutoencoderKL (Stable Diffusion's VAE), channels-last, with diffusers parity.

    vae = AutoencoderKL(AutoencoderKLConfig(...))
    posterior = vae.apply(params, images, method=vae.encode)   # images [B, H, W, 3] in [-1, 1]
    z = posterior.sample(rng)                                  # [B, H/f, W/f, latent_channels]
    latents = vae.config.scale(z)                              # what the UNet sees
    images = vae.apply(params, vae.config.unscale(latents), method=vae.decode)

`f = 2 ** (len(block_out_channels) - 1)`.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from vitron_jax.backends.diffusion.config import DiffusersConfig
from vitron_jax.backends.diffusion.embeddings import act_fn
from vitron_jax.backends.diffusion.unet_blocks import (DownEncoderBlock2D, UNetMidBlock2D,
                                                       UpDecoderBlock2D)
from vitron_jax.nn.checks import check_images
from vitron_jax.nn.conv import PIXEL_AXES, Conv, GroupNorm


@dataclasses.dataclass(frozen=True)
class AutoencoderKLConfig(DiffusersConfig):
  """diffusers `AutoencoderKL` config (same field names and defaults)."""
  _class_name = "AutoencoderKL"
  in_channels: int = 3
  out_channels: int = 3
  down_block_types: tuple[str, ...] = ("DownEncoderBlock2D",)
  up_block_types: tuple[str, ...] = ("UpDecoderBlock2D",)
  block_out_channels: tuple[int, ...] = (64,)
  layers_per_block: int = 1
  act_fn: str = "silu"
  latent_channels: int = 4
  norm_num_groups: int = 32
  sample_size: int = 32
  scaling_factor: float = 0.18215
  shift_factor: float | None = None
  latents_mean: tuple[float, ...] | None = None
  latents_std: tuple[float, ...] | None = None
  force_upcast: bool = True
  use_quant_conv: bool = True
  use_post_quant_conv: bool = True
  mid_block_add_attention: bool = True

  def validate(self) -> None:
    n = len(self.block_out_channels)
    if tuple(self.down_block_types) != ("DownEncoderBlock2D",) * n:
      raise ValueError(f"AutoencoderKL down_block_types must be {n} x 'DownEncoderBlock2D', got "
                       f"{self.down_block_types}")
    if tuple(self.up_block_types) != ("UpDecoderBlock2D",) * n:
      raise ValueError(f"AutoencoderKL up_block_types must be {n} x 'UpDecoderBlock2D', got "
                       f"{self.up_block_types}")

  @property
  def downsample_factor(self) -> int:
    return 2 ** (len(self.block_out_channels) - 1)

  def scale(self, z: jax.Array) -> jax.Array:
    """VAE latents -> diffusion latents: `(z - shift_factor) * scaling_factor`."""
    return (z - (self.shift_factor or 0.0)) * self.scaling_factor

  def unscale(self, latents: jax.Array) -> jax.Array:
    """Diffusion latents -> VAE latents: `latents / scaling_factor + shift_factor`."""
    return latents / self.scaling_factor + (self.shift_factor or 0.0)


@flax.struct.dataclass
class DiagonalGaussian:
  """The encoder's posterior; `mean`/`logvar` `[B, h, w, latent_channels]` (logvar clamped)."""
  mean: jax.Array
  logvar: jax.Array

  @classmethod
  def from_moments(cls, moments: jax.Array) -> "DiagonalGaussian":
    mean, logvar = jnp.split(moments, 2, axis=-1)
    return cls(mean, jnp.clip(logvar, -30.0, 20.0))

  @property
  def std(self) -> jax.Array:
    return jnp.exp(0.5 * self.logvar)

  @property
  def var(self) -> jax.Array:
    return jnp.exp(self.logvar)

  def sample(self, rng: jax.Array) -> jax.Array:
    return self.mean + self.std * jax.random.normal(rng, self.mean.shape, self.mean.dtype)

  def mode(self) -> jax.Array:
    return self.mean

  def kl(self) -> jax.Array:
    """KL to N(0, I), summed over h, w, c: `[B]`."""
    return 0.5 * jnp.sum(jnp.square(self.mean) + self.var - 1.0 - self.logvar, axis=(1, 2, 3))


class Encoder(nn.Module):
  """`[B, H, W, in] -> [B, H/f, W/f, 2 * latent_channels]` (mean and logvar moments)."""
  config: AutoencoderKLConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg = self.config
    ch = cfg.block_out_channels
    kw = dict(groups=cfg.norm_num_groups, eps=1e-6, act=cfg.act_fn, dtype=self.dtype)
    x = Conv(ch[0], (3, 3), padding=1, dtype=self.dtype, name="conv_in")(x)
    for i, out in enumerate(ch):
      x = DownEncoderBlock2D(out_channels=out, num_layers=cfg.layers_per_block,
                             add_downsample=i < len(ch) - 1, downsample_padding=0,
                             name=f"down_blocks_{i}", **kw)(x)
    x = UNetMidBlock2D(attention_head_dim=ch[-1], add_attention=cfg.mid_block_add_attention,
                       name="mid_block", **kw)(x)
    x = GroupNorm(cfg.norm_num_groups, eps=1e-6, dtype=self.dtype, name="conv_norm_out")(x)
    x = act_fn(cfg.act_fn)(x)
    return Conv(2 * cfg.latent_channels, (3, 3), padding=1, dtype=self.dtype,
                axes=PIXEL_AXES, name="conv_out")(x)


class Decoder(nn.Module):
  """`[B, h, w, latent_channels] -> [B, h*f, w*f, out_channels]`."""
  config: AutoencoderKLConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    cfg = self.config
    ch = tuple(reversed(cfg.block_out_channels))
    kw = dict(groups=cfg.norm_num_groups, eps=1e-6, act=cfg.act_fn, dtype=self.dtype)
    x = Conv(ch[0], (3, 3), padding=1, dtype=self.dtype, name="conv_in")(z)
    x = UNetMidBlock2D(attention_head_dim=ch[0], add_attention=cfg.mid_block_add_attention,
                       name="mid_block", **kw)(x)
    for i, out in enumerate(ch):
      x = UpDecoderBlock2D(out_channels=out, num_layers=cfg.layers_per_block + 1,
                           add_upsample=i < len(ch) - 1, name=f"up_blocks_{i}", **kw)(x)
    x = GroupNorm(cfg.norm_num_groups, eps=1e-6, dtype=self.dtype, name="conv_norm_out")(x)
    x = act_fn(cfg.act_fn)(x)
    return Conv(cfg.out_channels, (3, 3), padding=1, dtype=self.dtype, axes=PIXEL_AXES,
                name="conv_out")(x)


class AutoencoderKL(nn.Module):
  """diffusers `AutoencoderKL`: `encode` -> DiagonalGaussian, `decode` -> images."""
  config: AutoencoderKLConfig
  dtype: Any = jnp.float32

  def setup(self):
    self.config.validate()
    cfg = self.config
    self.encoder = Encoder(cfg, self.dtype)
    self.decoder = Decoder(cfg, self.dtype)
    n = cfg.latent_channels
    conv = lambda c: Conv(c, (1, 1), axes=PIXEL_AXES, dtype=self.dtype)
    self.quant_conv = conv(2 * n) if cfg.use_quant_conv else None
    self.post_quant_conv = conv(n) if cfg.use_post_quant_conv else None

  def encode(self, images: jax.Array) -> DiagonalGaussian:
    """images `[B, H, W, in_channels]` in [-1, 1] (H, W multiples of the downsample factor)."""
    check_images(images, channels=self.config.in_channels,
                 multiple_of=self.config.downsample_factor, name="images")
    moments = self.encoder(images)
    if self.quant_conv is not None:
      moments = self.quant_conv(moments)
    return DiagonalGaussian.from_moments(moments.astype(jnp.float32))

  def decode(self, latents: jax.Array) -> jax.Array:
    """VAE latents `[B, h, w, latent_channels]` (unscaled) -> images `[B, h*f, w*f, out]`."""
    check_images(latents, channels=self.config.latent_channels, name="latents")
    z = latents
    if self.post_quant_conv is not None:
      z = self.post_quant_conv(z)
    return self.decoder(z)

  def __call__(self, images: jax.Array, rng: jax.Array | None = None) -> jax.Array:
    """Reconstruction: decode(posterior.sample(rng)) or decode(posterior.mode()) without rng."""
    post = self.encode(images)
    z = post.mode() if rng is None else post.sample(rng)
    return self.decode(z)


def vae_init_inputs(config: AutoencoderKLConfig) -> tuple[jax.Array]:
  """Smallest valid input for `init` / `eval_shape`."""
  f = config.downsample_factor
  return (jnp.zeros((1, f, f, config.in_channels), jnp.float32),)

