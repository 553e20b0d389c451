"""Scenes (objects with attributes and per-frame geometry), their rendering, image scenes.

A scene holds T frames of geometry (T = 1 for an image). Objects are listed in z-order: later
objects are painted on top. Rendering gives the frames, the id map and, per object and frame,
the exact visible mask (`ids == k`), its tight box and its pixel count.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from vitron_jax.data.pixelworld import render as R
from vitron_jax.data.pixelworld import splits as S
from vitron_jax.data.pixelworld import vocab as V

#: an image object must keep at least this fraction of its pixels visible under occlusion.
MIN_VISIBLE_FRACTION = 0.5
#: an object is "present" in a frame when at least this fraction of its full area is visible.
PRESENT_FRACTION = 0.2


@dataclasses.dataclass
class Obj:
  """One object: attributes and per-frame centre (pixels) and colour.

  centres: float64 `[T, 2]` (x, y); colours: T colour names (a colour change shows as a new
  name from some frame on); motion: a direction of `vocab.DIRECTIONS` or "static".
  """
  shape: str
  size: str
  radius: float
  centres: np.ndarray
  colours: tuple[str, ...]
  motion: str = "static"
  path: str = "straight"
  event: str = "none"

  @property
  def colour(self) -> str:
    return self.colours[0]

  @property
  def final_colour(self) -> str:
    return self.colours[-1]

  @property
  def change_frame(self) -> int:
    """First frame with a new colour, or -1."""
    for t, c in enumerate(self.colours):
      if c != self.colours[0]:
        return t
    return -1

  def pairs(self) -> set[tuple[str, str]]:
    return {(c, self.shape) for c in self.colours}

  def copy(self) -> "Obj":
    return dataclasses.replace(self, centres=self.centres.copy())


@dataclasses.dataclass
class Scene:
  """Image (num_frames = 1) or video scene. `focus` indexes the object a task is about."""
  size: int
  background: str
  bg_seed: int
  objects: list[Obj]
  focus: int = 0

  @property
  def num_frames(self) -> int:
    return int(self.objects[0].centres.shape[0]) if self.objects else 1

  def copy(self) -> "Scene":
    return dataclasses.replace(self, objects=[o.copy() for o in self.objects])


@dataclasses.dataclass
class Rendered:
  """frames uint8 `[T, H, W, 3]`; ids int8 `[T, H, W]` (-1 background); per object k and frame
  t: boxes float32 `[K, T, 4]` (tight pixel box of the visible mask, zeros if none),
  visible_px int32 `[K, T]`, full_px int32 `[K]` (unoccluded, unclipped area), present bool
  `[K, T]`."""
  frames: np.ndarray
  ids: np.ndarray
  boxes: np.ndarray
  visible_px: np.ndarray
  full_px: np.ndarray
  present: np.ndarray

  def mask(self, k: int) -> np.ndarray:
    """bool `[T, H, W]` visible mask of object k."""
    return self.ids == k

  def span(self, k: int) -> tuple[int, int] | None:
    """Inclusive (first, last) frame in which object k is present, or None."""
    t = np.flatnonzero(self.present[k])
    return (int(t[0]), int(t[-1])) if t.size else None


def render_scene(scene: Scene) -> Rendered:
  """Paint every frame of a scene; exact per-object masks come from the id map."""
  size, nf, k = scene.size, scene.num_frames, len(scene.objects)
  bg = R.background(scene.background, size, scene.bg_seed)
  frames = np.empty((nf, size, size, 3), np.uint8)
  ids = np.empty((nf, size, size), np.int8)
  for t in range(nf):
    layers = [R.shape_window(o.shape, o.centres[t, 0], o.centres[t, 1], o.radius, size) + (j,)
              for j, o in enumerate(scene.objects)]
    frames[t], ids[t] = R.paint(bg, layers, [V.COLOURS[o.colours[t]] for o in scene.objects])
  boxes = np.zeros((k, nf, 4), np.float32)
  visible = np.zeros((k, nf), np.int32)
  for j in range(k):
    m = ids == j
    visible[j] = m.sum(axis=(1, 2))
    for t in np.flatnonzero(visible[j]):
      boxes[j, t] = R.tight_box(m[t])
  full = np.array([R.full_area(o.shape, o.radius) for o in scene.objects], np.int32)
  present = visible >= np.ceil(PRESENT_FRACTION * full)[:, None]
  return Rendered(frames, ids, boxes, visible, full, present & (visible > 0))


def sample_background(rng: np.random.Generator, textured_prob: float) -> tuple[str, int]:
  names = (tuple(V.TEXTURED_BACKGROUNDS) if rng.random() < textured_prob
           else tuple(V.PLAIN_BACKGROUNDS))
  return names[int(rng.integers(len(names)))], int(rng.integers(2**31))


def sample_radius(rng: np.random.Generator, size_name: str, image_size: int) -> float:
  lo, hi = V.SIZES[size_name]
  return float(rng.uniform(lo, hi) * image_size)


class Canvas:
  """Incremental id map for placing image objects under the visibility constraint."""

  def __init__(self, size: int):
    self.size = size
    self.ids = np.full((size, size), -1, np.int16)
    self.visible: list[int] = []
    self.full: list[int] = []

  def try_add(self, shape: str, cx: float, cy: float, radius: float,
              min_fraction: float = MIN_VISIBLE_FRACTION) -> bool:
    """Paint on top if every object already there keeps `min_fraction` of its area visible."""
    y0, x0, m = R.shape_window(shape, cx, cy, radius, self.size)
    view = self.ids[y0:y0 + m.shape[0], x0:x0 + m.shape[1]]
    covered = view[m]
    lost = np.bincount(covered[covered >= 0], minlength=len(self.visible))
    for j, n in enumerate(lost[:len(self.visible)]):
      if n and self.visible[j] - n < min_fraction * self.full[j]:
        return False
    for j, n in enumerate(lost[:len(self.visible)]):
      self.visible[j] -= int(n)
    view[m] = len(self.visible)
    self.visible.append(int(m.sum()))
    self.full.append(R.full_area(shape, radius))
    return True


def random_centre(rng: np.random.Generator, radius: float, size: int) -> tuple[float, float]:
  """A centre that keeps the whole shape inside the image."""
  lo, hi = radius, size - radius
  return float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi))


def sample_image_scene(rng: np.random.Generator, *, size: int, min_objects: int,
                       max_objects: int, textured_prob: float, heldout_focus: bool,
                       tries: int = 30) -> Scene:
  """A one-frame scene of min..max objects with unique colour-shape pairs.

  The focus object (random index) carries a held-out colour-shape pair when `heldout_focus`;
  every other pair is allowed in training. Objects keep >= MIN_VISIBLE_FRACTION visible; an
  object that cannot be placed is dropped (never the focus: if it cannot be placed the scene
  is drawn again from the advanced random stream).
  """
  n = int(rng.integers(min_objects, max_objects + 1))
  focus = int(rng.integers(n))
  bg, bg_seed = sample_background(rng, textured_prob)
  used: set[tuple[str, str]] = set()
  specs = []
  for j in range(n):
    colour, shape = S.sample_colour_shape(rng, heldout=heldout_focus and j == focus,
                                          exclude=used)
    used.add((colour, shape))
    size_name = V.SIZE_NAMES[int(rng.integers(len(V.SIZE_NAMES)))]
    specs.append((colour, shape, size_name, sample_radius(rng, size_name, size)))
  canvas = Canvas(size)
  objects: list[Obj] = []
  new_focus = -1
  for j, (colour, shape, size_name, radius) in enumerate(specs):
    for _ in range(tries if j != focus else 10 * tries):
      cx, cy = random_centre(rng, radius, size)
      if canvas.try_add(shape, cx, cy, radius):
        if j == focus:
          new_focus = len(objects)
        objects.append(Obj(shape, size_name, radius, np.array([[cx, cy]]), (colour,)))
        break
  if new_focus < 0:  # practically never: start again from the advanced random stream
    return sample_image_scene(rng, size=size, min_objects=min_objects, max_objects=max_objects,
                              textured_prob=textured_prob, heldout_focus=heldout_focus,
                              tries=tries)
  return Scene(size, bg, bg_seed, objects, new_focus)


def centroid(mask: np.ndarray) -> tuple[float, float] | None:
  """(x, y) mean of pixel centres of a bool `[H, W]` mask, None when empty."""
  ys, xs = np.nonzero(mask)
  if xs.size == 0:
    return None
  return float(xs.mean() + 0.5), float(ys.mean() + 0.5)


def relation(a: tuple[float, float], b: tuple[float, float], size: int,
             margin: float = 0.1) -> str | None:
  """Dominant relation of point a to point b ("left", "right", "above", "below") or None."""
  dx, dy = a[0] - b[0], a[1] - b[1]
  if abs(dx) >= margin * size and abs(dx) > 1.5 * abs(dy):
    return "left" if dx < 0 else "right"
  if abs(dy) >= margin * size and abs(dy) > 1.5 * abs(dx):
    return "above" if dy < 0 else "below"
  return None

