"""Scores of an edited PixelWorld image against the edit its prompt asked for.

`targets["mask"]` of an `image_edit` sample marks every pixel the edit changes (the edited
object's visible pixels before and after); `targets["image"]` is the exact edited image.

* `edit_right`: 1 when, inside that mask, at least `min_agree` of the pixels classify
  (`pixels.classify`: the nearest object colour, or background grey) as the exact edited
  image's do: a recoloured object has its new colour, a removed one shows the background, an
  added or moved one stands where it should. Chance: the score of the image left unchanged
  (the source), per sample.
* `l1_outside`: mean |edited - source| / 255 outside the mask (lower is better: the rest of
  the image kept). Chance: a uniformly random image (`pixels.l1_chance`).
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from vitron_jax.eval import pixels as PX


def label_agreement(image: Any, target: Any, mask: Any) -> float:
  """The share of `mask`'s pixels whose palette class in `image` is the one in `target` (1.0
  for an empty mask)."""
  m = np.asarray(mask, bool)
  # pylint: disable-next=protected-access
  a, b = PX._image(image, "edited image", 3), PX._image(target, "target image", 3)
  if a.shape != b.shape or a.shape[:2] != m.shape:
    raise ValueError(f"edited image {a.shape}, target {b.shape} and mask {m.shape} must agree "
                     f"in [H, W]")
  if not m.any():
    return 1.0
  return float((PX.classify(a)[m] == PX.classify(b)[m]).mean())


def edit_scores(image: Any, sample: Mapping[str, Any], *, min_agree: float = 0.75
                ) -> tuple[dict[str, float], dict[str, float]]:
  """(scores, chance) of one edited uint8 image `[H, W, 3]` of an `image_edit` sample."""
  t = sample.get("targets") or {}
  missing = [k for k in ("source_image", "image", "mask") if k not in t]
  if missing:
    raise ValueError(f"sample {sample.get('id')!r} is not an image edit: targets lack "
                     f"{missing}")
  source, target, mask = np.asarray(t["source_image"]), np.asarray(t["image"]), t["mask"]
  right = float(label_agreement(image, target, mask) >= min_agree)
  unchanged = float(label_agreement(source, target, mask) >= min_agree)
  return ({"edit_right": right, "l1_outside": PX.l1_outside(source, image, mask)},
          {"edit_right": unchanged, "l1_outside": PX.l1_chance(source, mask)})
