"""Diffusion networks in Flax with diffusers parity: VAE, UNet2D (+GLIGEN), UNet3D, I2VGen-XL.

Everything is channels-last: images `[B, H, W, C]`, latents `[B, h, w, c]`, videos
`[B, T, H, W, C]`. Schedulers, samplers and pipelines live beside these modules.
"""
