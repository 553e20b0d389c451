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


def routing_accuracy(predictions: Sequence[Any], expected: Sequence[Any]) -> dict[str, float]:
  """Mean of `routing_scores` over a data set."""
  if len(predictions) != len(expected):
    raise ValueError(f"{len(predictions)} predictions for {len(expected)} expected answers")
  rows = [routing_scores(p, e) for p, e in zip(predictions, expected)]
  return {k: float(np.mean([r[k] for r in rows])) if rows else 0.0 for k in FIELDS}
