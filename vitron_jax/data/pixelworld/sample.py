"""The sample format shared by PixelWorld and real LLaVA/Vitron-style conversation data.

A sample is a dict (numpy arrays, no jax):

``id``             str, unique (``pixelworld/{split}/{seed}/{index:09d}`` here)
``task``           cluster: "understanding" | "grounding" | "segmentation" | "generation" |
                   "editing"
``subtask``        e.g. "image_qa", "ref_seg", "image_edit" (see `world.TASKS`)
``conversations``  list of ``{"from": "human" | "gpt", "value": str}``; the human text holds the
                   placeholders ``<image>`` / ``<video>`` (first line, LLaVA style) and one
                   ``<roi>`` per region; the gpt text is plain text, boxes as location tokens,
                   or an invocation ``<inv>…</inv>`` (`vitron_jax.protocol.invocation`)
``images``         list of uint8 ``[H, W, 3]`` (the ``<image>`` inputs; may be empty)
``video``          uint8 ``[T, H, W, 3]`` (the ``<video>`` input); absent when none
``regions``        list, one per ``<roi>``: ``{"mask": bool [H, W] (image) or [T, H, W] (video),
                   "box": float32 [4] pixel (x1, y1, x2, y2), "kind": "mask" | "box",
                   "frame": int (videos: the frame the region is drawn on)}``
``targets``        what a backend needs, by task (empty for plain-text answers):
                   ref_seg: ``mask`` bool [H, W], ``boxes`` [1, 4];
                   video_seg: ``masks`` bool [T, H, W], ``boxes`` [T, 4], ``visible`` bool [T],
                   ``time_span`` int32 [2];
                   text_to_image: ``image``, ``phrases`` (one per object, z-order), ``boxes``
                   [N, 4], ``background``; text_to_video: ``video``, ``phrases``, ``boxes``
                   [T, N, 4], ``background``; image_to_video: ``source_image`` (= frame 0),
                   ``video``, ``boxes`` [T, N, 4];
                   image_edit: ``source_image``, ``image`` (result), ``mask`` (pixels the edit
                   may change), ``boxes`` [B, 4] (the invocation's boxes), ``objects_after``;
                   video_edit: ``source_video``, ``video``, ``masks`` [T, H, W],
                   ``objects_after``. Images uint8 [H, W, 3], videos uint8 [T, H, W, 3], boxes
                   float32 pixels
``objects``        structured ground truth, one record per object in z-order (see
                   `object_record`): shape, colour, size, colours per frame, motion, path,
                   event, position, ``boxes`` float32 [T, 4] (tight box of the visible mask,
                   zeros where absent), ``visible`` bool [T] (present), ``pixels`` int32 [T]
``truth``          task-specific answer key for metrics (``qtype``/``answer`` for QA,
                   ``object`` index, ``box``, ``time_span``, ``module``, edit ``op``...)

Pixel boxes have an exclusive end (a box of one pixel at (x, y) is (x, y, x + 1, y + 1)); in
text they become location tokens of the normalised box (x / W, y / H).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from vitron_jax.data.pixelworld import scene as SC
from vitron_jax.data.pixelworld import vocab as V
from vitron_jax.protocol import invocation as I
from vitron_jax.protocol import tokens as T

TASK_CLUSTERS: tuple[str, ...] = ("understanding", "grounding", "segmentation", "generation",
                                  "editing")


def object_record(scene: SC.Scene, rendered: SC.Rendered, k: int) -> dict[str, Any]:
  """Structured ground truth of object k (attributes + per-frame boxes and presence)."""
  o = scene.objects[k]
  x, y = o.centres[0]
  return {
      "shape": o.shape, "colour": o.colour, "size": o.size, "colours": list(o.colours),
      "motion": o.motion, "path": o.path, "event": o.event,
      "position": V.position_of(x, y, scene.size),
      "boxes": rendered.boxes[k].astype(np.float32),
      "visible": rendered.present[k].copy(),
      "pixels": rendered.visible_px[k].astype(np.int32),
  }


def object_records(scene: SC.Scene, rendered: SC.Rendered) -> list[dict[str, Any]]:
  return [object_record(scene, rendered, k) for k in range(len(scene.objects))]


def norm_box(box_px: np.ndarray, size: int) -> I.Box:
  return I.normalize_box([float(v) for v in box_px], size, size)


def loc(box_px: np.ndarray, size: int) -> str:
  """Location tokens of a pixel box in a `size` x `size` image."""
  return I.box_to_loc_tokens(norm_box(box_px, size))


def span_tokens(span: tuple[int, int]) -> str:
  return T.time_token(span[0]) + T.time_token(span[1])


def box_mask(box_px: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
  """bool mask `shape` ([H, W]) that is True inside an integer pixel box."""
  m = np.zeros(shape, bool)
  x1, y1, x2, y2 = (int(v) for v in box_px)
  m[y1:y2, x1:x2] = True
  return m


def region(mask: np.ndarray, box_px: np.ndarray, kind: str, frame: int | None = None) -> dict:
  """A user-drawn region: exact visible mask, or its box rasterised, as a bool mask."""
  if kind == "box":
    if mask.ndim == 3:
      full = np.zeros(mask.shape, bool)
      full[frame] = box_mask(box_px, mask.shape[1:])
      mask = full
    else:
      mask = box_mask(box_px, mask.shape)
  out = {"mask": mask.astype(bool), "box": np.asarray(box_px, np.float32), "kind": kind}
  if frame is not None:
    out["frame"] = int(frame)
  return out


def conversation(human: str, gpt: str) -> list[dict[str, str]]:
  return [{"from": "human", "value": human}, {"from": "gpt", "value": gpt}]


def make_sample(*, sample_id: str, task: str, subtask: str, human: str, gpt: str,
                images: list[np.ndarray] | None = None, video: np.ndarray | None = None,
                regions: list[dict] | None = None, targets: dict | None = None,
                objects: list[dict] | None = None, truth: dict | None = None) -> dict[str, Any]:
  """Assemble a sample dict in the documented format (checks placeholder counts)."""
  if task not in TASK_CLUSTERS:
    raise ValueError(f"task must be one of {TASK_CLUSTERS}, got {task!r}")
  images = list(images or [])
  regions = list(regions or [])
  for name, n in ((T.IMAGE, len(images)), (T.VIDEO, 0 if video is None else 1),
                  (T.ROI, len(regions))):
    if human.count(name) != n:
      raise ValueError(f"sample {sample_id}: human text has {human.count(name)} {name} "
                       f"placeholders for {n} inputs: {human!r}")
  sample = {"id": sample_id, "task": task, "subtask": subtask,
            "conversations": conversation(human, gpt), "images": images, "regions": regions,
            "targets": dict(targets or {}), "objects": list(objects or []),
            "truth": dict(truth or {})}
  if video is not None:
    sample["video"] = video
  return sample
