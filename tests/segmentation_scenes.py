"""Tiny synthetic scenes for the segmentation tests (stand-in until PixelWorld lands).

Plain backgrounds with coloured discs and squares and exact masks; videos of one object moving
with constant velocity (bouncing off the borders) next to a distractor. Deterministic from the
numpy Generator passed in.
"""
from __future__ import annotations

import numpy as np

PALETTE = np.array([[220, 40, 40], [40, 200, 60], [50, 80, 230], [230, 210, 40]], np.uint8)


def shape_mask(size: int, cx: float, cy: float, r: float, kind: str) -> np.ndarray:
  """Boolean `[size, size]` disc or axis-aligned square of radius/half-side r at (cx, cy)."""
  yy, xx = np.mgrid[0:size, 0:size] + 0.5
  if kind == "disc":
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
  return (np.abs(xx - cx) <= r) & (np.abs(yy - cy) <= r)


def background(rng: np.random.Generator, size: int) -> np.ndarray:
  img = np.empty((size, size, 3), np.uint8)
  img[:] = rng.integers(0, 70, size=3, dtype=np.uint8)
  return img


def _place(rng, size, radii, tries=100):
  """Non-overlapping centres for the given radii (None if it failed)."""
  centres = []
  for r in radii:
    for _ in range(tries):
      c = rng.uniform(r + 1, size - r - 1, size=2)
      if all(np.hypot(*(c - c2)) > r + r2 + 2 for c2, r2 in zip(centres, radii)):
        centres.append(c)
        break
    else:
      return None
  return centres


def referring_scenes(rng: np.random.Generator, n: int, size: int = 64, min_objects: int = 2,
                     max_objects: int = 3, radius=(6.0, 11.0)):
  """`n` scenes of 2-3 objects with distinct palette colours; the target is one of them.

  Returns images `[n, size, size, 3]` uint8, target masks `[n, size, size]` bool and the
  target's colour id `[n]` (what the signal prompt must convey).
  """
  images = np.empty((n, size, size, 3), np.uint8)
  masks = np.zeros((n, size, size), bool)
  ids = np.empty((n,), np.int32)
  for i in range(n):
    while True:
      k = int(rng.integers(min_objects, max_objects + 1))
      radii = rng.uniform(*radius, size=k)
      centres = _place(rng, size, radii)
      if centres is not None:
        break
    colours = rng.permutation(len(PALETTE))[:k]
    img = background(rng, size)
    target = int(rng.integers(k))
    for j, (c, r) in enumerate(zip(centres, radii)):
      m = shape_mask(size, c[0], c[1], r, "disc" if rng.random() < 0.5 else "square")
      img[m] = PALETTE[colours[j]]
      if j == target:
        masks[i] = m
    images[i], ids[i] = img, colours[target]
  return images, masks, ids


def tracking_pairs(rng: np.random.Generator, n: int, size: int = 64, max_shift: float = 5.0,
                   radius=(7.0, 11.0), grow=(-2.0, 2.0), twin: bool = True):
  """Training pairs for tracking: a target, a second object (a *twin of the same colour* when
  `twin`, else of a third colour) and a distractor of another colour. The target's mask at a
  previous position (shifted by up to `max_shift` px, radius changed by `grow` px, as an
  imperfect previous prediction would be) is the prompt; with a twin, the colour id (what a
  signal prompt would convey) cannot tell target and twin apart.

  Returns images `[n, s, s, 3]`, prompt masks, target masks `[n, s, s]` and colour ids `[n]`.
  """
  images = np.empty((n, size, size, 3), np.uint8)
  prompts = np.zeros((n, size, size), bool)
  targets = np.zeros((n, size, size), bool)
  ids = np.empty((n,), np.int32)
  for i in range(n):
    while True:
      radii = rng.uniform(*radius, size=3)
      centres = _place(rng, size, radii)
      if centres is not None:
        break
    kinds = ["disc" if rng.random() < 0.5 else "square" for _ in range(3)]
    c, other, third = rng.permutation(len(PALETTE))[:3]
    img = background(rng, size)
    for (cx, cy), r, kind, col in zip(centres, radii, kinds, (c, c if twin else third, other)):
      img[shape_mask(size, cx, cy, r, kind)] = PALETTE[col]
    (cx, cy), r = centres[0], radii[0]
    targets[i] = shape_mask(size, cx, cy, r, kinds[0])
    d = rng.uniform(-max_shift, max_shift, size=2)
    g = rng.uniform(*grow)
    prompts[i] = shape_mask(size, cx - d[0], cy - d[1], max(r + g, 3.0), kinds[0])
    images[i], ids[i] = img, c
  return images, prompts, targets, ids


def _trajectory(rng, size, radius, speed, frames):
  pos = rng.uniform(radius + 1, size - radius - 1, size=2)
  angle = rng.uniform(0, 2 * np.pi)
  vel = speed * np.array([np.cos(angle), np.sin(angle)])
  out = []
  for _ in range(frames):
    out.append(pos.copy())
    pos = pos + vel
    for a in range(2):
      if pos[a] < radius + 1 or pos[a] > size - radius - 1:
        vel[a] = -vel[a]
        pos[a] = np.clip(pos[a], radius + 1, size - radius - 1)
  return np.array(out)


def moving_object_video(rng: np.random.Generator, frames: int = 10, size: int = 64,
                        speed: float = 3.0, radius: float = 9.0, kind: str = "disc",
                        twin: bool = True, min_gap: float = 2.0):
  """One object moving at `speed` px/frame (bouncing off the borders) among a static second
  object (a twin of the same colour when `twin`, else of a third colour) and a static
  distractor of another colour. The moving object passes the others but never comes closer
  than `min_gap` px to them (occlusion is out of scope for the tiny test models).

  Returns frames `[T, size, size, 3]` uint8, the moving object's masks `[T, size, size]` and
  its colour id.
  """
  bg = background(rng, size)
  c, other, third = rng.permutation(len(PALETTE))[:3]
  r2 = radius * 0.8
  reach = np.sqrt(2.0)  # squares reach sqrt(2) x their half-side along diagonals
  for _ in range(1000):
    statics = _place(rng, size, [r2, r2])
    path = _trajectory(rng, size, radius, speed, frames)
    if statics is None:
      continue
    gaps = [np.hypot(*(path - np.asarray(p)).T) - reach * (radius + r2) for p in statics]
    if min(g.min() for g in gaps) >= min_gap:
      break
  else:
    raise RuntimeError("could not place a video's objects")
  static = [(shape_mask(size, *statics[0], r2, "square"), c if twin else third),
            (shape_mask(size, *statics[1], r2, "disc"), other)]
  video = np.empty((frames, size, size, 3), np.uint8)
  masks = np.zeros((frames, size, size), bool)
  for t in range(frames):
    img = bg.copy()
    for m, col in static:
      img[m] = PALETTE[col]
    m = shape_mask(size, path[t][0], path[t][1], radius, kind)
    img[m] = PALETTE[c]
    video[t], masks[t] = img, m
  return video, masks, int(c)
