"""Attribute accuracy of free-text answers: QA, captions, regional captions.

Each scorer is a pure function of (prediction text, ground truth) returning numbers in [0, 1];
a prediction without the asked attribute, or naming several different values, scores 0.

Chance levels (uniform guessing over the answer options) are in :data:`QA_CHANCE`;
`caption_chance` gives the expected caption F1 of naming one random (colour, shape) pair.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from vitron_jax.data.pixelworld import vocab as V
from vitron_jax.eval import text as TX

#: qtype -> chance accuracy of a uniform guess among its answers (count: 0..4 objects).
QA_CHANCE: dict[str, float] = {
    "colour": 1 / len(V.COLOUR_NAMES), "shape": 1 / len(V.SHAPES), "size": 1 / len(V.SIZES),
    "count": 1 / 5, "exist": 1 / 2, "relation": 1 / len(V.RELATIONS),
    "motion": 1 / len(V.MOTIONS), "change": 1 / (len(V.COLOUR_NAMES) - 1), "changes": 1 / 2,
    "event": 1 / 2,
}


def count_chance(max_objects: int) -> float:
  """Chance of a count answer among 0..max_objects."""
  return 1.0 / (max_objects + 1)


def _single(values: Sequence[str], answer: str) -> float:
  return float(set(values) == {answer})


def qa_correct(prediction: Any, truth: Mapping[str, Any]) -> float:
  """1.0 when the free-text prediction answers `truth` ({"qtype", "answer"}) correctly."""
  qtype, answer = truth["qtype"], str(truth["answer"])
  if qtype == "colour":
    return _single(TX.colours(prediction), answer)
  if qtype == "shape":
    return _single(TX.shapes(prediction), answer)
  if qtype == "size":
    return _single(TX.sizes(prediction), answer)
  if qtype == "count":
    n = TX.first_number(prediction)
    return float(n is not None and str(n) == answer)
  if qtype in ("exist", "changes", "event"):
    return float(TX.yes_no(prediction) == answer)
  if qtype == "relation":
    return _single(TX.relations(prediction), answer)
  if qtype == "motion":
    return _single(TX.directions(prediction), answer)
  if qtype == "change":  # "it turns from red to blue": the last colour named is the new one
    found = TX.colours(prediction)
    return float(bool(found) and found[-1] == answer)
  raise ValueError(f"unknown QA type {qtype!r}; expected one of {sorted(QA_CHANCE)}")


def qa_accuracy(predictions: Sequence[Any], truths: Sequence[Mapping[str, Any]]
                ) -> dict[str, float]:
  """Mean accuracy overall ("all") and per qtype."""
  if len(predictions) != len(truths):
    raise ValueError(f"{len(predictions)} predictions for {len(truths)} ground truths")
  per: dict[str, list[float]] = {}
  for p, t in zip(predictions, truths):
    per.setdefault(t["qtype"], []).append(qa_correct(p, t))
  out = {k: sum(v) / len(v) for k, v in sorted(per.items())}
  allv = [x for v in per.values() for x in v]
  out["all"] = sum(allv) / len(allv) if allv else 0.0
  return out


def caption_scores(prediction: Any, objects: Sequence[Mapping[str, Any]]) -> dict[str, float]:
  """Precision / recall / F1 of the (colour, shape) pairs a caption names vs the scene's,
  and the same over (size, colour, shape) triples ("f1_size")."""
  gt = {(o["colour"], o["shape"]) for o in objects}
  gt3 = {(o["size"], o["colour"], o["shape"]) for o in objects}
  found = TX.mentions(prediction)
  pred = {(m["colour"], m["shape"]) for m in found if "colour" in m}
  pred3 = {(m["size"], m["colour"], m["shape"]) for m in found if "colour" in m and "size" in m}

  def prf(p: set, g: set) -> tuple[float, float, float]:
    if not p and not g:
      return 1.0, 1.0, 1.0
    tp = len(p & g)
    prec = tp / len(p) if p else 0.0
    rec = tp / len(g) if g else 0.0
    return prec, rec, (2 * prec * rec / (prec + rec) if tp else 0.0)

  prec, rec, f1 = prf(pred, gt)
  return {"precision": prec, "recall": rec, "f1": f1, "f1_size": prf(pred3, gt3)[2]}


def caption_chance(objects: Sequence[Mapping[str, Any]]) -> float:
  """Expected F1 of a caption naming one uniformly random (colour, shape) pair."""
  k = len({(o["colour"], o["shape"]) for o in objects})
  n = len(V.COLOUR_NAMES) * len(V.SHAPES)
  return (k / n) * 2.0 / (k + 1) if k else 0.0


def region_caption_scores(prediction: Any, obj: Mapping[str, Any]) -> dict[str, float]:
  """Accuracy of colour, shape and size named for one region, and all three together."""
  out = {"colour": _single(TX.colours(prediction), obj["colour"]),
         "shape": _single(TX.shapes(prediction), obj["shape"]),
         "size": _single(TX.sizes(prediction), obj["size"])}
  out["all"] = float(all(v == 1.0 for v in out.values()))
  return out


REGION_CHANCE: dict[str, float] = {"colour": QA_CHANCE["colour"], "shape": QA_CHANCE["shape"],
                                   "size": QA_CHANCE["size"],
                                   "all": QA_CHANCE["colour"] * QA_CHANCE["shape"]
                                   * QA_CHANCE["size"]}
