"""Every PixelWorld task: format, invocations, and ground truth that the metrics score perfect."""
import numpy as np
import pytest

from vitron_jax import eval as E
from vitron_jax.data.pixelworld import TASKS, PixelWorld, WorldConfig, task_weights
from vitron_jax.data.pixelworld import splits as S
from vitron_jax.eval import pixels as PX
from vitron_jax.protocol import invocation as I
from vitron_jax.protocol import tokens as T

N = 12
CFG = WorldConfig(image_size=64, num_frames=8)


def _samples(task, split):
  world = PixelWorld(CFG, split=split, seed=11)
  return [world.sample(i, task=task) for i in range(N)]


def _check_format(s, task):
  assert s["subtask"] == task and s["task"] == TASKS[task].cluster
  human, gpt = s["conversations"]
  assert human["from"] == "human" and gpt["from"] == "gpt"
  assert human["value"].count(T.IMAGE) == len(s["images"])
  assert human["value"].count(T.VIDEO) == int("video" in s)
  assert human["value"].count(T.ROI) == len(s["regions"])
  assert human["value"].strip() and gpt["value"].strip()
  for img in s["images"]:
    assert img.dtype == np.uint8 and img.shape == (64, 64, 3)
  if "video" in s:
    assert s["video"].dtype == np.uint8 and s["video"].shape == (8, 64, 64, 3)
  for r in s["regions"]:
    assert r["mask"].dtype == bool and r["mask"].any() and r["box"].shape == (4,)
  nf = 8 if "video" in s or "video" in s["targets"] else 1
  for o in s["objects"]:
    assert o["boxes"].shape == (nf, 4) and o["visible"].shape == (nf,)
  # special tokens only where the protocol allows: user text never carries loc/time/inv tokens
  user_text = human["value"].replace(T.IMAGE, "").replace(T.VIDEO, "").replace(T.ROI, "")
  assert not I.SPECIAL_RE.search(user_text), user_text


def _check_invocation(s):
  truth, gpt = s["truth"], s["conversations"][1]["value"]
  inv = I.find_invocation(gpt)
  if "module" in truth:
    assert isinstance(inv, I.Invocation), (gpt, inv)
    assert inv.module == truth["module"]
    return inv
  assert inv is None, gpt
  return None


def _unique_colour(objects, k):
  return sum(o["colour"] == objects[k]["colour"] for o in objects) == 1


@pytest.mark.parametrize("split", ["train", "heldout"])
@pytest.mark.parametrize("task", sorted(TASKS))
def test_task_ground_truth(task, split):
  for s in _samples(task, split):
    _check_format(s, task)
    inv = _check_invocation(s)
    gpt, truth, objs, tg = s["conversations"][1]["value"], s["truth"], s["objects"], s["targets"]
    f = truth.get("object")
    if task in ("image_qa", "video_qa"):
      assert E.qa_correct(gpt, truth) == 1.0, (gpt, truth)
    elif task in ("image_caption", "video_caption"):
      assert E.caption_scores(gpt, objs)["f1"] == 1.0, gpt
      assert E.caption_scores(gpt, objs)["f1_size"] == 1.0, gpt
    elif task == "region_caption":
      assert E.region_caption_scores(gpt, objs[f])["all"] == 1.0
      np.testing.assert_array_equal(s["regions"][0]["box"], objs[f]["boxes"][0])
    elif task == "grounded_qa":
      gt = np.array([objs[k]["boxes"][0] for k in truth["objects"]]).reshape(-1, 4)
      assert E.grounded_answer_scores(gpt, gt, 64, 64)["f1"] == 1.0, gpt
    elif task == "ref_box":
      sc = E.grounding_scores([gpt], [truth["box"]], 64, 64)
      assert sc["iou"] > 0.97 and sc["acc@0.5"] == 1.0
      np.testing.assert_array_equal(truth["box"], objs[f]["boxes"][0])
    elif task == "video_grounding":
      span = truth["time_span"]
      assert E.temporal_iou(I.find_time_span(gpt), span) == 1.0
      assert E.grounding_scores([gpt], [truth["box"]], 64, 64)["iou"] > 0.97
      vis = np.flatnonzero(objs[f]["visible"])
      assert (vis[0], vis[-1]) == tuple(span)
      np.testing.assert_array_equal(truth["box"], objs[f]["boxes"][span[0]])
    elif task == "ref_seg":
      m = tg["mask"]
      assert m.any() and m.shape == (64, 64)
      assert (s["images"][0][m] == PX.V.COLOURS[objs[f]["colour"]]).all()
      pix = np.array(I.denormalize_box(inv.boxes[0], 64, 64))
      assert E.box_iou(pix, objs[f]["boxes"][0]) > 0.97
    elif task == "video_seg":
      masks = tg["masks"]
      assert masks.shape == (8, 64, 64)
      assert inv.time_span == tuple(truth["time_span"])
      for t in range(8):
        assert (masks[t].sum() > 0) >= tg["visible"][t]
        if masks[t].any():
          ys, xs = np.nonzero(masks[t])
          np.testing.assert_array_equal(tg["boxes"][t], [xs.min(), ys.min(), xs.max() + 1,
                                                         ys.max() + 1])
      assert E.tracking_iou(masks, masks) == 1.0
    elif task == "text_to_image":
      img = tg["image"]
      assert len(tg["phrases"]) == len(objs) == len(tg["boxes"])
      if inv.boxes:
        assert len(inv.boxes) == len(objs)
      for k, o in enumerate(objs):
        assert o["colour"] in tg["phrases"][k] and o["shape"] in tg["phrases"][k]
        assert o["shape"] in inv.command
        assert PX.dominant_colour(img, tg["boxes"][k]) is not None
        if _unique_colour(objs, k):
          assert PX.object_inside_box(img, o["colour"], tg["boxes"][k])
    elif task in ("text_to_video", "image_to_video"):
      video = tg["video"]
      assert video.shape == (8, 64, 64, 3)
      if task == "image_to_video":
        np.testing.assert_array_equal(s["images"][0], video[0])
      for k, o in enumerate(objs):
        clean = (_unique_colour(objs, k) and len(set(o["colours"])) == 1
                 and all(p.get("colours", [p["colour"]])[-1] != o["colour"] for j, p in
                         enumerate(objs) if j != k)
                 and (o["pixels"][o["visible"]] >= 0.9 * o["pixels"].max()).all())
        if clean and o["event"] == "none":
          assert PX.motion_direction(video, o["colour"]) == o["motion"], o
    elif task in ("image_edit", "video_edit"):
      before = s["images"][0] if task == "image_edit" else s["video"]
      after = tg["image"] if task == "image_edit" else tg["video"]
      mask = tg["mask"] if task == "image_edit" else tg["masks"]
      assert E.l1_outside(before, after, mask) == 0.0
      assert (before != after).any()
      assert not (before[~mask] != after[~mask]).any()
      if truth["op"] == "recolour":
        t = None if task == "image_edit" else int(mask.sum(axis=(1, 2)).argmax())
        region = mask if t is None else mask[t]
        frame = after if t is None else after[t]
        assert PX.dominant_colour(frame, region) == truth["colour"]
      if truth["op"] == "add":
        assert PX.dominant_colour(after, truth["box"]) == truth["colour"]
      if task == "image_edit":
        assert len(inv.boxes) == (2 if truth["op"] == "move" else 1)
    if split == "heldout":
      focus = (tg["objects_after"][truth["object_after"]] if truth.get("op") == "add"
               else objs[f])
      assert any(S.is_heldout_combination(c) for c in S.object_combinations(focus)), focus


def test_task_selection():
  assert set(task_weights("image")) == {k for k, v in TASKS.items() if not v.video}
  assert set(task_weights(["editing"])) == {"image_edit", "video_edit"}
  assert task_weights({"ref_box": 1.0, "image_qa": 0.0}) == {"ref_box": 1.0}
  world = PixelWorld(CFG, tasks=["segmentation", "image_caption"])
  assert {world[i]["subtask"] for i in range(40)} == {"ref_seg", "video_seg", "image_caption"}


def test_wording_varies():
  world = PixelWorld(CFG, tasks=["ref_box"])
  questions = {world[i]["conversations"][0]["value"].split("\n")[1].split(" ")[0]
               for i in range(60)}
  assert len(questions) >= 4
  edits = PixelWorld(CFG, tasks=["image_edit"])
  assert {edits[i]["truth"]["op"] for i in range(40)} == {"recolour", "remove", "add", "move"}
  qa = PixelWorld(CFG, tasks=["image_qa"])
  assert {qa[i]["truth"]["qtype"] for i in range(80)} == {
      "colour", "shape", "size", "count", "exist", "relation"}
