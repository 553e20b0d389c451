"""Scores of a generated or edited PixelWorld video against what its prompt asked for.

* `motion_scores(video, sample)` (`text_to_video`, `image_to_video`): per object of the prompt
  that keeps one colour through the clip, `direction_right` is 1 when the centroid of its
  colour's pixels moves the way the prompt says (`pixels.motion_direction`: left / right / up
  / down, or static); the sample's score is the mean over those objects. Objects that change
  colour mid-clip are left out (their colour no longer names their pixels), and counted in
  `direction_left_out`. Chance: a uniformly random motion, 1 / len(MOTIONS).
* `video_edit_scores(video, sample)` (`video_edit`: one object recoloured through the clip):
  `edit_right` is 1 when, inside the object's masks of every frame, at least `min_agree` of the
  pixels classify as the exact edited video's do (`edited.label_agreement`); chance: the score
  of the video left unchanged. `l1_outside`: mean |edited - source| / 255 outside the masks
  (lower is better); chance: a uniformly random video (`pixels.l1_chance`).
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from vitron_jax.eval import pixels as PX
from vitron_jax.eval.edited import label_agreement

DIRECTION_CHANCE = PX.PIXEL_CHANCE["motion_direction"]


def _video(x: Any, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
  v = np.asarray(x)
  if v.ndim != 4 or v.shape[-1] != 3 or v.dtype != np.uint8:
    raise ValueError(f"{name} must be a uint8 video [T, H, W, 3], got {v.dtype} {v.shape}")
  if shape is not None and v.shape != shape:
    raise ValueError(f"{name} has shape {v.shape}, expected {shape} (the sample's video)")
  return v


def motion_scores(video: Any, sample: Mapping[str, Any]
                  ) -> tuple[dict[str, float], dict[str, float]]:
  """(scores, chance) of one generated uint8 video `[T, H, W, 3]` (module docstring)."""
  target = (sample.get("targets") or {}).get("video")
  if target is None or not sample.get("objects"):
    raise ValueError(f"sample {sample.get('id')!r} is not a video generation sample: it needs "
                     f"targets['video'] and objects")
  v = _video(video, "generated video", np.shape(target))
  right, left_out = [], 0
  for o in sample["objects"]:
    if len(set(o["colours"])) != 1:
      left_out += 1
      continue
    right.append(float(PX.motion_direction(v, o["colours"][0]) == o["motion"]))
  scores = {"direction_right": float(np.mean(right)) if right else 0.0,
            "direction_left_out": float(left_out)}
  return scores, {"direction_right": DIRECTION_CHANCE}


def _tall(x: np.ndarray) -> np.ndarray:
  """`[T, H, ...]` -> `[T * H, ...]`: the frames stacked into one tall image, so the agreement
  is over the masks of every frame."""
  return x.reshape((-1,) + x.shape[2:])


def video_edit_scores(video: Any, sample: Mapping[str, Any], *, min_agree: float = 0.75
                      ) -> tuple[dict[str, float], dict[str, float]]:
  """(scores, chance) of one edited uint8 video `[T, H, W, 3]` of a `video_edit` sample."""
  t = sample.get("targets") or {}
  missing = [k for k in ("source_video", "video", "masks") if k not in t]
  if missing:
    raise ValueError(f"sample {sample.get('id')!r} is not a video edit: targets lack "
                     f"{missing}")
  source = _video(t["source_video"], "source video")
  target = _video(t["video"], "target video", source.shape)
  v = _video(video, "edited video", source.shape)
  masks = np.asarray(t["masks"], bool)
  right = float(label_agreement(_tall(v), _tall(target), _tall(masks)) >= min_agree)
  unchanged = float(label_agreement(_tall(source), _tall(target), _tall(masks)) >= min_agree)
  return ({"edit_right": right, "l1_outside": PX.l1_outside(source, v, masks)},
          {"edit_right": unchanged, "l1_outside": PX.l1_chance(source, masks)})
