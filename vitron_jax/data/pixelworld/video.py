"""Video scenes: objects moving along straight or curved paths, entering, leaving, recolouring.

Motion of an object over T frames (frame t at fraction f = t / (T - 1)):
`along = a0 + (a1 - a0) * f` on the axis of its direction and
`across = p0 + A * sin(pi * f)` on the other axis (A = 0 for straight paths). Objects that
enter start just outside the frame (no pixel visible) and end inside; objects that leave do the
reverse. A colour change switches an object's colour from a random frame on.
"""
from __future__ import annotations

import numpy as np

from vitron_jax.data.pixelworld import scene as SC
from vitron_jax.data.pixelworld import splits as S
from vitron_jax.data.pixelworld import vocab as V


def _trajectory(rng: np.random.Generator, *, radius: float, size: int, num_frames: int,
                motion: str, path: str, event: str) -> np.ndarray:
  """float64 `[T, 2]` centres for one object."""
  if motion == "static":
    cx, cy = SC.random_centre(rng, radius, size)
    return np.tile(np.array([[cx, cy]]), (num_frames, 1))
  dx, dy = V.DIRECTION_VECTORS[motion]
  sign = dx + dy  # +1 towards larger coordinates, -1 towards smaller
  lo, hi = radius, size - radius
  if event == "none":
    dist = float(rng.uniform(0.25, 0.5)) * size
    dist = min(dist, hi - lo)
    start = float(rng.uniform(lo, hi - dist))
    a0, a1 = (start, start + dist) if sign > 0 else (start + dist, start)
  else:
    inside = float(rng.uniform(lo, hi))
    outside = -radius - 1.0 if sign < 0 else size + radius + 1.0   # where it exits
    before = size + radius + 1.0 if sign < 0 else -radius - 1.0    # where it comes from
    a0, a1 = (before, inside) if event == "enters" else (inside, outside)
  amp = 0.0
  if path == "curved":
    amp = float(rng.uniform(0.08, 0.15)) * size * (1 if rng.random() < 0.5 else -1)
    amp = float(np.clip(amp, -(hi - lo) / 2, (hi - lo) / 2))
  p0 = float(rng.uniform(lo + max(0.0, -amp), hi - max(0.0, amp)))
  f = np.arange(num_frames) / max(1, num_frames - 1)
  along = a0 + (a1 - a0) * f
  across = p0 + amp * np.sin(np.pi * f)
  xy = (along, across) if dx else (across, along)
  return np.stack(xy, axis=-1)


def sample_video_scene(rng: np.random.Generator, *, size: int, num_frames: int,
                       min_objects: int, max_objects: int, textured_prob: float,
                       heldout_focus: bool, static_prob: float = 0.2, curved_prob: float = 0.4,
                       event_prob: float = 0.3, colour_change_prob: float = 0.25,
                       tries: int = 20) -> tuple[SC.Scene, SC.Rendered]:
  """A video scene and its rendering; every object is present (>= PRESENT_FRACTION of its
  area visible) in at least 2 frames.

  Colour-shape pairs are unique across objects *and* frames. With `heldout_focus` the focus
  object carries a held-out colour-shape pair or a held-out direction-shape pair (50/50);
  every other combination is allowed in training.
  """
  for _ in range(tries):
    n = int(rng.integers(min_objects, max_objects + 1))
    focus = int(rng.integers(n))
    bg, bg_seed = SC.sample_background(rng, textured_prob)
    held_motion = heldout_focus and rng.random() < 0.5
    used: set[tuple[str, str]] = set()
    objects = []
    for j in range(n):
      is_focus = j == focus
      colour, shape = S.sample_colour_shape(
          rng, heldout=heldout_focus and is_focus and not held_motion, exclude=used)
      used.add((colour, shape))
      if held_motion and is_focus:
        motion = S.sample_direction(rng, shape, heldout=True)
      elif rng.random() < static_prob:
        motion = "static"
      else:
        motion = S.sample_direction(rng, shape, heldout=False)
      path = ("curved" if motion != "static" and rng.random() < curved_prob else "straight")
      event = "none"
      if motion != "static" and rng.random() < event_prob:
        event = ("enters", "leaves")[int(rng.integers(2))]
      size_name = V.SIZE_NAMES[int(rng.integers(len(V.SIZE_NAMES)))]
      radius = SC.sample_radius(rng, size_name, size)
      centres = _trajectory(rng, radius=radius, size=size, num_frames=num_frames,
                            motion=motion, path=path, event=event)
      colours = [colour] * num_frames
      if num_frames >= 3 and rng.random() < colour_change_prob:
        options = [c for c in S.allowed_colours(shape) if c != colour and (c, shape) not in used]
        if options:
          new = options[int(rng.integers(len(options)))]
          used.add((new, shape))
          start = int(rng.integers(1, num_frames - 1))
          colours[start:] = [new] * (num_frames - start)
      objects.append(SC.Obj(shape, size_name, radius, centres, tuple(colours), motion, path,
                            event))
    scene = SC.Scene(size, bg, bg_seed, objects, focus)
    rendered = SC.render_scene(scene)
    if (rendered.present.sum(axis=1) >= 2).all():
      return scene, rendered
  raise RuntimeError(f"could not sample a video scene in {tries} tries (size={size}, "
                     f"frames={num_frames}); use more frames or fewer objects")
