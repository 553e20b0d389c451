"""Routing accuracy: does a free-running answer invoke the right backend with the right fields?

Per answer, against the expected invocation (or None for a plain-text answer):

* ``invoked``  an invocation is present exactly when one is expected;
* ``parsed``   the predicted invocation is well formed (1 when none is expected and none given);
* ``module``   same module;
* ``command``  same content words (colours, shapes, sizes, directions, positions) as the
               expected command; ``command_exact`` compares normalised text;
* ``region``   same number of boxes, each IoU > 0.5 in order (an expected empty box, e.g. a
               text -> video layout's object out of view in a frame, is matched by an empty
               one), and the time span (if any) tIoU > 0.5; no region when none is expected;
* ``all``      module, command and region together.

Chance: :data:`ROUTING_CHANCE` (uniform choice among 7 modules and "no invocation").
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from vitron_jax.eval import boxes as B
from vitron_jax.eval import temporal as TM
from vitron_jax.eval import text as TX
from vitron_jax.protocol import invocation as I
from vitron_jax.protocol import tokens as T

ROUTING_CHANCE: dict[str, float] = {"module": 1.0 / (len(T.MODULES) + 1),
                                    "invoked": 0.5}
FIELDS = ("invoked", "parsed", "module", "command", "command_exact", "region", "all")
_POSITION_WORDS = {"top": "top", "bottom": "bottom", "center": "center", "centre": "center",
                   "middle": "center"}


def command_signature(command: str) -> tuple:
  """Content words of a command, order-free: colours, shapes, sizes, directions, positions."""
  return (sorted(TX.colours(command)), sorted(TX.shapes(command)), sorted(TX.sizes(command)),
          sorted(TX.find(command, TX.DIRECTION_WORDS)), sorted(TX.find(command, _POSITION_WORDS)))


def _expected(expected: Any) -> I.Invocation | None:
  if expected is None or isinstance(expected, I.Invocation):
    return expected
  inv = I.find_invocation(expected)
  if isinstance(inv, I.InvocationError):
    raise ValueError(f"expected answer holds a malformed invocation ({inv.kind}: "
                     f"{inv.message}): {expected!r}")
  return inv


def _empty(box: I.Box) -> bool:
  return box[2] <= box[0] or box[3] <= box[1]


def box_match(pred: I.Box, exp: I.Box) -> bool:
  """IoU > 0.5, or both empty (zero area: where a layout says an object is not in view)."""
  if _empty(exp):
    return _empty(pred)
  return float(B.box_iou(pred, exp)) > B.IOU_THRESHOLD


def region_match(pred: I.Invocation, exp: I.Invocation) -> bool:
  if len(pred.boxes) != len(exp.boxes):
    return False
  if not all(box_match(p, e) for p, e in zip(pred.boxes, exp.boxes)):
    return False
  if exp.time_span is None:
    return pred.time_span is None
  return TM.temporal_iou(pred.time_span, exp.time_span) > 0.5


def routing_scores(prediction: Any, expected: Any) -> dict[str, float]:
  """Scores (0/1 each, keys `FIELDS`) of one predicted answer.

  expected: the ground-truth answer text, an Invocation, or None (no backend call expected).
  """
  exp = _expected(expected)
  got = I.find_invocation(prediction) if isinstance(prediction, str) else I.InvocationError(
      "not_text", "prediction is not a string")
  if exp is None:
    ok = float(got is None)
    return {k: ok for k in FIELDS}
  out = dict.fromkeys(FIELDS, 0.0)
  out["invoked"] = float(got is not None and not (isinstance(got, I.InvocationError)
                                                  and got.kind == "not_text"))
  if not isinstance(got, I.Invocation):
    return out
  out["parsed"] = 1.0
  out["module"] = float(got.module == exp.module)
  out["command"] = float(command_signature(got.command) == command_signature(exp.command))
  out["command_exact"] = float(" ".join(got.command.lower().split())
                               == " ".join(exp.command.lower().split()))
  out["region"] = float(region_match(got, exp))
  out["all"] = float(out["module"] and out["command"] and out["region"])
  return out


#: a planned object that moves at most this far (normalised, on both axes) stays still
STILL = 0.05
#: the motion classes of a plan's object: still or its main direction
MOVES = ("still", "left", "right", "up", "down")


def move_of(first: I.Box, last: I.Box) -> str:
  """The class (`MOVES`) of an object's planned move from its first box to its last."""
  d = (np.asarray(last, np.float64)[:2] + np.asarray(last, np.float64)[2:]
       - np.asarray(first, np.float64)[:2] - np.asarray(first, np.float64)[2:]) / 2
  if np.abs(d).max() <= STILL:
    return "still"
  if abs(d[0]) >= abs(d[1]):
    return "right" if d[0] > 0 else "left"
  return "down" if d[1] > 0 else "up"


def _visible_span(boxes) -> tuple[I.Box, I.Box] | None:
  """An object's first and last box among the frames where it is in view (non-empty)."""
  seen = [b for b in boxes if not _empty(b)]
  return (seen[0], seen[-1]) if len(seen) >= 2 else None


def plan_moves(prediction: Any, expected: Any, num_frames: int) -> float | None:
  """Of the objects an expected clip layout plans (object-major boxes: object 0 in frames
  0..T-1, then object 1 ...) and shows in two frames or more, the fraction whose predicted plan
  moves them the same way (`move_of` from the first frame in view to the last: still, or the
  main direction). A prediction that does not parse, or plans fewer objects or frames in view,
  scores the missing ones wrong. None when no expected object is in view twice. Chance:
  1 / len(MOVES)."""
  exp = _expected(expected)
  if exp is None or not exp.boxes or len(exp.boxes) % num_frames:
    raise ValueError(f"expected answer plans no clip of {num_frames} frames: {expected!r}")
  got = I.find_invocation(prediction) if isinstance(prediction, str) else None
  pred = list(got.boxes) if isinstance(got, I.Invocation) else []
  right = scored = 0
  for k in range(len(exp.boxes) // num_frames):
    frames = slice(k * num_frames, (k + 1) * num_frames)
    want = _visible_span(exp.boxes[frames])
    if want is None:
      continue
    scored += 1
    have = _visible_span(pred[frames])
    right += have is not None and move_of(*have) == move_of(*want)
  return right / scored if scored else None


def routing_accuracy(predictions: Sequence[Any], expected: Sequence[Any]) -> dict[str, float]:
  """Mean of `routing_scores` over a data set."""
  if len(predictions) != len(expected):
    raise ValueError(f"{len(predictions)} predictions for {len(expected)} expected answers")
  rows = [routing_scores(p, e) for p, e in zip(predictions, expected)]
  return {k: float(np.mean([r[k] for r in rows])) if rows else 0.0 for k in FIELDS}
