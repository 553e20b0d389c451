"""Task "pixelworld_editor": pretraining of VITRON's image editing backend on PixelWorld
(`train.pixel_diffusion_task`).

The backend (`train.editor.Editor`: an inpainting UNet in pixel space with its own CLIP text
encoder) learns image + region + command -> edited image from PixelWorld `image_edit` samples
(recolour, remove, add, move): the denoising loss on the exact edited image, given the source
masked outside the invocation's boxes and the command's text states. Parameters:
`backends/edit_image/{unet,text_encoder}`.

Config: `model.editor` (see `train.editor`), `task.tokenizer`, `data.pixelworld`,
`eval.num_samples`. Evaluation (held-out split): the source images edited from the expected
invocations, scored by `eval.edited` (`edit_right` beside the unchanged image's score,
`l1_outside` beside a random image's).
"""
from __future__ import annotations

from typing import Any

from vitron_jax.eval.edited import edit_scores
from vitron_jax.train.editor import Editor
from vitron_jax.train.pixel_diffusion_task import PixelDiffusionTask
from vitron_jax.train.task import register_task

EDIT_TASK = "image_edit"


class PixelWorldEditorTask(PixelDiffusionTask):
  """See the module docstring."""

  name, subtask, field, what = "pixelworld_editor", EDIT_TASK, "editor", "an edit"
  backend_cls = Editor

  def scores(self, image, sample):
    return edit_scores(image, sample)


@register_task("pixelworld_editor")
def build(config: Any) -> PixelWorldEditorTask:
  return PixelWorldEditorTask(config)
