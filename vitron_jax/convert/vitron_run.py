"""A trained VITRON run (a `vitron-train` workdir) -> folders PyTorch loads.

    vitron-convert export vitron runs/pixelworld out/vitron_torch

writes

    llm/          transformers `LlamaForCausalLM` folder (config.json + safetensors)
    vision/       transformers `CLIPVisionModel` folder (the trained vision tower)
    heads/        our heads as safetensors + heads.json (`convert.heads`; PyTorch modules in
                  `convert.torch_heads`)
    tokenizer/    the run's tokenizer (`save_pretrained`), protocol tokens included
    vitron.json   the `VitronConfig` (protocol token ids, head modules, routing, shapes)

from the newest checkpoint of the run (or `step`).
"""
from __future__ import annotations

import os
import pathlib

from vitron_jax.convert.clip import save_clip_vision
from vitron_jax.convert.heads import save_heads
from vitron_jax.convert.llama import save_llama
from vitron_jax.convert.safetensors_io import write_json
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
  return dst
