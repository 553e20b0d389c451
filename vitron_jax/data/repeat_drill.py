"""Repeat drills: text-only samples that ask the LLM to copy a text back.

    human: "List: a small purple square moving left and a large red circle in the top right"
    gpt:   "a small purple square moving left and a large red circle in the top right"

Why: VITRON's invocations are mostly copies. A command restates the prompt's content words
(colours, shapes, sizes, positions, directions) in order, and the tiny LLM of the PixelWorld
job gets the first object of a list right and then writes the previous object's shape or
position again ("a medium green square and a small blue square" for "... a small blue ring").
Copying the word that followed the match of the current one is what induction heads do; a drill
rewards exactly that, since nothing but the prompt predicts its words. Two styles:

* "phrases" (default: 1-4 phrases): PixelWorld object lists with every slot drawn uniformly
  and independently: size (or none), colour, shape, then nothing, a position or a motion, and
  an optional background, the way generation prompts write them. Only combinations the
  training split allows are drawn (`pixelworld.splits`: no held-out colour-shape or
  motion-shape pair ever appears), so the drills teach copying, not the held-out pairs.
* "words" (default: 4-24 words): uniform random words of PixelWorld's word list
  (`data.pixelworld_words`, alphabetic words only).

A source of `data.sources` (`("repeat", "phrases" | "words" [":MIN-MAX"], weight)`;
`train.vitron_task`). Deterministic per (seed, index) like `PixelWorldSource`, so a resumed
pipeline sees the same drills; unlimited length.
"""
from __future__ import annotations

from typing import Any

import grain.python as grain
import numpy as np

from vitron_jax.data.pixelworld import splits as S
from vitron_jax.data.pixelworld import templates as W
from vitron_jax.data.pixelworld import vocab as V
from vitron_jax.data.pixelworld_words import WORDS

#: the drill's prompt prefix (its words are in PixelWorld's word list)
PROMPT = "List:"
#: the words a "words" drill is made of: PixelWorld's alphabetic words
DRILL_WORDS: tuple[str, ...] = tuple(w for w in WORDS if w.isalpha())
#: `data.sources` kind of this source, and its samples' subtask
KIND = "repeat"
SUBTASK = "repeat"
#: style -> (min, max) items: words of a "words" drill, objects of a "phrases" one
STYLES = {"phrases": (1, 4), "words": (4, 24)}
_WHERE = "'phrases' or 'words', optionally ':MIN-MAX' with 1 <= MIN <= MAX"


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


def object_phrase(rng: np.random.Generator) -> str:
  """One PixelWorld object phrase, every slot uniform and independent, allowed pairs only."""
  shape = W.pick(rng, V.SHAPES)
  words = ([W.pick(rng, V.SIZE_NAMES)] if rng.random() < 0.75 else []) + [
      W.pick(rng, S.allowed_colours(shape)), shape]
  phrase = " ".join([V.article(words[0])] + words)
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
  """index -> a drill (the sample format of `data.pixelworld.sample`: no images, no regions;
  cluster "understanding", subtask "repeat")."""

  def __init__(self, where: Any = None, *, seed: int = 0, length: int = 2**31 - 1):
    self.style, self.lengths = parse_where(where)
    if length <= 0:
      raise ValueError(f"length must be positive, got {length}")
    self.seed, self.length = int(seed), int(length)

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

  def __getitem__(self, index: int) -> dict[str, Any]:
    if not 0 <= int(index) < self.length:
      raise IndexError(f"index {index} out of range for a source of length {self.length}")
    text = self.text(np.random.default_rng(np.random.SeedSequence(
        [self.seed, 0x5E9EA7, int(index)])))
    return {"id": f"repeat/{self.seed}/{int(index):09d}", "task": "understanding",
            "subtask": SUBTASK,
            "conversations": [{"from": "human", "value": f"{PROMPT} {text}"},
                              {"from": "gpt", "value": text}],
            "images": [], "regions": [], "targets": {}, "objects": [], "truth": {}}

  def __repr__(self) -> str:
    return (f"RepeatDrillSource({self.style}:{self.lengths[0]}-{self.lengths[1]}, "
            f"seed={self.seed}, length={self.length})")


def repeat_dataset(where: Any = None, *, seed: int = 0) -> grain.MapDataset:
  """The drills as a grain MapDataset (what the training pipeline mixes)."""
  return grain.MapDataset.source(RepeatDrillSource(where, seed=seed))
