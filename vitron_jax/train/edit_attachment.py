"""The image editor inside the VITRON step (`edit_image`; `train.vitron_backends`,
`train.pixel_diffusion_attachment`).

Pretrained by the `pixelworld_editor` stage (`train.editor_task`) and frozen here; every
example carries `edit_image/{images, source_images, masks, command_ids, pixel_weights, valid}`
(the edited image, the image to edit, the region the invocation's boxes cover, the command)
and the layout's `boxes, phrase_ids, phrase_mask` (`Editor.inputs`); the loss is the stage's
denoising MSE on the edited image.

Evaluation: for every `image_edit` sample, row `edit_images` scores the conversation's image
edited from the free-running answer's command and boxes against the exact edit
(`eval.edited`: `edit_right` beside the unchanged image's score, `l1_outside` beside a random
image's); the report's picture is the edited image with the answer's boxes outlined. An
answer with no usable invocation makes no image: `edit_right` 0 and `l1_outside` a random
image's, so failures never improve the mean.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from vitron_jax.eval.edited import edit_scores
from vitron_jax.train.editor import Editor, edited_object
from vitron_jax.train.editor_task import EDIT_TASK
from vitron_jax.train.pixel_diffusion_attachment import PixelDiffusionAttachment

EVAL_ROW = "edit_images"  # the table row of the images the editor made from the answers


def _source(sample) -> np.ndarray:
  """The conversation's one image (what the editor edits)."""
  images = sample.get("images") or []
  if len(images) != 1:
    raise ValueError(f"edit_image edits the conversation's image; it has {len(images)}")
  return np.asarray(images[0])


class EditAttachment(PixelDiffusionAttachment):
  """The frozen image editor inside the VITRON step (see the module docstring)."""

  maker, field, target, subtask, eval_row = Editor, "editor", "image", EDIT_TASK, EVAL_ROW
  needs = "command, boxes, the conversation's image"
  module = Editor.module

  def _invocation_inputs(self, inv, sample):
    return self.backend.inputs(inv.command, inv.boxes, _source(sample))

  def _placeholder(self, sample):
    s = self.backend.image_size
    images = sample.get("images") or []
    image = np.asarray(images[0]) if len(images) == 1 else None
    if image is None or image.shape != (s, s, 3) or image.dtype != np.uint8:
      image = np.zeros((s, s, 3), np.uint8)
    return self.backend.inputs("a", ((0.0, 0.0, 1.0, 1.0),), image)

  grounds = True

  def grounded_phrases(self, inv):
    """The object a recolour, remove or move names (`editor.edited_object`)."""
    target = edited_object(inv.command)
    return [target[1]] if target else []

  def with_grounded(self, inv, found):
    """The edited object's box is the one found; a move keeps the LLM's second box (where the
    object goes: a place named in words)."""
    (box,) = found
    if box is None:
      return inv
    keep = tuple(inv.boxes[1:2]) if edited_object(inv.command)[0] == "move" else ()
    return dataclasses.replace(inv, boxes=(tuple(box),) + keep)

  def _scores(self, image, sample):
    return edit_scores(image, sample)

  def _failed(self, scores, chance):
    return {"edit_right": 0.0, "l1_outside": chance["l1_outside"]}
