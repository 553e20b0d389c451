"""The video segmenter inside the VITRON step (`segment_video`; `train.vitron_backends`).

The image segmenter's SAM tracks (`SegmentVideoBackend`, the previous frame's mask as the dense
prompt): it is the same backend with the same parameters (`backends/segment_image/`; its
pretraining stage learns tracking too, `segmenter_task`'s `task.track`), so it needs no
weights of its own. With `model.segmenter` set and a `segment_video` module in the head, the
VITRON step runs frontend -> LLM -> hybrid head -> projector -> frozen SAM -> tracking loss in
the same jit for the rows that invoke video segmentation:

* every example carries `segment_video/{pixel_values [T, S, S, 3], boxes [1, 4] (frame 0),
  masks [T, S, S], command_ids, valid}` (`segmenter_task.TrackEncoder`; zeros and valid 0 for
  rows that do not track), the first `task.backend_rows.segment_video` valid rows gathered in
  jit;
* the condition is what the routing mode builds, as for images; the loss is the teacher-forced
  tracking loss (`SegmentVideoBackend.loss`: frame 0 from the box and the condition, frame
  t > 0 from frame t-1's true mask and the condition).

Evaluation: for every `video_seg` sample the free-running answer's invocation is parsed and
the clip tracked as chat runs it, from the box the LLM wrote (on frame 0) and the condition
built at the decoded query slots; frames outside the answer's time span are empty. Row
`video_seg_masks` scores the tracking IoU (mean over frames of the mask IoU, J mean; and
`text_tracking_iou` from the condition alone); an answer with no valid video segmentation
invocation scores 0. Chance: uniformly random boxes held still on every frame
(`eval.boxes.mask_chance` per frame). The report shows the tracked clip as a GIF with the
masks (an `eval.pictures.Animation`); chat writes it as one.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from vitron_jax.eval.boxes import mask_chance
from vitron_jax.models.objective import BackendHook
from vitron_jax.protocol import invocation as I
from vitron_jax.train.segmentation_attachment import SEG_FIELDS, SegmentationAttachment
from vitron_jax.train.segmenter_task import MODULE as IMAGE_MODULE
from vitron_jax.train.segmenter_task import Segmenter, TrackEncoder, mask_iou_np

MODULE = "segment_video"
EVAL_ROW = "video_seg_masks"  # the table row of the clips the segmenter tracked from answers


class VideoSegmentationAttachment(SegmentationAttachment):
  """The frozen SAM tracking inside the VITRON step (see the module docstring)."""

  module, target, keys = MODULE, "masks", SEG_FIELDS
  subtask, eval_row, params_of, what = "video_seg", EVAL_ROW, IMAGE_MODULE, "video"

  def __init__(self, segmenter: Segmenter, image_size: int, num_frames: int, head: Any,
               rows: int = 8):  # pylint: disable=super-init-not-called
    self.segmenter = segmenter
    self._attach("segmenter", head, segmenter.backend.condition_shape, rows)
    self.encoder = TrackEncoder(segmenter, image_size, num_frames)
    self.runner = segmenter.video_backend
    self.hook = BackendHook(MODULE, self._loss, segmenter.condition)
    self._run = None
    s, t, lc = segmenter.config.sam.image_size, num_frames, segmenter.text_len
    self._spec = {"pixel_values": ((t, s, s, 3), np.float32), "boxes": ((1, 4), np.float32),
                  "masks": ((t, s, s), np.float32), "command_ids": ((lc,), np.int32),
                  "valid": ((), np.float32)}

  def init_boxed(self, rng):
    raise TypeError(f"{MODULE} runs with the parameters of {IMAGE_MODULE}; it has none of "
                    "its own to initialise")

  def _loss(self, params, batch, condition, rng):
    del rng
    loss, m = self.runner.loss(params, batch, condition)
    return loss, {f"track/{k}": v for k, v in m.items()}

  # -- evaluation and chat ------------------------------------------------------------------
  def _media(self, sample) -> np.ndarray:
    return np.asarray(sample["video"])

  def _has_media(self, sample) -> bool:
    return sample.get("video") is not None

  @staticmethod
  def _one_object(masks):
    return masks  # the video backend tracks one object: [B, T, H, W]

  def masks(self, model, model_params, backend_params, samples, answers, signals):
    """`SegmentationAttachment.masks` for clips (`[n, T, H, W]`), with every frame outside the
    answer's time span emptied."""
    with_box, alone, box_ok, sig_ok = super().masks(model, model_params, backend_params,
                                                    samples, answers, signals)
    keep = np.stack([_span_frames(a, with_box.shape[1]) for a in answers])[:, :, None, None]
    return with_box & keep, alone & keep, box_ok, sig_ok

  def _row(self, sample, with_box, alone, box_ok: bool, sig_ok: bool):
    truth = np.asarray(sample["targets"]["masks"], bool)
    iou = float(mask_iou_np(with_box, truth).mean()) if box_ok else 0.0
    iou_alone = float(mask_iou_np(alone, truth).mean()) if sig_ok else 0.0
    chance = float(np.mean([mask_chance(f) for f in truth]))
    return {"tracking_iou": iou, "text_tracking_iou": iou_alone}, {"tracking_iou": chance}

  def _picture(self, sample, mask: np.ndarray):
    """`eval.pictures.Animation` of the clip with the tracked mask tinted on every frame (the
    answer picture shows it as the frames side by side, the report as a GIF)."""
    from vitron_jax.eval.pictures import animation  # pylint: disable=import-outside-toplevel
    return animation(np.asarray(sample["video"]), masks=mask)

  def _write(self, sample, mask: np.ndarray, base: str) -> list[str]:
    from vitron_jax.eval.pictures import save_gif  # pylint: disable=import-outside-toplevel
    np.save(base + "_masks.npy", mask)
    save_gif(np.asarray(sample["video"]), base + "_track.gif", masks=mask)
    return [base + "_masks.npy", base + "_track.gif"]


def _span_frames(answer: str, num_frames: int) -> np.ndarray:
  """`[T]` bool: the frames inside the answer's time span (all of them when it gives none)."""
  inv = I.find_invocation(answer)
  span = getattr(inv, "time_span", None) if inv else None
  t = np.arange(num_frames)
  if not span:
    return np.ones(num_frames, bool)
  return (t >= int(span[0])) & (t <= int(span[1]))
