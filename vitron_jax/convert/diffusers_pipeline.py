"""A whole local diffusers pipeline folder -> `(DiffusionModels, params)`.

Reads `model_index.json` and loads each component the pipeline names: `unet`
(UNet2DConditionModel for SD / GLIGEN, UNet3DConditionModel for ZeroScope, I2VGenXLUNet),
`vae`, `text_encoder` (through our CLIP text tower), `image_encoder` (I2VGen-XL; CLIP vision
with projection) and `scheduler` (`scheduler/scheduler_config.json`). The tokenizer stays a
transformers tokenizer (`transformers.CLIPTokenizer.from_pretrained(path / "tokenizer")`).

SD-1.x folders ship a PNDM scheduler, which we do not implement: pass `scheduler_kind=`
("ddim", "dpm_solver", "euler", "ddpm") to reuse its beta schedule with one of ours, as
`DDIMScheduler.from_config(pipe.scheduler.config)` does in diffusers.
"""
from __future__ import annotations

import json
import os
import pathlib
from typing import Any

from vitron_jax.convert.safetensors_io import WeightsError

_UNETS = {
    "UNet2DConditionModel": "load_unet2d",
    "UNet3DConditionModel": "load_unet3d",
    "I2VGenXLUNet": "load_i2vgen_unet",
}


def load_diffusion_pipeline(path: str | os.PathLike, *, scheduler_kind: str | None = None
                            ) -> tuple[Any, dict[str, Any]]:
  """Local pipeline folder -> `(DiffusionModels, {"unet", "vae", "text_encoder"[, "image_encoder"]})`."""
  from vitron_jax.backends.diffusion import schedulers as S
  from vitron_jax.backends.diffusion.pipelines import DiffusionModels
  from vitron_jax.convert import clip, diffusers

  root = pathlib.Path(path)
  index_path = root / "model_index.json"
  if not index_path.is_file():
    raise WeightsError(f"{str(root)!r} is not a diffusers pipeline folder (no model_index.json)")
  index = json.loads(index_path.read_text())

  def component(name: str, required: bool = True) -> str | None:
    entry = index.get(name)
    if not entry or entry[1] is None:
      if required:
        raise WeightsError(f"pipeline {str(root)!r} has no {name!r} component in model_index.json")
      return None
    return entry[1]

  unet_cls = component("unet")
  if unet_cls not in _UNETS:
    raise WeightsError(f"pipeline {str(root)!r}: unet class {unet_cls!r} is not supported; "
                       f"expected one of {sorted(_UNETS)}")
  unet, unet_params = getattr(diffusers, _UNETS[unet_cls])(root / "unet")
  component("vae")
  vae, vae_params = diffusers.load_vae(root / "vae")
  component("text_encoder")
  text, text_params = clip.load_clip_text(root / "text_encoder")
  params = {"unet": unet_params, "vae": vae_params, "text_encoder": text_params}
  image_encoder = None
  if component("image_encoder", required=False):
    image_encoder, params["image_encoder"] = clip.load_clip_vision(root / "image_encoder",
                                                                  with_projection=True)
  component("scheduler")
  sched_path = root / "scheduler" / "scheduler_config.json"
  if not sched_path.is_file():
    raise WeightsError(f"pipeline {str(root)!r} has no scheduler/scheduler_config.json")
  scheduler = S.from_diffusers_config(json.loads(sched_path.read_text()), kind=scheduler_kind)
  models = DiffusionModels(unet=unet, vae=vae, scheduler=scheduler, text_encoder=text,
                           image_encoder=image_encoder)
  return models, params
