"""Score free-running answers to PixelWorld samples, per subtask, against chance.

    scores, chance = score_answer(sample, answer_text, max_objects=3)
    table = summarize([(sample["subtask"], scores, chance), ...])

Each subtask has a *primary* metric (`PRIMARY`): the number its table row shows and that must
beat the chance level of the same samples. The text side of every task is scored here (QA and
caption attributes, boxes and time spans in the answer, the invocation's module / command /
region for backend tasks); what a backend makes of an invocation (masks, pictures, videos) is
scored by the backend evaluation.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np

from vitron_jax.eval import attributes as A
from vitron_jax.eval import boxes as B
from vitron_jax.eval import routing as R
from vitron_jax.eval import temporal as TM
from vitron_jax.protocol import invocation as I

# subtask -> primary metric name
PRIMARY: dict[str, str] = {
    "image_caption": "caption_f1", "video_caption": "caption_f1",
    "image_qa": "qa_accuracy", "video_qa": "qa_accuracy",
    "region_caption": "region_attributes", "grounded_qa": "box_f1",
    "ref_box": "box_iou", "video_grounding": "box_iou",
    "ref_seg": "routing", "video_seg": "routing", "text_to_image": "routing",
    "text_to_video": "routing", "image_to_video": "routing", "image_edit": "routing",
    "video_edit": "routing",
}
BACKEND_SUBTASKS = tuple(k for k, v in PRIMARY.items() if v == "routing")
#: subtasks whose invocation plans a clip (every object's box in every frame): their rows also
#: score `plan_moves` (`routing.plan_moves`; chance 1 / 5)
PLANNED = ("text_to_video", "image_to_video")
#: rows scoring what an attached backend made of the answers (`train.vitron_backends`):
#: row name -> its primary metric
OUTPUT_ROWS: dict[str, str] = {"ref_seg_masks": "mask_iou", "video_seg_masks": "tracking_iou",
                               "t2i_images": "colour_right", "edit_images": "edit_right",
                               "t2v_videos": "direction_right",
                               "i2v_videos": "direction_right",
                               "video_edit_videos": "edit_right"}


def primary_metric(row: str) -> str:
  """The primary metric of a table row (a subtask or an `OUTPUT_ROWS` row)."""
  if row in PRIMARY:
    return PRIMARY[row]
  if row in OUTPUT_ROWS:
    return OUTPUT_ROWS[row]
  raise KeyError(f"table row {row!r} is neither a scored subtask {sorted(PRIMARY)} nor a "
                 f"backend output row {sorted(OUTPUT_ROWS)}")


def _size(sample: Mapping[str, Any]) -> tuple[int, int]:
  if sample.get("images"):
    h, w = np.shape(sample["images"][0])[:2]
  elif "video" in sample:
    h, w = np.shape(sample["video"])[1:3]
  else:
    ref = sample["targets"].get("image", sample["targets"].get("video"))
    h, w = np.shape(ref)[-3:-1]
  return int(h), int(w)


def _expected_answer(sample: Mapping[str, Any]) -> str:
  return sample["conversations"][1]["value"]


def score_answer(sample: Mapping[str, Any], answer: str, *, max_objects: int
                 ) -> tuple[dict[str, float], dict[str, float]]:
  """(scores, chance levels) of one answer; both hold the subtask's primary metric."""
  sub = sample["subtask"]
  truth, objects = sample["truth"], sample["objects"]
  if sub not in PRIMARY:
    raise ValueError(f"no scorer for subtask {sub!r}; known: {sorted(PRIMARY)}")
  h, w = _size(sample)
  if sub in ("image_caption", "video_caption"):
    shown = [objects[k] for k in truth.get("objects", range(len(objects)))]
    s = A.caption_scores(answer, shown)
    return {"caption_f1": s["f1"], "caption_f1_size": s["f1_size"]}, {
        "caption_f1": A.caption_chance(shown)}
  if sub in ("image_qa", "video_qa"):
    qtype = truth["qtype"]
    chance = A.count_chance(max_objects) if qtype == "count" else A.QA_CHANCE[qtype]
    return {"qa_accuracy": A.qa_correct(answer, truth)}, {"qa_accuracy": chance}
  if sub == "region_caption":
    s = A.region_caption_scores(answer, objects[truth["object"]])
    return {"region_attributes": (s["colour"] + s["shape"] + s["size"]) / 3.0,
            "region_all": s["all"]}, {
        "region_attributes": (A.REGION_CHANCE["colour"] + A.REGION_CHANCE["shape"]
                              + A.REGION_CHANCE["size"]) / 3.0}
  if sub == "grounded_qa":
    gt = np.array([objects[k]["boxes"][0] for k in truth["objects"]], np.float64).reshape(-1, 4)
    s = B.grounded_answer_scores(answer, gt, w, h)
    # no object to ground: right iff the answer has no box (a uniform guess: box or not, 1/2)
    chance = B.box_chance(gt, w, h)["acc@0.5"] if len(gt) else 0.5
    return {"box_f1": s["f1"]}, {"box_f1": chance}
  if sub in ("ref_box", "video_grounding"):
    gt = np.asarray(truth["box"], np.float64)[None]
    s = B.grounding_scores([answer], gt, w, h)
    c = B.box_chance(gt, w, h)
    scores = {"box_iou": s["iou"], "box_acc@0.5": s["acc@0.5"]}
    chance = {"box_iou": c["iou"]}
    if sub == "video_grounding":
      scores["time_iou"] = TM.temporal_iou(I.find_time_span(answer), truth["time_span"])
    return scores, chance
  s = R.routing_scores(answer, _expected_answer(sample))
  scores = {"routing": s["module"], "invocation_all": s["all"], "command": s["command"],
            "region": s["region"]}
  if sub in PLANNED:  # the clip's layout the LLM planned: does each object move as asked?
    moves = R.plan_moves(answer, _expected_answer(sample), len(sample["targets"]["boxes"]))
    if moves is not None:
      scores["plan_moves"] = moves
  return scores, {"routing": R.ROUTING_CHANCE["module"]}


def summarize(rows: Iterable[tuple[str, Mapping[str, float], Mapping[str, float]]]
              ) -> dict[str, dict[str, float]]:
  """Per subtask: the mean of every score, `chance` (mean chance of the primary metric),
  `primary` (its mean), `n` and `beats_chance` (1.0 / 0.0)."""
  acc: dict[str, dict[str, list[float]]] = {}
  for sub, scores, chance in rows:
    d = acc.setdefault(sub, {})
    for k, v in scores.items():
      d.setdefault(k, []).append(float(v))
    d.setdefault("chance", []).append(float(chance[primary_metric(sub)]))
  out = {}
  for sub, d in sorted(acc.items()):
    row = {k: float(np.mean(v)) for k, v in d.items()}
    row["primary"] = row[primary_metric(sub)]
    row["n"] = float(len(d["chance"]))
    row["beats_chance"] = float(row["primary"] > row["chance"])
    out[sub] = row
  return out
