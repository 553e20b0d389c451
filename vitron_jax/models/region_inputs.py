"""User-drawn regions -> binary masks and normalised boxes, checked, outside jit (numpy).

Every region kind becomes a binary mask at the image resolution (DESIGN.md §3):

* a box ``{"box": (x1, y1, x2, y2)}`` in pixels, exclusive end: pixel (row i, col j) is in the
  box when its centre ``(j + .5, i + .5)`` lies inside;
* a mask ``{"mask": [H, W] bool/0-1 array}``;
* a scribble ``{"scribble": [(x, y), ...], "radius": r}``: a polyline in pixel coordinates;
  pixels whose centre is within ``r`` (default 0.5) of the polyline are in. A scribble that
  sweeps every pixel row of a box with radius 0.5 gives exactly the box's mask.

The box encoding of a region is the bounding box of its mask, normalised to [0, 1]
(x1 = col_min / W, y1 = row_min / H, x2 = (col_max + 1) / W, y2 = (row_max + 1) / H), so a box,
its mask and a scribble that fills it give identical inputs and identical features.

Rejected with `RegionError` (a ValueError) naming the region: a box or scribble point outside
the image, a box with x2 <= x1 or y2 <= y1, a mask of the wrong shape or non-binary values, any
region of zero area. Optional key ``"source"``: index of the image (or video) of the sample the
region is drawn on (default 0).

Videos: a video region is a list of T per-frame regions (None where the object is absent); at
least one frame must have area.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

Region = Mapping[str, Any]


class RegionError(ValueError):
  """A user-drawn region that cannot be used (outside the image, zero area, malformed)."""


def _finite(vals, name: str, what: str) -> np.ndarray:
  try:
    a = np.asarray(vals, np.float64)
  except (TypeError, ValueError) as e:
    raise RegionError(f"{name}: {what} must be numbers, got {vals!r}") from e
  if not np.all(np.isfinite(a)):
    raise RegionError(f"{name}: {what} must be finite, got {a.tolist()}")
  return a


def _box_mask(box, height: int, width: int, name: str) -> np.ndarray:
  b = _finite(box, name, "box (x1, y1, x2, y2)")
  if b.shape != (4,):
    raise RegionError(f"{name}: box must be 4 numbers (x1, y1, x2, y2), got {box!r}")
  x1, y1, x2, y2 = b
  if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
    raise RegionError(f"{name}: box {tuple(b.tolist())} lies outside the {width}x{height} image "
                      f"(expected 0 <= x1, y1 and x2 <= {width}, y2 <= {height})")
  if x2 <= x1 or y2 <= y1:
    raise RegionError(f"{name}: box {tuple(b.tolist())} has zero area (expected x1 < x2 and "
                      f"y1 < y2)")
  cx = np.arange(width) + 0.5
  cy = np.arange(height) + 0.5
  return ((cy[:, None] >= y1) & (cy[:, None] < y2)) & ((cx[None] >= x1) & (cx[None] < x2))


def _scribble_mask(points, radius, height: int, width: int, name: str) -> np.ndarray:
  p = _finite(points, name, "scribble points")
  if p.ndim != 2 or p.shape[1] != 2 or len(p) == 0:
    raise RegionError(f"{name}: scribble must be a non-empty list of (x, y) points, got shape "
                      f"{p.shape}")
  r = float(_finite(radius, name, "scribble radius"))
  if r <= 0:
    raise RegionError(f"{name}: scribble radius must be positive, got {r}")
  if (p[:, 0] < 0).any() or (p[:, 1] < 0).any() or (p[:, 0] > width).any() or (
      p[:, 1] > height).any():
    raise RegionError(f"{name}: scribble points lie outside the {width}x{height} image")
  yy, xx = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
  pix = np.stack([xx, yy], -1)  # [H, W, 2]
  a = p[:-1] if len(p) > 1 else p
  b = p[1:] if len(p) > 1 else p
  mask = np.zeros((height, width), bool)
  for s, e in zip(a, b):  # distance from every pixel centre to the segment s-e
    d = e - s
    denom = float(d @ d)
    t = np.zeros((height, width)) if denom == 0 else np.clip(((pix - s) @ d) / denom, 0, 1)
    closest = s + t[..., None] * d
    mask |= np.sum((pix - closest) ** 2, -1) <= r * r + 1e-9
  return mask


def region_mask(region: Region, height: int, width: int, name: str = "region") -> np.ndarray:
  """One region -> `[height, width]` bool mask (checked; see the module doc)."""
  if not isinstance(region, Mapping):
    raise RegionError(f"{name}: expected a dict with 'box', 'mask' or 'scribble', got "
                      f"{type(region).__name__}")
  kinds = [k for k in ("box", "mask", "scribble") if k in region]
  if len(kinds) != 1:
    raise RegionError(f"{name}: expected exactly one of 'box', 'mask', 'scribble', got keys "
                      f"{sorted(region)}")
  kind = kinds[0]
  if kind == "box":
    m = _box_mask(region["box"], height, width, name)
  elif kind == "scribble":
    m = _scribble_mask(region["scribble"], region.get("radius", 0.5), height, width, name)
  else:
    raw = np.asarray(region["mask"])
    if raw.shape != (height, width):
      raise RegionError(f"{name}: mask must be [{height}, {width}] (the image size), got shape "
                        f"{raw.shape}")
    if raw.dtype != bool and not np.isin(raw, (0, 1)).all():
      raise RegionError(f"{name}: mask must be binary (bool or 0/1), got values in "
                        f"[{raw.min()}, {raw.max()}]")
    m = raw.astype(bool)
  if not m.any():
    raise RegionError(f"{name}: {kind} region has zero area (no pixel of the {width}x{height} "
                      "image is inside it)")
  return m


def mask_box(mask: np.ndarray) -> np.ndarray:
  """Normalised bounding box `[4]` (x1, y1, x2, y2) of a non-empty `[H, W]` mask."""
  h, w = mask.shape
  rows = np.flatnonzero(mask.any(1))
  cols = np.flatnonzero(mask.any(0))
  return np.asarray([cols[0] / w, rows[0] / h, (cols[-1] + 1) / w, (rows[-1] + 1) / h],
                    np.float32)


def _source(region: Region | None, name: str, num_sources: int | None) -> int:
  s = 0 if region is None else region.get("source", 0)
  if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0 or (
      num_sources is not None and s >= num_sources):
    raise RegionError(f"{name}: source must be an image/video index in [0, "
                      f"{num_sources if num_sources is not None else 'n'}), got {s!r}")
  return int(s)


def prepare_image_regions(regions: Sequence[Sequence[Region]], height: int, width: int,
                          max_regions: int, num_sources: int | None = None
                          ) -> dict[str, np.ndarray]:
  """Per-sample lists of regions -> static arrays for `RegionEncoder` (T = 1 frame).

  Returns masks `[B, R, 1, H, W]` float32, boxes `[B, R, 1, 4]` float32 (normalised),
  frame_valid `[B, R, 1]` bool, valid `[B, R]` bool, source `[B, R]` int32 (R = max_regions;
  regions are packed to the front, padding rows are all-zero with valid False).
  """
  b = len(regions)
  out = _empty(b, max_regions, 1, height, width)
  for i, sample in enumerate(regions):
    if len(sample) > max_regions:
      raise RegionError(f"sample {i} has {len(sample)} regions; at most max_regions="
                        f"{max_regions} fit the static layout")
    for j, reg in enumerate(sample):
      name = f"sample {i} region {j}"
      m = region_mask(reg, height, width, name)
      out["masks"][i, j, 0] = m
      out["boxes"][i, j, 0] = mask_box(m)
      out["frame_valid"][i, j, 0] = True
      out["valid"][i, j] = True
      out["source"][i, j] = _source(reg, name, num_sources)
  return out


def prepare_video_regions(regions: Sequence[Sequence[Sequence[Region | None]]], num_frames: int,
                          height: int, width: int, max_regions: int,
                          num_sources: int | None = None) -> dict[str, np.ndarray]:
  """Per-sample lists of video regions (each a list of `num_frames` per-frame regions or None)
  -> masks `[B, R, T, H, W]`, boxes `[B, R, T, 4]`, frame_valid `[B, R, T]`, valid `[B, R]`,
  source `[B, R]` (the `source` of a region is read from its first present frame)."""
  b = len(regions)
  out = _empty(b, max_regions, num_frames, height, width)
  for i, sample in enumerate(regions):
    if len(sample) > max_regions:
      raise RegionError(f"sample {i} has {len(sample)} video regions; at most max_regions="
                        f"{max_regions} fit the static layout")
    for j, frames in enumerate(sample):
      name = f"sample {i} video region {j}"
      if len(frames) != num_frames:
        raise RegionError(f"{name}: expected {num_frames} per-frame entries (None where absent), "
                          f"got {len(frames)}")
      present = [t for t, f in enumerate(frames) if f is not None]
      if not present:
        raise RegionError(f"{name} has zero area: it is absent from every frame")
      for t in present:
        m = region_mask(frames[t], height, width, f"{name} frame {t}")
        out["masks"][i, j, t] = m
        out["boxes"][i, j, t] = mask_box(m)
        out["frame_valid"][i, j, t] = True
      out["valid"][i, j] = True
      out["source"][i, j] = _source(frames[present[0]], name, num_sources)
  return out


def _empty(b: int, r: int, t: int, h: int, w: int) -> dict[str, np.ndarray]:
  return {"masks": np.zeros((b, r, t, h, w), np.float32),
          "boxes": np.zeros((b, r, t, 4), np.float32),
          "frame_valid": np.zeros((b, r, t), bool),
          "valid": np.zeros((b, r), bool),
          "source": np.zeros((b, r), np.int32)}
