"""The backends a VITRON run attaches to its training step (DESIGN.md §3, §5).

Each is pretrained on PixelWorld by a stage of the main job, then frozen inside the VITRON
step, where its loss joins the same jit for the rows of the batch that invoke it
(`train.backend_rows`; group size `task.backend_rows.<module>`, default 8):

  model.segmenter -> segment_image   `SegmentationAttachment` (stage task pixelworld_segmenter)
  model.generator -> generate_image  `GenerationAttachment` (stage task pixelworld_generator)
  model.editor    -> edit_image      `EditAttachment` (stage task pixelworld_editor)
  model.segmenter -> segment_video   `VideoSegmentationAttachment`, when the head has the module
                                     (the image segmenter's SAM and parameters, tracking)
  model.video_generator -> generate_video  `VideoGenerationAttachment` (pixelworld_video_generator)
  model.video_animator  -> image_to_video  `ImageToVideoAttachment` (pixelworld_video_animator)
  model.video_editor    -> edit_video      `VideoEditAttachment` (pixelworld_video_editor)

An attachment holds the backend (static config), `init_boxed(rng)`, `batch_spec()`,
`example(sample)` (its per-example fields), `gather(fields)` (in jit: the hook's batch), `hook`
(`models.objective.BackendHook`: its loss and native condition) and `score(...)` (what it makes
of free-running answers, as table rows of `eval.answers.OUTPUT_ROWS`, and pictures of it for
the report: `(rows, {sample index: PIL image, or an `eval.pictures.Animation` of a clip})`);
`params_of` names the module whose parameters it runs with (its own, or the one it shares).
"""
from __future__ import annotations

from typing import Any

from vitron_jax.train.edit_attachment import EditAttachment
from vitron_jax.train.generation_attachment import GenerationAttachment
from vitron_jax.train.segmentation_attachment import SegmentationAttachment
from vitron_jax.train.video_generation_attachment import (ImageToVideoAttachment,
                                                          VideoEditAttachment,
                                                          VideoGenerationAttachment)
from vitron_jax.train.video_segmentation_attachment import VideoSegmentationAttachment

#: config field under `model` -> the attachment it builds
ATTACHMENTS = {"segmenter": SegmentationAttachment, "generator": GenerationAttachment,
               "editor": EditAttachment}
#: ... and those of the video backends (they also check the clip length)
VIDEO_ATTACHMENTS = {"video_generator": VideoGenerationAttachment,
                     "video_animator": ImageToVideoAttachment,
                     "video_editor": VideoEditAttachment}


def attachments(config: Any, image_size: int, num_frames: int, tokenizer: Any, head: Any
                ) -> dict[str, Any]:
  """The backends the config attaches, by module name (see the module docstring)."""
  built = {}
  rows = dict(config.task.get("backend_rows") or {})
  for field, cls in ATTACHMENTS.items():
    fields = config.model.get(field)
    if fields is not None:
      built[cls.module] = cls(fields, image_size, tokenizer, head, int(rows.get(cls.module, 8)))
  for field, cls in VIDEO_ATTACHMENTS.items():
    fields = config.model.get(field)
    if fields is not None:
      built[cls.module] = cls(fields, image_size, tokenizer, head, int(rows.get(cls.module, 8)),
                              num_frames=num_frames)
  seg = built.get(SegmentationAttachment.module)
  video = VideoSegmentationAttachment.module
  if seg is not None and video in head.modules:
    built[video] = VideoSegmentationAttachment(seg.segmenter, image_size, num_frames, head,
                                               int(rows.get(video, 8)))
  unknown = sorted(set(rows) - set(built))
  if unknown:
    raise ValueError(f"task.backend_rows names modules {unknown} with no attached backend "
                     f"(attached: {sorted(built)})")
  return built
