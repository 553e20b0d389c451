"""A trained VITRON run (a `vitron-train` workdir) -> folders PyTorch loads.

    vitron-convert export vitron runs/pixelworld out/vitron_torch

writes

    llm/          transformers `LlamaForCausalLM` folder (config.json + safetensors)
    vision/       transformers `CLIPVisionModel` folder (the trained vision tower)
    heads/        our heads as safetensors + heads.json (`convert.heads`; PyTorch modules in
                  `convert.torch_heads`)
    tokenizer/    the run's tokenizer (`save_pretrained`), protocol tokens included
    vitron.json   the `VitronConfig` (protocol token ids, head modules, routing, shapes)
    backends/segment_image/   when the run attached the segmenter:
        sam/              transformers `SamModel` folder (image encoder, prompt encoder, mask
                          decoder; box / point / mask prompts work as in transformers)
        own.safetensors   the parts transformers has no class for, under their Flax paths:
                          `prompts/text_projection/...` (the native condition's projection)
                          and `text_encoder/...` (`CommandEncoder`); Dense kernels `[in, out]`
        segmenter.json    num_signal_tokens, text_dim, text_len, the tokenizer's pad id and
                          how the condition joins SAM's sparse prompts
    backends/generate_image/  when the run attached the image generator (diffusers layout):
        unet/             diffusers `UNet2DConditionModel` folder (GLIGEN, attention_type
                          "gated"; in_channels = 3 * pixel_patch^2: it denoises pixels, plus
                          with `grounding_layout` the layout's text_width + pixel_patch^2
                          channels after them, `backends.diffusion.layout`)
        text_encoder/     transformers `CLIPTextModel` folder (the native condition)
        scheduler/        `scheduler_config.json` (DDIM)
        generator.json    pixel_patch (space-to-depth of [-1, 1] pixels; no VAE), the text
                          encoder's bos / end-of-text ids, text_len, phrase_len, sampling,
                          grounding_layout and how the layout is drawn
    backends/edit_image/      when the run attached the image editor: the same layout, with
        unet/             an inpainting `UNet2DConditionModel` (in_channels = 3 * 3 *
                          pixel_patch^2 + 1: the noisy pixels, the repaint mask, the masked
                          source as diffusers' inpainting concatenates them, then the whole
                          source; 2 * 3 * pixel_patch^2 + 1 without `source_channels`)
        editor.json       as generator.json (no phrases; the layout draws the command's
                          pooled embedding in each box, after the inpainting channels), with
                          `concat`; the repaint region is the union of the invocation's boxes
                          grown by 1 px
    backends/generate_video/, image_to_video/, edit_video/   when the run attached the video
        unet/             backends (`train.video_diffusion`): diffusers `UNet3DConditionModel`
                          folders in pixel space (in_channels = 3 * pixel_patch^2, plus as
                          many again after them for image_to_video: the first frame on every
                          frame, and edit_video: the source video frame by frame;
                          generate_video, and image_to_video after its first frame: the
                          clip's layout, frame by frame)
        text_encoder/, scheduler/ as the generator's; <what>.json as generator.json, with
                          num_frames and what the UNet's extra channels hold

from the newest checkpoint of the run (or `step`).
"""
from __future__ import annotations

import os
import pathlib

import numpy as np

from vitron_jax.backends.segmentation.sam import SamModel
from vitron_jax.convert.clip import save_clip_text, save_clip_vision
from vitron_jax.convert.diffusers import save_unet2d, save_unet3d
from vitron_jax.convert.heads import save_heads
from vitron_jax.convert.llama import save_llama
from vitron_jax.convert.safetensors_io import write_json, write_weights
from vitron_jax.convert.sam import save_sam
from vitron_jax.convert.tree import flatten
from vitron_jax.models.clip import CLIPVisionModel
from vitron_jax.models.llama import Llama


def export_run(workdir: str | os.PathLike, dst: str | os.PathLike, *, step: int | None = None
               ) -> pathlib.Path:
  from vitron_jax.serve import Vitron  # pylint: disable=import-outside-toplevel
  bot = Vitron.load(str(workdir), step=step)
  vcfg, params = bot.task.vcfg, bot.params
  dst = pathlib.Path(dst)
  dst.mkdir(parents=True, exist_ok=True)
  save_llama(Llama(vcfg.llm), params["llm"], dst / "llm")
  save_clip_vision(CLIPVisionModel(vcfg.frontend.vision), params["frontend"]["vision_tower"],
                   dst / "vision")
  save_heads(params, vcfg, dst / "heads")
  bot.task.tokenizer.save_pretrained(str(dst / "tokenizer"))
  write_json(vcfg.to_dict(), dst / "vitron.json")
  for m, att in getattr(bot.task, "backends", {}).items():
    folder = dst / "backends" / m
    if m in PIXEL_DIFFUSION_MODULES:
      _save_pixel_diffusion(att.backend, params["backends"][m], folder)
    else:
      _save_segmenter(att.segmenter, params["backends"][att.params_of], folder)
  return dst


#: the modules whose backends are `train.pixel_diffusion` ones (images and videos)
PIXEL_DIFFUSION_MODULES = ("generate_image", "edit_image", "generate_video", "image_to_video",
                           "edit_video")


def _save_pixel_diffusion(backend, params, folder: pathlib.Path) -> None:
  """A pixel-space diffusion backend (`train.pixel_diffusion`, `train.video_diffusion`):
  diffusers UNet (2-D, or 3-D for videos), transformers CLIP text encoder, DDIM scheduler
  config and `<what>.json`."""
  models = backend.models
  video = backend.output == "videos"
  (save_unet3d if video else save_unet2d)(models.unet, params["unet"], folder / "unet")
  save_clip_text(models.text_encoder, params["text_encoder"], folder / "text_encoder")
  write_json(models.scheduler.to_diffusers_config(), folder / "scheduler" /
             "scheduler_config.json")
  f = backend.fields
  meta = {"pixel_patch": models.pixel_patch, "image_size": backend.image_size,
          "bos_token_id": backend.bos, "eot_token_id": backend.eot,
          "text_len": backend.text_len, "num_inference_steps": int(f["steps"]),
          "guidance_scale": float(f["guidance"]),
          "latents": "images in [-1, 1], each pixel_patch x pixel_patch block stacked "
                     "row-major into channels (space-to-depth); no VAE"}
  if "max_phrases" in f:  # the generators' phrases (GLIGEN's / the video layout's)
    meta.update(phrase_len=backend.phrase_len, max_phrases=backend.max_phrases)
  if "gligen_beta" in f:
    meta["gligen_beta"] = float(f["gligen_beta"])
  if video:
    meta["num_frames"] = backend.num_frames
  if hasattr(backend, "concat_description"):  # the video backends' and the editor's inputs
    meta["concat"] = backend.concat_description + " (appended after the noisy latents)"
  meta["grounding_layout"] = bool(models.grounding_layout)
  if models.grounding_layout:
    what = "phrase" if "max_phrases" in f else "command (one per box)"
    meta["layout"] = (f"appended to the UNet input after the other channels: per cell the mean "
                      f"over its pixels of the summed pooled {what} embeddings of the boxes "
                      "covering the pixel centre, then the boxes' union per pixel, "
                      "space-to-depth")
  write_json(meta, folder / f"{backend.what}.json")


def _save_segmenter(segmenter, params, folder: pathlib.Path) -> None:
  cfg = segmenter.config
  save_sam(SamModel(cfg.sam), params["sam"], folder / "sam")
  own = {k: np.asarray(v) for k, v in flatten({"prompts": params["prompts"],
                                                "text_encoder": params["text_encoder"]}).items()}
  write_weights(own, folder, filename="own.safetensors")
  write_json({"num_signal_tokens": cfg.num_signal_tokens, "text_dim": cfg.text_dim,
              "text_len": segmenter.text_len, "pad_token_id": int(segmenter.tokenizer.pad_token_id),
              "width": cfg.width,
              "condition": "[B, K, width] tokens appended to SAM's sparse prompt embeddings "
                           "(after the point / box tokens)"}, folder / "segmenter.json")
