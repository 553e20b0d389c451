"""Box metrics: IoU, IoU > 0.5 rate, grounded-answer F1, and their chance levels.

Boxes are (x1, y1, x2, y2) in any one coordinate system (pixels with exclusive end, or
normalised); an inverted or degenerate box has area 0, a non-finite one scores IoU 0.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from vitron_jax.protocol import invocation as I

IOU_THRESHOLD = 0.5


def box_iou(a: Any, b: Any) -> np.ndarray:
  """IoU of boxes `[..., 4]` (broadcast); 0 where the union is empty or a box is not finite."""
  a = np.asarray(a, np.float64)
  b = np.asarray(b, np.float64)
  if a.shape[-1:] != (4,) or b.shape[-1:] != (4,):
    raise ValueError(f"boxes must have a last axis of 4 (x1, y1, x2, y2), got {a.shape} and "
                     f"{b.shape}")
  ok = np.isfinite(a).all(-1) & np.isfinite(b).all(-1)
  a = np.where(np.isfinite(a), a, 0.0)
  b = np.where(np.isfinite(b), b, 0.0)

  def area(x):
    return np.clip(x[..., 2] - x[..., 0], 0, None) * np.clip(x[..., 3] - x[..., 1], 0, None)

  iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
  ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
  inter = iw * ih
  union = area(a) + area(b) - inter
  return np.where(ok & (union > 0), inter / np.where(union > 0, union, 1.0), 0.0)


def predicted_box(text: Any, width: int, height: int) -> np.ndarray | None:
  """The first box (4 location tokens) in a free-text answer, in pixels; None if none."""
  boxes = I.find_boxes(text)
  if not boxes:
    return None
  return np.array(I.denormalize_box(boxes[0], width, height), np.float64)


def grounding_scores(predictions: Sequence[Any], gt_boxes: Any, width: int, height: int
                     ) -> dict[str, float]:
  """Mean IoU and IoU > 0.5 rate of the first box in each free-text answer (no box: IoU 0).

  gt_boxes: `[N, 4]` pixel boxes.
  """
  gt = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
  if len(predictions) != len(gt):
    raise ValueError(f"{len(predictions)} predictions for {len(gt)} ground-truth boxes")
  ious = np.array([float(box_iou(p, g)) if (p := predicted_box(t, width, height)) is not None
                   else 0.0 for t, g in zip(predictions, gt)])
  return {"iou": float(ious.mean()) if ious.size else 0.0,
          "acc@0.5": float((ious > IOU_THRESHOLD).mean()) if ious.size else 0.0}


def match_f1(pred_boxes: Any, gt_boxes: Any, threshold: float = IOU_THRESHOLD
             ) -> dict[str, float]:
  """Greedy one-to-one matching (highest IoU first) of predicted to ground-truth boxes; a
  match needs IoU > threshold. Both empty -> all 1.0."""
  p = np.asarray(pred_boxes, np.float64).reshape(-1, 4)
  g = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
  if len(p) == 0 and len(g) == 0:
    return {"precision": 1.0, "recall": 1.0, "f1": 1.0}
  tp = 0
  if len(p) and len(g):
    iou = box_iou(p[:, None], g[None])
    while True:
      i, j = np.unravel_index(np.argmax(iou), iou.shape)
      if iou[i, j] <= threshold:
        break
      tp += 1
      iou[i, :] = -1
      iou[:, j] = -1
  prec = tp / len(p) if len(p) else 0.0
  rec = tp / len(g) if len(g) else 0.0
  return {"precision": prec, "recall": rec,
          "f1": 2 * prec * rec / (prec + rec) if tp else 0.0}


def grounded_answer_scores(prediction: Any, gt_boxes: Any, width: int, height: int
                           ) -> dict[str, float]:
  """Box F1 of every box in a grounded answer ("a red circle <loc…>×4, …") vs ground truth."""
  boxes = [I.denormalize_box(b, width, height) for b in I.find_boxes(prediction)]
  return match_f1(np.array(boxes, np.float64).reshape(-1, 4), gt_boxes)


def _random_boxes(width: int, height: int, samples: int, seed: int) -> np.ndarray:
  """`[samples, 4]` boxes with corners uniform in the image, sorted per axis."""
  rng = np.random.default_rng(seed)
  xs = np.sort(rng.uniform(0, width, (samples, 2)), axis=1)
  ys = np.sort(rng.uniform(0, height, (samples, 2)), axis=1)
  return np.stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]], -1)


def mask_chance(truth: Any, *, samples: int = 256, seed: int = 0) -> float:
  """Mean IoU of the same uniformly random boxes as `box_chance`, filled in as masks (pixel
  centres inside), against a bool mask `[H, W]` (the chance level of a mask IoU)."""
  t = np.asarray(truth, bool)
  h, w = t.shape
  b = _random_boxes(w, h, samples, seed)
  cx, cy = np.arange(w) + 0.5, np.arange(h) + 0.5
  m = ((cx[None, None] >= b[:, 0, None, None]) & (cx[None, None] < b[:, 2, None, None])
       & (cy[None, :, None] >= b[:, 1, None, None]) & (cy[None, :, None] < b[:, 3, None, None]))
  inter = (m & t[None]).sum((1, 2))
  union = (m | t[None]).sum((1, 2))
  return float(np.where(union > 0, inter / np.maximum(union, 1), 1.0).mean())


def box_chance(gt_boxes: Any, width: int, height: int, *, samples: int = 256, seed: int = 0
               ) -> dict[str, float]:
  """Mean IoU and IoU > 0.5 rate of uniformly random boxes (corners uniform in the image,
  sorted per axis) against the given ground truth; Monte Carlo with a fixed seed."""
  g = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
  rand = _random_boxes(width, height, samples, seed)
  iou = box_iou(rand[:, None], g[None])
  return {"iou": float(iou.mean()) if iou.size else 0.0,
          "acc@0.5": float((iou > IOU_THRESHOLD).mean()) if iou.size else 0.0}
