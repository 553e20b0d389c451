"""Rasterisation primitives of PixelWorld: shape masks, backgrounds, z-ordered painting.

No anti-aliasing: a pixel (centre at x + 0.5, y + 0.5) is inside a shape or not, so each pixel
belongs to exactly one object or to the background, and masks are exact ground truth.
Painting writes object ids in z-order into an id map (-1 = background); the image is a palette
lookup of that map, and an object's visible mask is `ids == k`.
"""
from __future__ import annotations

import math

import numpy as np

from vitron_jax.data.pixelworld import vocab as V


def _polygon(verts: list[tuple[float, float]]):
  """Vectorised crossing-number test for a (possibly concave) polygon in (u, v) units."""
  xs = np.array([p[0] for p in verts])
  ys = np.array([p[1] for p in verts])
  xj, yj = np.roll(xs, 1), np.roll(ys, 1)
  dy = yj - ys
  slope = np.where(dy != 0, (xj - xs) / np.where(dy != 0, dy, 1.0), 0.0)
  edges = list(zip(xs, ys, yj, slope))

  def inside(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    out = np.zeros(np.broadcast_shapes(u.shape, v.shape), bool)
    for xi, yi, yjj, k in edges:
      crosses = (yi > v) != (yjj > v)
      out ^= crosses & (u < xi + k * (v - yi))
    return out
  return inside


def _star_vertices(points: int = 5, inner: float = 0.42) -> list[tuple[float, float]]:
  verts = []
  for k in range(2 * points):
    a = -math.pi / 2 + k * math.pi / points
    rad = 1.0 if k % 2 == 0 else inner
    verts.append((rad * math.cos(a), rad * math.sin(a)))
  return verts


_STAR = _polygon(_star_vertices())
_TRIANGLE = _polygon([(0.0, -0.95), (0.95, 0.75), (-0.95, 0.75)])

#: shape name -> predicate on normalised pixel-centre coordinates (u right, v down; radius 1).
SHAPE_PREDICATES = {
    "circle": lambda u, v: u * u + v * v <= 1.0,
    "ring": lambda u, v: (u * u + v * v <= 1.0) & (u * u + v * v >= 0.3),
    "square": lambda u, v: (np.abs(u) <= 0.82) & (np.abs(v) <= 0.82),
    "diamond": lambda u, v: np.abs(u) + np.abs(v) <= 1.05,
    "triangle": _TRIANGLE,
    "star": _STAR,
    "cross": lambda u, v: ((np.abs(u) <= 0.3) & (np.abs(v) <= 0.95))
    | ((np.abs(v) <= 0.3) & (np.abs(u) <= 0.95)),
}
assert set(SHAPE_PREDICATES) == set(V.SHAPES)


def shape_window(shape: str, cx: float, cy: float, radius: float, size: int | None):
  """Mask of a shape inside its bounding window.

  Returns `(y0, x0, mask)` with `mask` bool `[h, w]` covering rows y0:y0+h, columns x0:x0+w.
  With `size` the window is clipped to the `size` x `size` image (possibly to 0x0); with
  `size=None` it is not clipped (for the full, unoccluded area of a shape).
  """
  x0, x1 = math.floor(cx - radius) - 1, math.ceil(cx + radius) + 1
  y0, y1 = math.floor(cy - radius) - 1, math.ceil(cy + radius) + 1
  if size is not None:
    x0, y0 = max(0, x0), max(0, y0)
    x1, y1 = min(size, x1), min(size, y1)
    if x1 <= x0 or y1 <= y0:
      return 0, 0, np.zeros((0, 0), bool)
  u = ((np.arange(x0, x1) + 0.5 - cx) / radius)[None, :]
  v = ((np.arange(y0, y1) + 0.5 - cy) / radius)[:, None]
  return y0, x0, SHAPE_PREDICATES[shape](u, v)


def full_area(shape: str, radius: float) -> int:
  """Pixel count of a shape of this radius at a pixel-aligned centre, unclipped."""
  return int(shape_window(shape, 0.0, 0.0, radius, None)[2].sum())


def background(name: str, size: int, seed: int) -> np.ndarray:
  """uint8 `[size, size, 3]` grey background; textures are deterministic in `seed`."""
  if name in V.PLAIN_BACKGROUNDS:
    return np.full((size, size, 3), V.PLAIN_BACKGROUNDS[name], np.uint8)
  if name not in V.TEXTURED_BACKGROUNDS:
    raise ValueError(f"unknown background {name!r}; expected one of {list(V.BACKGROUNDS)}")
  a, b = V.TEXTURED_BACKGROUNDS[name]
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:size, 0:size]
  if name == "checkered":
    tile = max(2, size // int(rng.choice([4, 6, 8])))
    sel = ((yy // tile + xx // tile) % 2).astype(bool)
  elif name == "striped":
    width = max(2, size // int(rng.choice([6, 8, 10])))
    coord = (yy, xx, yy + xx, yy - xx + size)[int(rng.integers(4))]
    sel = ((coord // width) % 2).astype(bool)
  else:  # noisy: per-pixel grey levels in [a, b]
    grey = rng.integers(a, b + 1, (size, size), dtype=np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)
  grey = np.where(sel, np.uint8(b), np.uint8(a)).astype(np.uint8)
  return np.repeat(grey[..., None], 3, axis=-1)


def paint(bg: np.ndarray, layers: list[tuple[int, int, np.ndarray, int]],
          colours: list[tuple[int, int, int]]) -> tuple[np.ndarray, np.ndarray]:
  """Paint objects in z-order (list order, later on top) over a background.

  layers: `(y0, x0, window_mask, object_id)` per object; colours: RGB per object id.
  Returns `(image uint8 [H, W, 3], ids int8 [H, W])` with -1 for background pixels.
  """
  h, w = bg.shape[:2]
  ids = np.full((h, w), -1, np.int8)
  for y0, x0, m, k in layers:
    if m.size:
      view = ids[y0:y0 + m.shape[0], x0:x0 + m.shape[1]]
      view[m] = k
  palette = np.asarray(colours, np.uint8).reshape(-1, 3)
  image = bg.copy()
  fg = ids >= 0
  image[fg] = palette[ids[fg]]
  return image, ids


def tight_box(mask: np.ndarray) -> np.ndarray:
  """float32 `[4]` pixel box (x1, y1, x2, y2), exclusive end, of a bool `[H, W]` mask.

  All zeros for an empty mask.
  """
  rows = np.flatnonzero(mask.any(axis=1))
  if rows.size == 0:
    return np.zeros(4, np.float32)
  cols = np.flatnonzero(mask.any(axis=0))
  return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.float32)
