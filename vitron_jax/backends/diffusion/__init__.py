"""Diffusion networks in Flax with diffusers parity: VAE, UNet2D (+GLIGEN), UNet3D, I2VGen-XL.

Everything is channels-last: images `[B, H, W, C]`, latents `[B, h, w, c]`, videos
`[B, T, H, W, C]`. Each network is a linen module built from a frozen config dataclass that
reads/writes diffusers' `config.json` (`Config.from_diffusers(d)`, `config.to_diffusers()`);
weights convert with `vitron_jax.convert.diffusers` (`load_*` / `save_*`).

| network | module (config) | call |
|---|---|---|
| VAE | `AutoencoderKL` (`AutoencoderKLConfig`) | `encode(images) -> DiagonalGaussian`, `decode(z)` |
| SD 1.x/2.x, GLIGEN | `UNet2DConditionModel` (`UNet2DConditionConfig`) | `(sample, t, context, gligen=)` |
| ZeroScope | `UNet3DConditionModel` (`UNet3DConditionConfig`) | `(video, t, context)` |
| I2VGen-XL | `I2VGenXLUNet` (`I2VGenXLConfig`) | `(video, t, fps, image_latents, image_emb, context)` |

Schedulers, samplers and pipelines live beside these modules.
"""
from vitron_jax.backends.diffusion.gligen import GligenInputs
from vitron_jax.backends.diffusion.i2vgen import (I2VGenXLConfig, I2VGenXLUNet,
                                                  image_latents_for_frames)
from vitron_jax.backends.diffusion.unet2d import UNet2DConditionConfig, UNet2DConditionModel
from vitron_jax.backends.diffusion.unet3d import UNet3DConditionConfig, UNet3DConditionModel
from vitron_jax.backends.diffusion.vae import AutoencoderKL, AutoencoderKLConfig, DiagonalGaussian

__all__ = [
    "AutoencoderKL", "AutoencoderKLConfig", "DiagonalGaussian", "GligenInputs", "I2VGenXLConfig",
    "I2VGenXLUNet", "UNet2DConditionConfig", "UNet2DConditionModel", "UNet3DConditionConfig",
    "UNet3DConditionModel", "image_latents_for_frames",
]
