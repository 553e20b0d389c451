"""The video backends inside the VITRON step (`generate_video`, `image_to_video`,
`edit_video`; `train.vitron_backends`, `train.pixel_diffusion_attachment`).

Each is pretrained by its stage (`train.video_diffusion_task`) and frozen here; every example
carries `<module>/{videos, command_ids, pixel_weights, [source_images | source_videos],
valid}` (the target clip, the expected invocation's command and what the backend conditions
on: the conversation's image as the first frame, or its video to edit), and the loss is the
stage's denoising MSE on the target clip.

Evaluation: for every sample of the backend's subtask, the clip made from the free-running
answer's invocation (with the conversation's image / video) is scored against what the user
asked (`eval.generated_video`): rows `t2v_videos` and `i2v_videos` (`direction_right`: the
objects move the way the prompt says) and `video_edit_videos` (`edit_right`, `l1_outside`).
The report's picture is the clip made, as an animation (`eval.pictures.animation`); chat
writes it as a GIF.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from vitron_jax.eval.generated_video import motion_scores, video_edit_scores
from vitron_jax.train.phrase_grounding import anchored_path
from vitron_jax.train.pixel_diffusion_attachment import PixelDiffusionAttachment
from vitron_jax.train.video_diffusion import (VideoAnimator, VideoEditor, VideoGenerator,
                                              video_phrases_of)
from vitron_jax.train.video_diffusion_task import I2V_TASK, T2V_TASK, VEDIT_TASK


class VideoDiffusionAttachment(PixelDiffusionAttachment):
  """A frozen video backend inside the VITRON step (see the module docstring). Subclasses set
  `maker`, `field`, `subtask`, `eval_row`, `needs` and `_source(sample)`."""

  target = "video"

  def __init__(self, fields: Any, image_size: int, tokenizer: Any, head: Any, rows: int = 8,
               num_frames: int | None = None):
    super().__init__(fields, image_size, tokenizer, head, rows)
    if num_frames is not None and self.backend.num_frames != num_frames:
      raise ValueError(f"model.{self.field}.num_frames is {self.backend.num_frames} but "
                       f"data.pixelworld.num_frames is {num_frames}")

  def _source(self, sample: Any) -> Any:
    """What the backend conditions on in the conversation (uint8), or None."""
    del sample
    return None

  def _invocation_inputs(self, inv, sample):
    return self.backend.inputs(inv.command, self._source(sample), inv.boxes)

  def _placeholder(self, sample):
    try:  # the conversation's own image / video where it fits, else zeros of the right size
      return self.backend.inputs("a", self._source(sample))
    except (ValueError, KeyError, TypeError):
      b = self.backend
      shape = {"source_images": (b.image_size, b.image_size, 3),
               "source_videos": b.video_shape}.get(b.source)
      return b.inputs("a", None if shape is None else np.zeros(shape, np.uint8))

  def _picture(self, image, sample, answer):
    del sample, answer
    from vitron_jax.eval.pictures import animation  # pylint: disable=import-outside-toplevel
    return animation(image)

  def chat_files(self, model, model_params, backend_params, sample, answer, signal, base):
    """Chat: the clip made as `{base}.gif`; returns (files, note)."""
    videos, ok = self.images(model, model_params, backend_params, [sample], [answer], [signal])
    if not ok[0]:
      return [], (f"{self.module} not run: the invocation's inputs do not fit the backend "
                  f"({self.needs}), or it has no signal embeddings")
    from vitron_jax.eval.pictures import save_gif  # pylint: disable=import-outside-toplevel
    save_gif(videos[0], base + ".gif")
    return [base + ".gif"], f"ran {self.module} (built in; {self.needs} and signals)"


def _one_image(sample) -> np.ndarray:
  images = sample.get("images") or []
  if len(images) != 1:
    raise ValueError(f"image_to_video animates the conversation's image; it has {len(images)}")
  return np.asarray(images[0])


def _the_video(sample) -> np.ndarray:
  if "video" not in sample:
    raise ValueError("edit_video edits the conversation's video; it has none")
  return np.asarray(sample["video"])


class VideoGenerationAttachment(VideoDiffusionAttachment):
  maker, field, subtask, eval_row = VideoGenerator, "video_generator", T2V_TASK, "t2v_videos"
  needs = "command, the clip's layout (each object's box in every frame)"
  module = VideoGenerator.module

  def _scores(self, image, sample):
    return motion_scores(image, sample)

  def _failed(self, scores, chance):
    return {**scores, "direction_right": 0.0}


class ImageToVideoAttachment(VideoGenerationAttachment):
  maker, field, subtask, eval_row = VideoAnimator, "video_animator", I2V_TASK, "i2v_videos"
  needs = ("command, the clip's layout (each object's box in every frame), the conversation's "
           "image")
  module = VideoAnimator.module

  def _source(self, sample):
    return _one_image(sample)

  grounds = True

  def grounded_phrases(self, inv):
    """Every object of the plan (`video_diffusion.video_phrases_of`), when its layout has
    `num_frames` boxes per object."""
    t, n = self.backend.num_frames, len(inv.boxes)
    if not n or n % t:
      return []
    try:
      return video_phrases_of(inv.command, n // t)
    except ValueError:
      return []

  def with_grounded(self, inv, found):
    """Each object's planned path starts where the segmenter found it
    (`phrase_grounding.anchored_path`); the plan's moves are kept."""
    t = self.backend.num_frames
    boxes = [b for k, start in enumerate(found)
             for b in anchored_path(inv.boxes[k * t:(k + 1) * t], start)]
    return dataclasses.replace(inv, boxes=tuple(boxes))


class VideoEditAttachment(VideoDiffusionAttachment):
  maker, field, subtask, eval_row = VideoEditor, "video_editor", VEDIT_TASK, "video_edit_videos"
  needs = "command, the conversation's video"
  module = VideoEditor.module

  def _source(self, sample):
    return _the_video(sample)

  def _scores(self, image, sample):
    return video_edit_scores(image, sample)

  def _failed(self, scores, chance):
    return {"edit_right": 0.0, "l1_outside": chance["l1_outside"]}
