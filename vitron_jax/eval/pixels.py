"""Checkers for generated pixels (images and videos from the generation / editing backends).

Each pixel is classified to its nearest palette entry: one of PixelWorld's object colours, or
"background" (any grey level; every PixelWorld background is grey). The checkers work on
generated images that are noisy or blurry as long as colours stay near the palette.

* `dominant_colour(image, region)`: majority object colour in a region (pixel box or mask);
* `inside_fraction(image, colour, box)`: share of that colour's pixels inside a requested box;
* `motion_direction(video, colour)`: left / right / up / down / static from centroid motion;
* `l1_outside(before, after, mask)`: mean |after - before| / 255 outside the edited mask.

Chance levels: :data:`PIXEL_CHANCE` (uniform guess), `inside_chance` (box area share),
`l1_chance` (a uniformly random image).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from vitron_jax.data.pixelworld import vocab as V

_GREYS = np.arange(0, 256, 15, dtype=np.float64)
_PALETTE = np.concatenate([V.COLOUR_RGB.astype(np.float64),
                           np.repeat(_GREYS[:, None], 3, axis=1)])  # [C + G, 3]
BACKGROUND = -1

PIXEL_CHANCE: dict[str, float] = {"dominant_colour": 1 / len(V.COLOUR_NAMES),
                                  "motion_direction": 1 / len(V.MOTIONS)}


def _image(x: Any, name: str, ndim: int) -> np.ndarray:
  a = np.asarray(x)
  if a.ndim != ndim or a.shape[-1] != 3:
    raise ValueError(f"{name} must be {'[T, H, W, 3]' if ndim == 4 else '[H, W, 3]'} RGB, "
                     f"got shape {a.shape}")
  if a.dtype != np.uint8:
    raise ValueError(f"{name} must be uint8 in [0, 255], got {a.dtype}")
  return a


def classify(image: Any) -> np.ndarray:
  """int `[..., H, W]`: index into `vocab.COLOUR_NAMES`, or -1 (background grey)."""
  a = np.asarray(image, np.float64)
  d = ((a[..., None, :] - _PALETTE) ** 2).sum(-1)
  idx = d.argmin(-1)
  return np.where(idx < len(V.COLOUR_NAMES), idx, BACKGROUND)


def region_mask(region: Any, height: int, width: int) -> np.ndarray:
  """bool `[H, W]` from a bool mask or a pixel box (x1, y1, x2, y2), rounded outwards."""
  r = np.asarray(region)
  if r.shape == (height, width):
    return r.astype(bool)
  if r.shape != (4,) or not np.isfinite(r.astype(np.float64)).all():
    raise ValueError(f"region must be a [{height}, {width}] mask or a finite (x1, y1, x2, y2) "
                     f"box, got shape {r.shape}")
  x1, y1, x2, y2 = r.astype(np.float64)
  m = np.zeros((height, width), bool)
  m[max(0, int(np.floor(y1))):max(0, int(np.ceil(y2))),
    max(0, int(np.floor(x1))):max(0, int(np.ceil(x2)))] = True
  return m


def dominant_colour(image: Any, region: Any = None, *, min_pixels: int = 4) -> str | None:
  """Most frequent object colour in the region (whole image if None); None when fewer than
  `min_pixels` object-coloured pixels are there."""
  img = _image(image, "image", 3)
  labels = classify(img)
  if region is not None:
    labels = labels[region_mask(region, *img.shape[:2])]
  labels = labels[labels >= 0]
  if labels.size < min_pixels:
    return None
  return V.COLOUR_NAMES[int(np.bincount(labels, minlength=len(V.COLOUR_NAMES)).argmax())]


def inside_fraction(image: Any, colour: str, box: Any, *, tolerance: float = 1.0,
                    min_pixels: int = 4) -> float:
  """Share of the `colour` pixels that lie inside the pixel box grown by `tolerance` px.

  0.0 when fewer than `min_pixels` pixels have that colour (nothing was drawn).
  """
  if colour not in V.COLOURS:
    raise ValueError(f"unknown colour {colour!r}; expected one of {list(V.COLOUR_NAMES)}")
  img = _image(image, "image", 3)
  sel = classify(img) == V.COLOUR_NAMES.index(colour)
  if sel.sum() < min_pixels:
    return 0.0
  b = np.asarray(box, np.float64)
  grown = np.array([b[0] - tolerance, b[1] - tolerance, b[2] + tolerance, b[3] + tolerance])
  inside = region_mask(grown, *img.shape[:2])
  return float((sel & inside).sum() / sel.sum())


def object_inside_box(image: Any, colour: str, box: Any, *, min_fraction: float = 0.9,
                      **kw) -> bool:
  """True when at least `min_fraction` of the colour's pixels are inside the requested box."""
  return inside_fraction(image, colour, box, **kw) >= min_fraction


def inside_chance(box: Any, height: int, width: int) -> float:
  """Chance of `inside_fraction`: the box's share of the image (object placed at random)."""
  return float(region_mask(np.asarray(box, np.float64), height, width).mean())


def motion_direction(video: Any, colour: str, *, min_pixels: int = 4,
                     static_fraction: float = 0.05) -> str | None:
  """Direction of the `colour` pixels' centroid from the first to the last frame showing it.

  "static" when it moves less than `static_fraction` of the frame size; None when the colour
  is visible in fewer than two frames.
  """
  if colour not in V.COLOURS:
    raise ValueError(f"unknown colour {colour!r}; expected one of {list(V.COLOUR_NAMES)}")
  vid = _image(video, "video", 4)
  sel = classify(vid) == V.COLOUR_NAMES.index(colour)
  counts = sel.sum(axis=(1, 2))
  frames = np.flatnonzero(counts >= min_pixels)
  if frames.size < 2:
    return None

  def centre(t):
    ys, xs = np.nonzero(sel[t])
    return xs.mean(), ys.mean()

  (x0, y0), (x1, y1) = centre(frames[0]), centre(frames[-1])
  dx, dy = x1 - x0, y1 - y0
  if max(abs(dx), abs(dy)) < static_fraction * max(vid.shape[1:3]):
    return "static"
  if abs(dx) >= abs(dy):
    return "right" if dx > 0 else "left"
  return "down" if dy > 0 else "up"


def l1_outside(before: Any, after: Any, mask: Any) -> float:
  """Mean absolute difference / 255 over pixels outside `mask` (0 = untouched); images or
  videos with masks `[H, W]` / `[T, H, W]`. 0.0 when the mask covers everything."""
  a, b = np.asarray(before), np.asarray(after)
  m = np.asarray(mask).astype(bool)
  if a.shape != b.shape or a.shape[:-1] != m.shape or a.shape[-1] != 3:
    raise ValueError(f"before {a.shape}, after {b.shape} must be equal [..., H, W, 3] and mask "
                     f"{m.shape} their [..., H, W]")
  keep = ~m
  if not keep.any():
    return 0.0
  diff = np.abs(a.astype(np.float64) - b.astype(np.float64)).mean(-1)
  return float(diff[keep].mean() / 255.0)


def l1_chance(before: Any, mask: Any) -> float:
  """Expected `l1_outside` of an image of uniformly random pixels: E|U - x| / 255 per value."""
  a = np.asarray(before, np.float64)
  keep = ~np.asarray(mask).astype(bool)
  if not keep.any():
    return 0.0
  x = a[keep]
  return float(((x ** 2 + (255 - x) ** 2) / (2 * 255)).mean() / 255.0)
