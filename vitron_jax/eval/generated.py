"""Scores of a generated PixelWorld image against the objects its prompt asked for.

Per requested object (colour `c`, and with a grounded prompt its requested pixel box):

* `colour_right`: with a box, the dominant object colour inside the box is `c`
  (`pixels.dominant_colour`); without one, `c` is among the N most drawn object colours of the
  image (N = the objects asked for; at least `min_pixels` pixels), so an image of noise, which
  holds a little of every colour, does not pass. Chance: a uniformly random colour per object
  (1 / C inside a box; without a box, the chance that N random-coloured objects include `c`,
  1 - (1 - 1/C)^N);
* `inside_box` (grounded prompts only): at least `min_fraction` of the pixels of colour `c` lie
  inside the union of the requested boxes of that colour, grown by 1 px
  (`pixels.inside_fraction`'s rule). Chance: the boxes' share of the image (an object put at
  a uniformly random place).

A sample's score is the mean over its objects; `None` boxes means the prompt had none.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from vitron_jax.data.pixelworld import vocab as V
from vitron_jax.eval import pixels as PX


def generation_scores(image: Any, colours: Sequence[str], boxes: Sequence[Any] | None, *,
                      min_pixels: int = 4, min_fraction: float = 0.9
                      ) -> tuple[dict[str, float], dict[str, float]]:
  """(scores, chance) of one generated uint8 image `[H, W, 3]`; see the module docstring."""
  img = PX._image(image, "generated image", 3)  # pylint: disable=protected-access
  h, w = img.shape[:2]
  if not colours:
    raise ValueError("generation_scores needs at least one requested colour")
  for c in colours:
    if c not in V.COLOURS:
      raise ValueError(f"unknown colour {c!r}; expected one of {list(V.COLOUR_NAMES)}")
  if boxes is not None and len(boxes) != len(colours):
    raise ValueError(f"{len(boxes)} boxes for {len(colours)} requested objects")
  labels = PX.classify(img)
  n_col = len(V.COLOUR_NAMES)
  counts = np.bincount(labels[labels >= 0], minlength=n_col)
  top = [V.COLOUR_NAMES[i] for i in np.argsort(-counts, kind="stable")[:len(set(colours))]
         if counts[i] >= min_pixels]
  right, right_chance, inside, inside_chance = [], [], [], []
  for k, c in enumerate(colours):
    sel = labels == V.COLOUR_NAMES.index(c)
    if boxes is None:
      right.append(float(c in top))
      right_chance.append(1.0 - (1.0 - 1.0 / n_col) ** len(colours))
      continue
    right.append(float(PX.dominant_colour(img, boxes[k], min_pixels=min_pixels) == c))
    right_chance.append(1.0 / n_col)
    region = np.zeros((h, w), bool)
    for j, cj in enumerate(colours):
      if cj == c:
        b = np.asarray(boxes[j], np.float64)
        region |= PX.region_mask(b + np.array([-1.0, -1.0, 1.0, 1.0]), h, w)
    ok = sel.sum() >= min_pixels and (sel & region).sum() >= min_fraction * sel.sum()
    inside.append(float(ok))
    inside_chance.append(float(region.mean()))
  scores = {"colour_right": float(np.mean(right))}
  chance = {"colour_right": float(np.mean(right_chance))}
  if boxes is not None:
    scores["inside_box"], chance["inside_box"] = float(np.mean(inside)), float(
        np.mean(inside_chance))
  return scores, chance
