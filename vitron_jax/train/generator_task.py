"""Task "pixelworld_generator": pretraining of VITRON's image generation backend on PixelWorld
(`train.pixel_diffusion_task`).

The backend (`train.generator.Generator`: a GLIGEN UNet in pixel space with its own CLIP text
encoder) learns text -> image from PixelWorld `text_to_image` samples, the way GLIGEN does: the
denoising loss on the sample's image, conditioned on the command's text states, with the
invocation's boxes and their phrases grounded when the prompt drew regions. Parameters:
`backends/generate_image/{unet,text_encoder}`.

Config: `model.generator` (see `train.generator`), `task.tokenizer`, `data.pixelworld`,
`eval.num_samples`. Evaluation (held-out split): images sampled from the expected
invocations, scored by `eval.generated` (`colour_right`, `inside_box` on grounded prompts)
beside their chance levels.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from vitron_jax.eval.generated import generation_scores
from vitron_jax.train.generator import Generator
from vitron_jax.train.pixel_diffusion_task import PixelDiffusionTask
from vitron_jax.train.task import register_task

GEN_TASK = "text_to_image"


def requested(sample: Any) -> tuple[list[str], list[np.ndarray] | None]:
  """The colours a text_to_image prompt asks for (z-order) and, when it drew regions, their
  pixel boxes (None when the prompt has none)."""
  colours = [str(o["colour"]) for o in sample["objects"]]
  boxes = None
  if sample.get("regions"):
    boxes = [np.asarray(b, np.float64) for b in sample["targets"]["boxes"]]
  return colours, boxes


class PixelWorldGeneratorTask(PixelDiffusionTask):
  """See the module docstring."""

  name, subtask, field, what = "pixelworld_generator", GEN_TASK, "generator", "a generation"
  backend_cls = Generator

  @property
  def generator(self) -> Generator:
    return self.backend

  def scores(self, image, sample):
    return generation_scores(image, *requested(sample))


@register_task("pixelworld_generator")
def build(config: Any) -> PixelWorldGeneratorTask:
  return PixelWorldGeneratorTask(config)
