"""The segmenter finds the objects an invocation names (Grounded-SAM's composition).

An image edit ("make the red circle blue", "remove ...", "move ... to the top left") and an
image -> video plan ("the red circle is moving left and ...") name objects of the
conversation's image, and their invocations' boxes say where those objects are. The LLM writes
the boxes, and a small LLM's boxes are the weakest part of its answers (BUILD_NOTES.md, "Where
the LLM's boxes fail"), while the segmenter finds an object from its words alone. With
`task.ground_with_segmenter` (it needs `model.segmenter`), before such an invocation runs its
backend, the box of every object it names in the image is the box of the largest part of the
mask the segmenter makes of that phrase (its native text condition on the phrase, no box
prompt; `object_box`), as
Grounded-SAM hands a grounder's boxes to an inpainting model. What the words alone place (where
an object is added or moved to) and the planned motion stay the LLM's.

Each attachment says which phrases of its invocation name objects of the image
(`grounded_phrases(inv)`) and how the boxes found replace the LLM's (`with_grounded(inv,
found)`); a phrase the segmenter finds nothing for (an empty mask, a phrase its text encoder
cannot take) keeps the LLM's box. Only the backend's input changes: the answer the LLM wrote,
its text rows and the answers file are kept as they were; the report says which modules were
grounded and how many answers changed (`PhraseGrounder.ground`).
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from scipy import ndimage

from vitron_jax.protocol import invocation as I
from vitron_jax.protocol.invocation import Box

#: rows of one segmenter call are padded to a multiple of this (fewer shapes to compile)
BUCKET = 8


def anchored_path(path: Sequence[Sequence[float]], start: Sequence[float] | None
                  ) -> tuple[Box, ...]:
  """One object's planned boxes over the frames, moved so that the first is `start` (its box
  found in the image; None keeps the plan): frame t's box is `start` shifted by the plan's
  displacement of the box centre from frame 0 to t, clipped to the image."""
  path = [tuple(float(v) for v in b) for b in path]
  if start is None or not path:
    return tuple(path)  # type: ignore[return-value]
  s = np.asarray(start, np.float64)
  c0 = np.array([path[0][0] + path[0][2], path[0][1] + path[0][3]]) / 2
  out = []
  for b in path:
    d = np.array([b[0] + b[2], b[1] + b[3]]) / 2 - c0
    moved = np.clip(s + np.concatenate([d, d]), 0.0, 1.0)
    out.append(tuple(float(v) for v in moved))
  return tuple(out)  # type: ignore[return-value]


def object_box(mask: np.ndarray) -> Box | None:
  """The pixel box (x1, y1, x2, y2; exclusive end) of the largest 8-connected part of a bool
  `[H, W]` mask (stray pixels elsewhere would stretch a box of the whole mask), or None when
  the mask is empty."""
  parts, n = ndimage.label(np.asarray(mask, bool), structure=np.ones((3, 3), bool))
  if n == 0:
    return None
  sizes = np.bincount(parts.ravel())[1:]
  ys, xs = np.nonzero(parts == 1 + int(np.argmax(sizes)))
  return (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))


class PhraseGrounder:
  """The image segmenter (`train.segmentation_attachment.SegmentationAttachment`) grounding
  the phrases of other backends' invocations (see the module docstring)."""

  def __init__(self, segmentation: Any):
    self.module = segmentation.module
    self.segmenter = segmentation.segmenter
    self.runner = segmentation.runner
    self._run = jax.jit(self._masks)

  def _masks(self, params, pixel_values, command_ids):
    cond = self.segmenter.condition(params, command_ids)
    return self.runner.run(params, {"pixel_values": pixel_values}, cond)["masks"][:, 0]

  def find(self, params, images: Sequence[Any], phrases: Sequence[str]) -> list[Box | None]:
    """The normalised tight box of the segmenter's mask of `phrases[i]` in `images[i]` (uint8
    `[H, W, 3]`), or None where the mask is empty or the phrase does not fit its text
    encoder."""
    if len(images) != len(phrases):
      raise ValueError(f"find takes one image per phrase, got {len(images)} images and "
                       f"{len(phrases)} phrases")
    if not phrases:
      return []
    ids, fits = [], []
    for p in phrases:
      try:
        ids.append(self.segmenter.command_ids(p, "phrase"))
        fits.append(True)
      except ValueError:
        ids.append(self.segmenter.command_ids("a"))
        fits.append(False)
    n = len(phrases)
    pad = -n % BUCKET
    media = np.stack([np.asarray(m) for m in images] + [np.asarray(images[0])] * pad)
    pixels = self.runner.preprocess(media)["pixel_values"]
    ids = np.stack(ids + [ids[0]] * pad)
    masks = np.asarray(self._run(params, pixels, ids))
    h, w = masks.shape[-2:]
    boxes = [object_box(m) if ok else None for m, ok in zip(masks[:n], fits)]
    return [None if b is None else I.normalize_box(b, w, h) for b in boxes]

  def ground(self, attachment: Any, params, samples: Sequence[dict], answers: Sequence[str]
             ) -> tuple[list[str], int]:
    """`answers` with the boxes of the objects their `attachment.module` invocations name in
    the conversation's one image found by the segmenter (`params`: its parameters), and how
    many answers changed. Answers of other modules, and conversations without exactly one
    image, are returned as they were."""
    jobs = []  # (answer index, invocation, its phrases, the image)
    for i, (s, a) in enumerate(zip(samples, answers)):
      inv = I.find_invocation(a)
      images = s.get("images") or []
      if not inv or inv.module != attachment.module or len(images) != 1:
        continue
      phrases = attachment.grounded_phrases(inv)
      if phrases:
        jobs.append((i, inv, phrases, images[0]))
    found = self.find(params, [img for _, _, ps, img in jobs for _ in ps],
                      [p for _, _, ps, _ in jobs for p in ps])
    out, changed, k = list(answers), 0, 0
    for i, inv, phrases, _ in jobs:
      new = attachment.with_grounded(inv, found[k:k + len(phrases)])
      k += len(phrases)
      if new != inv:
        out[i] = I.replace_invocation(answers[i], new)
        changed += 1
    return out, changed
