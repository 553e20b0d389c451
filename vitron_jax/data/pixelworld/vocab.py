"""PixelWorld's attribute vocabulary: colours, shapes, sizes, backgrounds, motions, positions.

Object colours are saturated; every background is a shade of grey, so a pixel's nearest
palette entry tells object colour from background (the pixel checkers of `vitron_jax.eval`
rely on it).
"""
from __future__ import annotations

import numpy as np

#: object colour name -> RGB.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 130, 20),
    "yellow": (240, 220, 30),
    "green": (30, 170, 50),
    "cyan": (30, 200, 210),
    "blue": (30, 70, 220),
    "purple": (140, 50, 200),
    "pink": (250, 110, 190),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
COLOUR_RGB = np.array([COLOURS[c] for c in COLOUR_NAMES], np.uint8)  # [num_colours, 3]

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "ring", "diamond", "cross")
SHAPE_PLURALS: dict[str, str] = {s: s + ("es" if s.endswith("s") else "s") for s in SHAPES}

#: size name -> (min, max) radius as a fraction of the image size.
SIZES: dict[str, tuple[float, float]] = {
    "small": (0.075, 0.09),
    "medium": (0.115, 0.135),
    "large": (0.165, 0.19),
}
SIZE_NAMES: tuple[str, ...] = tuple(SIZES)

#: plain backgrounds: name -> grey level.
PLAIN_BACKGROUNDS: dict[str, int] = {"black": 20, "gray": 110, "white": 235}
#: textured backgrounds: name -> (grey level a, grey level b) mixed by the texture.
TEXTURED_BACKGROUNDS: dict[str, tuple[int, int]] = {
    "checkered": (60, 100),
    "striped": (150, 190),
    "noisy": (40, 90),
}
BACKGROUNDS: tuple[str, ...] = tuple(PLAIN_BACKGROUNDS) + tuple(TEXTURED_BACKGROUNDS)

#: straight-line directions of motion in videos (image objects are "static").
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")
DIRECTION_VECTORS: dict[str, tuple[int, int]] = {
    "left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
MOTIONS: tuple[str, ...] = DIRECTIONS + ("static",)
PATHS: tuple[str, ...] = ("straight", "curved")
EVENTS: tuple[str, ...] = ("none", "enters", "leaves")

#: 3x3 grid of positions, row-major (top row first).
POSITIONS: tuple[str, ...] = ("top left", "top", "top right", "left", "center", "right",
                              "bottom left", "bottom", "bottom right")
#: a position name in a sentence: "in the top left", "at the top", "on the left", ...
POSITION_PHRASES: dict[str, str] = {
    "top left": "in the top left", "top": "at the top", "top right": "in the top right",
    "left": "on the left", "center": "in the center", "right": "on the right",
    "bottom left": "in the bottom left", "bottom": "at the bottom",
    "bottom right": "in the bottom right",
}
#: relation of A to B: "left" (A left of B), "right", "above", "below".
RELATIONS: tuple[str, ...] = ("left", "right", "above", "below")

NUMBER_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven",
                                 "eight", "nine", "ten")


def position_of(cx: float, cy: float, size: int) -> str:
  """Grid position name of a point (pixels) in a `size` x `size` image."""
  col = min(2, max(0, int(3 * cx / size)))
  row = min(2, max(0, int(3 * cy / size)))
  return POSITIONS[3 * row + col]


def article(word: str) -> str:
  return "an" if word[:1] in "aeiou" else "a"
