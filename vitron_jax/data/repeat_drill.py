"""Repeat drills: samples that ask the LLM to copy a text (or drawn boxes) back.

    human: "List: a small purple square moving left and a large red circle in the top right"
    gpt:   "a small purple square moving left and a large red circle in the top right"

Why: VITRON's invocations are mostly copies. A command restates the prompt's content words
(colours, shapes, sizes, positions, directions) in order, and the tiny LLM of the PixelWorld
job gets the first object of a list right and then writes the previous object's shape or
position again ("a medium green square and a small blue square" for "... a small blue ring").
Copying the word that followed the match of the current one is what induction heads do; a drill
rewards exactly that, since nothing but the prompt predicts its words. Three styles:

* "phrases" (default: 1-4 phrases): PixelWorld object lists with every slot drawn uniformly
  and independently: size (or none), colour, shape, then nothing, a position or a motion, and
  an optional background, the way generation prompts write them. Only combinations the
  training split allows are drawn (`pixelworld.splits`: no held-out colour-shape or
  motion-shape pair ever appears), so the drills teach copying, not the held-out pairs.
* "words" (default: 4-24 words): uniform random words of PixelWorld's word list
  (`data.pixelworld_words`, alphabetic words only).
* "boxes" (default: 1-3 boxes, PixelWorld's objects per image): drawn regions to copy back as
  location tokens, the way a generation "in <roi>" or an edit "to <roi>" repeats the user's box
  in its invocation:

      human: "List: a red circle in <roi> and a small blue square in <roi>"  (+ 2 box regions)
      gpt:   "<loc0064><loc0096><loc0288><loc0320><loc0575><loc0128><loc0831><loc0416>"

  Each region is a random integer pixel box (sides 2-16 px) of an `image_size` image (no
  image: only the box's location tokens, which `task.region_boxes` writes before each <roi>,
  tell where it is, so the drill needs that setting).

A source of `data.sources` (`("repeat", "phrases" | "words" | "boxes" [":MIN-MAX"], weight)`;
`train.vitron_task`). Deterministic per (seed, index) like `PixelWorldSource`, so a resumed
pipeline sees the same drills; unlimited length.
"""
from __future__ import annotations

from typing import Any

import grain.python as grain
import numpy as np

from vitron_jax.data.pixelworld import sample as SP
from vitron_jax.data.pixelworld import splits as S
from vitron_jax.data.pixelworld import templates as W
from vitron_jax.data.pixelworld import vocab as V
from vitron_jax.data.pixelworld_words import WORDS
from vitron_jax.protocol import tokens as T

#: the drill's prompt prefix (its words are in PixelWorld's word list)
PROMPT = "List:"
#: the words a "words" drill is made of: PixelWorld's alphabetic words
DRILL_WORDS: tuple[str, ...] = tuple(w for w in WORDS if w.isalpha())
#: `data.sources` kind of this source, and its samples' subtask
KIND = "repeat"
SUBTASK = "repeat"
#: style -> (min, max) items: words of a "words" drill, objects of a "phrases" one
STYLES = {"phrases": (1, 4), "words": (4, 24), "boxes": (1, 3)}
_WHERE = "'phrases', 'words' or 'boxes', optionally ':MIN-MAX' with 1 <= MIN <= MAX"
#: a "boxes" drill's box sides in pixels, [min, max]
BOX_SIDES = (2, 16)


def parse_where(where: Any) -> tuple[str, tuple[int, int]]:
  """`where` of a repeat source -> (style, (min, max) items); None is "phrases"."""
  text = "phrases" if where is None else str(where)
  style, _, span = text.partition(":")
  if style not in STYLES:
    raise ValueError(f"a repeat source's `where` must be {_WHERE}, got {where!r}")
  if not span:
    return style, STYLES[style]
  try:
    lo, hi = (int(x) for x in span.split("-"))
  except ValueError:
    lo = hi = -1
  if not 1 <= lo <= hi:
    raise ValueError(f"a repeat source's `where` must be {_WHERE}, got {where!r}")
  return style, (lo, hi)


def object_noun(rng: np.random.Generator) -> tuple[str, str]:
  """("a [size] colour shape", its shape): every slot uniform and independent, allowed pairs
  only."""
  shape = W.pick(rng, V.SHAPES)
  words = ([W.pick(rng, V.SIZE_NAMES)] if rng.random() < 0.75 else []) + [
      W.pick(rng, S.allowed_colours(shape)), shape]
  return " ".join([V.article(words[0])] + words), shape


def object_phrase(rng: np.random.Generator) -> str:
  """One PixelWorld object phrase, every slot uniform and independent, allowed pairs only."""
  phrase, shape = object_noun(rng)
  tail = rng.random()
  if tail < 1 / 3:
    return phrase
  if tail < 2 / 3:
    return f"{phrase} {V.POSITION_PHRASES[W.pick(rng, V.POSITIONS)]}"
  if rng.random() < 0.2:
    return f"{phrase} staying still"
  curved = rng.random() < 0.3
  return f"{phrase} {W.moving(W.pick(rng, S.allowed_directions(shape)), curved)}"


class RepeatDrillSource(grain.RandomAccessDataSource):
  """index -> a drill (the sample format of `data.pixelworld.sample`: no images; regions only
  in "boxes" drills, boxes of an `image_size` image; cluster "understanding", subtask
  "repeat")."""

  def __init__(self, where: Any = None, *, seed: int = 0, length: int = 2**31 - 1,
               image_size: int = 32):
    self.style, self.lengths = parse_where(where)
    if length <= 0:
      raise ValueError(f"length must be positive, got {length}")
    if image_size < BOX_SIDES[1]:
      raise ValueError(f"image_size must be at least {BOX_SIDES[1]}, got {image_size}")
    self.seed, self.length, self.image_size = int(seed), int(length), int(image_size)

  def __len__(self) -> int:
    return self.length

  def text(self, rng: np.random.Generator) -> str:
    n = int(rng.integers(self.lengths[0], self.lengths[1] + 1))
    if self.style == "words":
      return " ".join(W.pick(rng, DRILL_WORDS) for _ in range(n))
    text = W.join([object_phrase(rng) for _ in range(n)])
    if rng.random() < 0.5:
      text += " " + W.on_background(W.pick(rng, V.BACKGROUNDS))
    return text

  def boxes(self, rng: np.random.Generator) -> tuple[str, str, list[dict]]:
    """A "boxes" drill: (list text with one <roi> per box, the boxes' location tokens, the
    box regions)."""
    n, s = int(rng.integers(self.lengths[0], self.lengths[1] + 1)), self.image_size
    items, answer, regions = [], "", []
    for _ in range(n):
      w, h = (int(v) for v in rng.integers(BOX_SIDES[0], BOX_SIDES[1] + 1, size=2))
      x, y = int(rng.integers(0, s - w + 1)), int(rng.integers(0, s - h + 1))
      box = np.array([x, y, x + w, y + h], np.float32)
      regions.append(SP.region(SP.box_mask(box, (s, s)), box, "box"))
      answer += SP.loc(box, s)
      items.append(f"{object_noun(rng)[0]} in {T.ROI}" if rng.random() < 0.5 else T.ROI)
    return W.join(items), answer, regions

  def __getitem__(self, index: int) -> dict[str, Any]:
    if not 0 <= int(index) < self.length:
      raise IndexError(f"index {index} out of range for a source of length {self.length}")
    rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0x5E9EA7, int(index)]))
    if self.style == "boxes":
      text, answer, regions = self.boxes(rng)
    else:
      text, regions = self.text(rng), []
      answer = text
    return {"id": f"repeat/{self.seed}/{int(index):09d}", "task": "understanding",
            "subtask": SUBTASK,
            "conversations": [{"from": "human", "value": f"{PROMPT} {text}"},
                              {"from": "gpt", "value": answer}],
            "images": [], "regions": regions, "targets": {}, "objects": [], "truth": {}}

  def __repr__(self) -> str:
    return (f"RepeatDrillSource({self.style}:{self.lengths[0]}-{self.lengths[1]}, "
            f"seed={self.seed}, length={self.length})")


def repeat_dataset(where: Any = None, *, seed: int = 0, image_size: int = 32
                   ) -> grain.MapDataset:
  """The drills as a grain MapDataset (what the training pipeline mixes)."""
  return grain.MapDataset.source(RepeatDrillSource(where, seed=seed, image_size=image_size))
