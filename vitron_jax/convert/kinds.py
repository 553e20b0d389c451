"""The kinds of model `vitron-convert` knows: how to load, save, describe and rebuild each.

A kind's *description* is a JSON-able dict from which the Flax module is rebuilt without the
original folder (our own config form, not the HF one), stored next to an orbax checkpoint.
Adding a kind is one `Kind(...)` entry; imports are lazy so the CLI starts fast.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable


def _fn(path: str) -> Callable[..., Any]:
  mod, name = path.split(":")
  return getattr(importlib.import_module(mod), name)


@dataclasses.dataclass(frozen=True)
class Kind:
  name: str
  load: str                        # "module:function" (folder) -> (module, params)
  save: str                        # "module:function" (module, params, folder)
  describe: Callable[[Any], dict]  # module -> JSON-able description
  build: Callable[[dict], Any]     # description -> module
  doc: str = ""

  def load_fn(self):
    return _fn(self.load)

  def save_fn(self):
    return _fn(self.save)


def _describe_config(module) -> dict:
  d = {"config": module.config.to_dict()}
  if hasattr(module, "with_projection"):
    d["with_projection"] = bool(module.with_projection)
  return d


def _build(model_path: str, config_path: str):
  def build(desc: dict):
    model_cls, config_cls = _fn(model_path), _fn(config_path)
    kwargs = {k: v for k, v in desc.items() if k != "config"}
    return model_cls(config_cls.from_dict(desc["config"]), **kwargs)
  return build


def _describe_sam(module) -> dict:
  return {"hf_config": module.config.to_hf_dict(), "dtype": module.config.dtype}


def _build_sam(desc: dict):
  config = _fn("vitron_jax.backends.segmentation.config:SamConfig").from_hf_dict(
      desc["hf_config"], dtype=desc.get("dtype", "float32"))
  return _fn("vitron_jax.backends.segmentation.sam:SamModel")(config)


KINDS: dict[str, Kind] = {k.name: k for k in [
    Kind("llama", "vitron_jax.convert.llama:load_llama", "vitron_jax.convert.llama:save_llama",
         _describe_config,
         _build("vitron_jax.models.llama:Llama", "vitron_jax.models.llama:LlamaConfig"),
         "transformers LlamaForCausalLM folder (Vicuna, Llama-2/3)"),
    Kind("clip_vision", "vitron_jax.convert.clip:load_clip_vision",
         "vitron_jax.convert.clip:save_clip_vision", _describe_config,
         _build("vitron_jax.models.clip:CLIPVisionModel",
                "vitron_jax.models.clip_config:CLIPVisionConfig"),
         "transformers CLIPVisionModel[WithProjection] or CLIPModel folder"),
    Kind("clip_text", "vitron_jax.convert.clip:load_clip_text",
         "vitron_jax.convert.clip:save_clip_text", _describe_config,
         _build("vitron_jax.models.clip:CLIPTextModel",
                "vitron_jax.models.clip_config:CLIPTextConfig"),
         "transformers CLIPTextModel[WithProjection] or CLIPModel folder"),
    Kind("vae", "vitron_jax.convert.diffusers:load_vae", "vitron_jax.convert.diffusers:save_vae",
         _describe_config,
         _build("vitron_jax.backends.diffusion.vae:AutoencoderKL",
                "vitron_jax.backends.diffusion.vae:AutoencoderKLConfig"),
         "diffusers AutoencoderKL folder (e.g. <pipeline>/vae)"),
    Kind("unet2d", "vitron_jax.convert.diffusers:load_unet2d",
         "vitron_jax.convert.diffusers:save_unet2d", _describe_config,
         _build("vitron_jax.backends.diffusion.unet2d:UNet2DConditionModel",
                "vitron_jax.backends.diffusion.unet2d:UNet2DConditionConfig"),
         "diffusers UNet2DConditionModel folder (SD 1.x/2.x, GLIGEN, inpainting)"),
    Kind("unet3d", "vitron_jax.convert.diffusers:load_unet3d",
         "vitron_jax.convert.diffusers:save_unet3d", _describe_config,
         _build("vitron_jax.backends.diffusion.unet3d:UNet3DConditionModel",
                "vitron_jax.backends.diffusion.unet3d:UNet3DConditionConfig"),
         "diffusers UNet3DConditionModel folder (ZeroScope)"),
    Kind("i2vgen_unet", "vitron_jax.convert.diffusers:load_i2vgen_unet",
         "vitron_jax.convert.diffusers:save_i2vgen_unet", _describe_config,
         _build("vitron_jax.backends.diffusion.i2vgen:I2VGenXLUNet",
                "vitron_jax.backends.diffusion.i2vgen:I2VGenXLConfig"),
         "diffusers I2VGenXLUNet folder"),
    Kind("sam", "vitron_jax.convert.sam:load_sam", "vitron_jax.convert.sam:save_sam",
         _describe_sam, _build_sam, "transformers SamModel folder"),
]}


def get_kind(name: str) -> Kind:
  if name not in KINDS:
    raise ValueError(f"unknown model kind {name!r}; expected one of {sorted(KINDS)}")
  return KINDS[name]
