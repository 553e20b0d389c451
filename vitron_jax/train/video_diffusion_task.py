"""Tasks "pixelworld_video_generator", "pixelworld_video_animator", "pixelworld_video_editor":
pretraining of VITRON's video backends on PixelWorld (`train.pixel_diffusion_task`,
`train.video_diffusion`).

Each learns from one PixelWorld subtask: `text_to_video` (the command -> the clip),
`image_to_video` (the first frame and the command -> the clip), `video_edit` (the source clip
and the command -> the recoloured clip); the denoising loss on the sample's target video.
Parameters: `backends/<module>/{unet,text_encoder}`, the path the VITRON run keeps them.

Config: `model.video_generator` / `model.video_animator` / `model.video_editor`
(`train.video_diffusion`; `num_frames` = `data.pixelworld.num_frames`), `task.tokenizer`,
`data.pixelworld`, `eval.num_samples`. Evaluation (held-out split): videos made from the
expected invocations, scored by `eval.generated_video` (`direction_right` for generation,
`edit_right` and `l1_outside` for edits) beside their chance levels.
"""
from __future__ import annotations

from typing import Any

from vitron_jax.eval.generated_video import motion_scores, video_edit_scores
from vitron_jax.train.pixel_diffusion_task import PixelDiffusionTask
from vitron_jax.train.task import register_task
from vitron_jax.train.video_diffusion import VideoAnimator, VideoEditor, VideoGenerator

T2V_TASK, I2V_TASK, VEDIT_TASK = "text_to_video", "image_to_video", "video_edit"


class VideoDiffusionTask(PixelDiffusionTask):
  """The shared half: the backend's clip length must be the world's."""

  def __init__(self, config: Any):
    super().__init__(config)
    if self.backend.num_frames != self.world_config.num_frames:
      raise ValueError(f"model.{self.field}.num_frames is {self.backend.num_frames} but "
                       f"data.pixelworld.num_frames is {self.world_config.num_frames}")


class PixelWorldVideoGeneratorTask(VideoDiffusionTask):
  name, subtask, field, what = ("pixelworld_video_generator", T2V_TASK, "video_generator",
                                "a video generation")
  backend_cls = VideoGenerator

  def scores(self, image, sample):
    return motion_scores(image, sample)


class PixelWorldVideoAnimatorTask(VideoDiffusionTask):
  name, subtask, field, what = ("pixelworld_video_animator", I2V_TASK, "video_animator",
                                "an image-to-video")
  backend_cls = VideoAnimator

  def scores(self, image, sample):
    return motion_scores(image, sample)


class PixelWorldVideoEditorTask(VideoDiffusionTask):
  name, subtask, field, what = ("pixelworld_video_editor", VEDIT_TASK, "video_editor",
                                "a video edit")
  backend_cls = VideoEditor

  def scores(self, image, sample):
    return video_edit_scores(image, sample)


TASKS = (PixelWorldVideoGeneratorTask, PixelWorldVideoAnimatorTask, PixelWorldVideoEditorTask)
for _cls in TASKS:
  register_task(_cls.name)(_cls)
