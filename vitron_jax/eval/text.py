"""Attribute words parsed from free text (model answers), never raising.

Text is lower-cased, protocol tokens (``<loc0001>``, ``<inv>`` …) are dropped, words are split
on non-letters/digits; synonyms map to PixelWorld's canonical values (`vocab`).
"""
from __future__ import annotations

import re
from typing import Any

from vitron_jax.data.pixelworld import vocab as V

COLOUR_WORDS: dict[str, str] = {c: c for c in V.COLOUR_NAMES} | {"violet": "purple",
                                                                "magenta": "pink"}
SHAPE_WORDS: dict[str, str] = ({s: s for s in V.SHAPES} | {p: s for s, p in V.SHAPE_PLURALS.items()}
                               | {"disc": "circle", "disk": "circle", "rhombus": "diamond",
                                  "diamonds": "diamond", "plus": "cross", "donut": "ring",
                                  "annulus": "ring", "rings": "ring", "crosses": "cross"})
SIZE_WORDS: dict[str, str] = {"small": "small", "little": "small", "tiny": "small",
                              "medium": "medium", "large": "large", "big": "large"}
NUMBER_WORDS: dict[str, int] = {w: i for i, w in enumerate(V.NUMBER_WORDS)} | {"no": 0,
                                                                             "none": 0}
YES_NO: dict[str, str] = {"yes": "yes", "yeah": "yes", "yep": "yes", "no": "no", "nope": "no"}
RELATION_WORDS: dict[str, str] = {"left": "left", "right": "right", "above": "above",
                                  "over": "above", "below": "below", "under": "below",
                                  "beneath": "below"}
DIRECTION_WORDS: dict[str, str] = {"left": "left", "leftward": "left", "leftwards": "left",
                                   "right": "right", "rightward": "right",
                                   "rightwards": "right", "up": "up", "upward": "up",
                                   "upwards": "up", "down": "down", "downward": "down",
                                   "downwards": "down", "still": "static", "static": "static",
                                   "stationary": "static"}
_STATIC_PHRASES = re.compile(r"\b(?:does not|doesn't|do not|don't|did not|never) (?:move|moves)\b")
_TOKEN = re.compile(r"<[^<>]{1,20}>")
_WORD = re.compile(r"[a-z]+|\d+")


def words(text: Any) -> list[str]:
  """Lower-case words and digit runs of a text; [] for anything that is not a string."""
  if not isinstance(text, str):
    return []
  return _WORD.findall(_TOKEN.sub(" ", text.lower()))


def find(text: Any, vocab: dict[str, str]) -> list[str]:
  """Canonical values of every vocabulary word in the text, in order (repeats kept)."""
  return [vocab[w] for w in words(text) if w in vocab]


def colours(text: Any) -> list[str]:
  return find(text, COLOUR_WORDS)


def shapes(text: Any) -> list[str]:
  return find(text, SHAPE_WORDS)


def sizes(text: Any) -> list[str]:
  return find(text, SIZE_WORDS)


def relations(text: Any) -> list[str]:
  return find(text, RELATION_WORDS)


def directions(text: Any) -> list[str]:
  """Directions of motion, with "does not move" etc. read as "static"."""
  if not isinstance(text, str):
    return []
  found = find(text, DIRECTION_WORDS)
  if _STATIC_PHRASES.search(text.lower()):
    found.append("static")
  return found


def first_number(text: Any) -> int | None:
  """First number in the text: digits, a number word zero..ten, or "no"/"none" (= 0)."""
  for w in words(text):
    if w.isdigit():
      return int(w) if len(w) < 7 else None
    if w in NUMBER_WORDS:
      return NUMBER_WORDS[w]
  return None


def yes_no(text: Any) -> str | None:
  """The first yes/no word of the text, or None."""
  found = find(text, YES_NO)
  return found[0] if found else None


def mentions(text: Any) -> list[dict[str, str]]:
  """Object mentions: every shape word with the colour / size words just before it.

  "a large red circle and a blue star" -> [{"size": "large", "colour": "red", "shape":
  "circle"}, {"colour": "blue", "shape": "star"}]. Attribute words are taken from the (at most
  three) words since the previous shape word.
  """
  out = []
  ws = words(text)
  last = -1
  for i, w in enumerate(ws):
    if w in SHAPE_WORDS:
      m = {"shape": SHAPE_WORDS[w]}
      for v in ws[max(last + 1, i - 3):i]:
        if v in COLOUR_WORDS:
          m["colour"] = COLOUR_WORDS[v]
        elif v in SIZE_WORDS:
          m["size"] = SIZE_WORDS[v]
      out.append(m)
      last = i
  return out


def colour_shape_pairs(text: Any) -> set[tuple[str, str]]:
  """(colour, shape) of every mention that names both."""
  return {(m["colour"], m["shape"]) for m in mentions(text) if "colour" in m}
