"""Temporal IoU of inclusive frame spans (first, last) and its exact chance level."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def _span(x: Any) -> tuple[int, int] | None:
  try:
    a, b = (int(v) for v in x)
  except (TypeError, ValueError, OverflowError):
    return None
  return (a, b) if a <= b else None


def temporal_iou(pred: Any, gt: Any) -> float:
  """IoU of inclusive integer spans; 0 for a missing (None) or inverted predicted span."""
  g = _span(gt)
  if g is None:
    raise ValueError(f"ground-truth span must be (first, last) with first <= last, got {gt!r}")
  p = _span(pred) if pred is not None else None
  if p is None:
    return 0.0
  inter = max(0, min(p[1], g[1]) - max(p[0], g[0]) + 1)
  union = (p[1] - p[0] + 1) + (g[1] - g[0] + 1) - inter
  return inter / union


def temporal_chance(gt_spans: Sequence[Any], num_frames: int) -> float:
  """Exact mean tIoU of a span drawn uniformly from all first <= last spans of the clip."""
  spans = [(a, b) for a in range(num_frames) for b in range(a, num_frames)]
  vals = [np.mean([temporal_iou(s, g) for s in spans]) for g in gt_spans]
  return float(np.mean(vals)) if vals else 0.0
