"""The image generator inside the VITRON step (`generate_image`; `train.vitron_backends`,
`train.pixel_diffusion_attachment`).

Pretrained by the `pixelworld_generator` stage (`train.generator_task`) and frozen here; every
example carries `generate_image/{images, command_ids, phrase_ids, boxes, phrase_mask,
pixel_weights, valid}`, and the loss is the stage's denoising MSE on the target image (boxes
grounded where the invocation has them).

Evaluation: for every `text_to_image` sample, row `t2i_images` scores the image made from the
free-running answer's command and boxes against what the user asked (`eval.generated`:
`colour_right` beside its chance, `inside_box` on prompts that drew regions); the report's
picture is the image with the answer's boxes outlined.
"""
from __future__ import annotations

from vitron_jax.eval.generated import generation_scores
from vitron_jax.train.generator import Generator
from vitron_jax.train.generator_task import GEN_TASK, requested
from vitron_jax.train.pixel_diffusion_attachment import PixelDiffusionAttachment

EVAL_ROW = "t2i_images"  # the table row of the images the generator made from the answers


class GenerationAttachment(PixelDiffusionAttachment):
  """The frozen image generator inside the VITRON step (see the module docstring)."""

  maker, field, target, subtask, eval_row = Generator, "generator", "image", GEN_TASK, EVAL_ROW
  needs = "command, boxes"
  module = Generator.module

  @property
  def generator(self) -> Generator:
    return self.backend

  def _invocation_inputs(self, inv, sample):
    del sample
    return self.backend.inputs(inv.command, inv.boxes)

  def _placeholder(self, sample):
    del sample
    return self.backend.inputs("a", ())

  def _scores(self, image, sample):
    return generation_scores(image, *requested(sample))
