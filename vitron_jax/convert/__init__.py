"""Weights in and out: Hugging Face / diffusers folders <-> Flax parameter trees.

Safetensors only; nothing is ever unpickled. Loaders return `(module, params)` with `params`
the bare parameter tree: `module.apply({"params": params}, ...)`.
"""
from vitron_jax.convert.safetensors_io import (WeightsError, read_weights, write_weights,
                                               find_weight_files)
from vitron_jax.convert.tree import WeightsMismatchError, check_keys
from vitron_jax.convert.llama import load_llama, save_llama
from vitron_jax.convert.clip import (load_clip_vision, save_clip_vision, load_clip_text,
                                     save_clip_text)
from vitron_jax.convert.diffusers import (load_vae, save_vae, load_unet2d, save_unet2d,
                                          load_unet3d, save_unet3d, load_i2vgen_unet,
                                          save_i2vgen_unet)
from vitron_jax.convert.sam import load_sam, save_sam
from vitron_jax.convert.diffusers_pipeline import load_diffusion_pipeline
