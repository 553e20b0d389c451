"""Mask metrics: mask IoU, cumulative IoU (cIoU), tracking mean IoU (J), chance levels.

Masks are boolean (or 0/1 integer) arrays; probabilities need an explicit `threshold`.
An empty prediction of an empty ground truth is perfect (IoU 1).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def as_mask(x: Any, name: str, threshold: float | None = None) -> np.ndarray:
  """Boolean mask from bool / 0-1 ints, or from floats with an explicit threshold."""
  a = np.asarray(x)
  if a.dtype == np.bool_:
    return a
  if np.issubdtype(a.dtype, np.integer):
    if a.size and (a.min() < 0 or a.max() > 1):
      raise ValueError(f"{name} must be binary (0/1), got values in [{a.min()}, {a.max()}]")
    return a.astype(bool)
  if np.issubdtype(a.dtype, np.floating):
    if threshold is None:
      raise ValueError(f"{name} is {a.dtype}; pass threshold= to binarise probabilities")
    return np.nan_to_num(a, nan=-np.inf) >= threshold
  raise ValueError(f"{name} must be a boolean or 0/1 mask array, got dtype {a.dtype}")


def _check(pred: np.ndarray, gt: np.ndarray) -> None:
  if pred.shape != gt.shape:
    raise ValueError(f"predicted mask shape {pred.shape} differs from ground truth {gt.shape}")


def mask_iou(pred: Any, gt: Any, *, threshold: float | None = None) -> float:
  """IoU of two masks of the same shape (1.0 when both are empty)."""
  p, g = as_mask(pred, "pred", threshold), as_mask(gt, "gt")
  _check(p, g)
  union = np.logical_or(p, g).sum()
  return 1.0 if union == 0 else float(np.logical_and(p, g).sum() / union)


def cumulative_iou(preds: Sequence[Any], gts: Sequence[Any], *, threshold: float | None = None
                   ) -> float:
  """cIoU: total intersection over total union across a data set (RefCOCO's headline)."""
  if len(preds) != len(gts):
    raise ValueError(f"{len(preds)} predicted masks for {len(gts)} ground truths")
  inter = union = 0
  for p, g in zip(preds, gts):
    p, g = as_mask(p, "pred", threshold), as_mask(g, "gt")
    _check(p, g)
    inter += int(np.logical_and(p, g).sum())
    union += int(np.logical_or(p, g).sum())
  return 1.0 if union == 0 else inter / union


def tracking_iou(pred: Any, gt: Any, *, threshold: float | None = None) -> float:
  """Mean over frames of the per-frame mask IoU (J mean) of `[T, H, W]` masks."""
  p, g = as_mask(pred, "pred", threshold), as_mask(gt, "gt")
  _check(p, g)
  if p.ndim != 3:
    raise ValueError(f"tracking masks must be [T, H, W], got shape {p.shape}")
  inter = np.logical_and(p, g).sum(axis=(1, 2))
  union = np.logical_or(p, g).sum(axis=(1, 2))
  per = np.where(union == 0, 1.0, inter / np.maximum(union, 1))
  return float(per.mean()) if per.size else 1.0


def mask_chance(gts: Sequence[Any]) -> float:
  """Mean IoU of predicting the whole image for every ground truth (the all-ones baseline)."""
  vals = []
  for g in gts:
    g = as_mask(g, "gt")
    vals.append(1.0 if g.size == 0 else float(g.sum() / g.size))
  return float(np.mean(vals)) if vals else 0.0
