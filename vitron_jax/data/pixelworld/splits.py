"""Splits of PixelWorld and the rule that keeps attribute combinations out of training.

Split rule
----------
Two kinds of attribute combination are held out:

* colour-shape pairs :data:`HELDOUT_COLOUR_SHAPE` (8 of the 56 pairs; every colour and every
  shape still occurs in training with other partners);
* motion-shape pairs :data:`HELDOUT_MOTION_SHAPE` (7 of the 28 direction-shape pairs).

``train`` and ``val`` (same distribution, different random streams): no object ever carries a
held-out combination, in any frame (colour changes in videos), before or after an edit, and no
instruction or answer names one (distractor objects in existence questions, generation prompts
and edit commands are drawn from allowed combinations too).

``heldout``: the focus object of every sample (the object the task is about: the referred,
tracked, edited or generated one, or one of the captioned ones) carries at least one held-out
combination; the other objects follow the training rule. A model that generalises
compositionally scores on ``heldout`` as on ``val``.
"""
from __future__ import annotations

import numpy as np

from vitron_jax.data.pixelworld import vocab as V

SPLITS: tuple[str, ...] = ("train", "val", "heldout")
#: split name -> integer used in the random stream of a sample.
SPLIT_CODES: dict[str, int] = {"train": 0, "val": 1, "heldout": 2}

HELDOUT_COLOUR_SHAPE: frozenset[tuple[str, str]] = frozenset({
    ("red", "star"), ("orange", "ring"), ("yellow", "triangle"), ("green", "square"),
    ("cyan", "circle"), ("blue", "cross"), ("purple", "diamond"), ("pink", "triangle"),
})
HELDOUT_MOTION_SHAPE: frozenset[tuple[str, str]] = frozenset({
    ("up", "circle"), ("left", "square"), ("down", "triangle"), ("right", "star"),
    ("left", "ring"), ("up", "diamond"), ("down", "cross"),
})


def check_split(split: str) -> str:
  if split not in SPLIT_CODES:
    raise ValueError(f"unknown PixelWorld split {split!r}; expected one of {list(SPLITS)}")
  return split


def colour_shape_allowed(colour: str, shape: str) -> bool:
  """True when the pair may appear in train/val (and in heldout on non-focus objects)."""
  return (colour, shape) not in HELDOUT_COLOUR_SHAPE


def motion_shape_allowed(motion: str, shape: str) -> bool:
  return (motion, shape) not in HELDOUT_MOTION_SHAPE


def allowed_colours(shape: str) -> list[str]:
  return [c for c in V.COLOUR_NAMES if colour_shape_allowed(c, shape)]


def allowed_directions(shape: str) -> list[str]:
  return [d for d in V.DIRECTIONS if motion_shape_allowed(d, shape)]


def sample_colour_shape(rng: np.random.Generator, *, heldout: bool,
                        exclude: set[tuple[str, str]] = frozenset()) -> tuple[str, str]:
  """A (colour, shape) pair: a held-out one if `heldout`, else an allowed one; not in exclude."""
  if heldout:
    pool = sorted(HELDOUT_COLOUR_SHAPE - set(exclude))
  else:
    pool = [(c, s) for s in V.SHAPES for c in V.COLOUR_NAMES
            if colour_shape_allowed(c, s) and (c, s) not in exclude]
  if not pool:
    raise ValueError("no colour-shape pair left to sample (too many objects in the scene)")
  return pool[int(rng.integers(len(pool)))]


def sample_direction(rng: np.random.Generator, shape: str, *, heldout: bool) -> str:
  """A direction for `shape`: held out with it if `heldout` (None-free: every shape has one)."""
  pool = [d for d in V.DIRECTIONS if motion_shape_allowed(d, shape) != heldout]
  if not pool:
    raise ValueError(f"shape {shape!r} has no {'held-out' if heldout else 'allowed'} direction")
  return pool[int(rng.integers(len(pool)))]


def object_combinations(obj: dict) -> set[tuple[str, str, str]]:
  """Every combination an object dict carries: ("colour_shape", c, s), ("motion_shape", m, s).

  Reads "colour", "colours" (per frame), "colour_after" (edits) and "motion".
  """
  shape = obj["shape"]
  colours = {obj["colour"], *obj.get("colours", ()), *([obj["colour_after"]]
                                                       if obj.get("colour_after") else [])}
  out = {("colour_shape", c, shape) for c in colours}
  if obj.get("motion", "static") in V.DIRECTIONS:
    out.add(("motion_shape", obj["motion"], shape))
  return out


def is_heldout_combination(combo: tuple[str, str, str]) -> bool:
  kind, a, shape = combo
  if kind == "colour_shape":
    return (a, shape) in HELDOUT_COLOUR_SHAPE
  return (a, shape) in HELDOUT_MOTION_SHAPE
