"""Understanding tasks: image / video captioning, image / video QA, regional captioning,
grounding-aware QA. Answers are plain text (boxes as location tokens)."""
from __future__ import annotations

from vitron_jax.data.pixelworld import context as CX
from vitron_jax.data.pixelworld import sample as SP
from vitron_jax.data.pixelworld import scene as SC
from vitron_jax.data.pixelworld import splits as S
from vitron_jax.data.pixelworld import templates as W
from vitron_jax.data.pixelworld import vocab as V
from vitron_jax.protocol import tokens as T


class NotApplicable(Exception):
  """This variant of a task does not fit the sampled scene; the caller draws another."""


def image_caption(ctx: CX.Ctx) -> dict:
  rng = ctx.rng
  scene, r = ctx.image_scene()
  items = []
  for k in rng.permutation(len(scene.objects)):
    o = scene.objects[k]
    items.append(W.noun_phrase(o) + (" " + W.positioned(o, scene.size)
                                      if rng.random() < 0.4 else ""))
  answer = W.cap(W.pick(rng, W.CAPTION_A).format(objs=W.join(items),
                                                  bg=W.background_phrase(scene)))
  return dict(human=f"{T.IMAGE}\n{W.pick(rng, W.CAPTION_Q)}", gpt=answer, images=[r.frames[0]],
              objects=SP.object_records(scene, r),
              truth={"objects": list(range(len(scene.objects))), "object": scene.focus})


def _qa_attribute(ctx, scene, attr: str) -> tuple[str, str, str]:
  rng, f = ctx.rng, scene.focus
  ref = W.refer(scene, f, rng, avoid=(attr,))
  if ref is None:
    raise NotApplicable(attr)
  ref = ref[0]
  value = getattr(scene.objects[f], attr)
  q_t, a_t = {"colour": (W.COLOUR_Q, W.COLOUR_A), "shape": (W.SHAPE_Q, W.SHAPE_A),
              "size": (W.SIZE_Q, W.SIZE_A)}[attr]
  q = W.pick(rng, q_t).format(ref=ref)
  a = W.pick(rng, a_t).format(Ref=W.cap(ref), **{attr: value, attr.capitalize(): W.cap(value)})
  return q, a, value


def _qa_count(ctx, scene) -> tuple[str, str, str]:
  rng, objs = ctx.rng, scene.objects
  focus = objs[scene.focus]
  kind = rng.integers(4) if not ctx.heldout else rng.integers(2)
  if kind == 0:
    shape = focus.shape
  elif kind == 1:
    colour = focus.colour
  elif kind == 2:
    shape = V.SHAPES[int(rng.integers(len(V.SHAPES)))]
  if kind in (0, 2):
    n = sum(o.shape == shape for o in objs)
    what = V.SHAPE_PLURALS[shape]
  elif kind == 1:
    n = sum(o.colour == colour for o in objs)
    what = f"{colour} objects"
  else:
    n, what = len(objs), W.pick(rng, ("objects", "shapes"))
  q = W.pick(rng, W.COUNT_Q).format(what=what)
  a = W.pick(rng, W.COUNT_A).format(n=W.number(rng, n))
  if n == 1:
    a = a.replace("There are", "There is")
  return q, W.cap(a), str(n)


def _qa_exist(ctx, scene) -> tuple[str, str, str]:
  rng = ctx.rng
  present = {(o.colour, o.shape) for o in scene.objects}
  if rng.random() < 0.5:
    colour, shape = scene.objects[scene.focus].colour, scene.objects[scene.focus].shape
    answer = "yes"
  else:
    colour, shape = S.sample_colour_shape(rng, heldout=ctx.heldout, exclude=present)
    answer = "no"
  np_ = f"{V.article(colour)} {colour} {shape}"
  q = W.pick(rng, W.EXIST_Q).format(np=np_)
  return q, W.pick(rng, W.YES_A if answer == "yes" else W.NO_A), answer


def _qa_relation(ctx, scene, r: SC.Rendered) -> tuple[str, str, str]:
  rng, f = ctx.rng, scene.focus
  centres = [SC.centroid(r.ids[0] == k) for k in range(len(scene.objects))]
  others = [k for k in rng.permutation(len(scene.objects)) if k != f
            and SC.relation(centres[f], centres[k], scene.size) is not None]
  if not others:
    raise NotApplicable("relation")
  b = int(others[0])
  rel = SC.relation(centres[f], centres[b], scene.size)
  ref_a, ref_b = W.refer(scene, f, rng)[0], W.refer(scene, b, rng)[0]
  q = W.pick(rng, W.RELATION_Q).format(a=ref_a, b=ref_b)
  a = W.pick(rng, W.RELATION_A[rel]).format(A=W.cap(ref_a), b=ref_b)
  return q, a, rel


QA_TYPES = ("colour", "shape", "size", "count", "exist", "relation")


def image_qa(ctx: CX.Ctx) -> dict:
  rng = ctx.rng
  scene, r = ctx.image_scene()
  for qtype in rng.permutation(QA_TYPES):
    try:
      if qtype in ("colour", "shape", "size"):
        q, a, ans = _qa_attribute(ctx, scene, str(qtype))
      elif qtype == "count":
        q, a, ans = _qa_count(ctx, scene)
      elif qtype == "exist":
        q, a, ans = _qa_exist(ctx, scene)
      else:
        q, a, ans = _qa_relation(ctx, scene, r)
      break
    except NotApplicable:
      continue
  return dict(human=f"{T.IMAGE}\n{q}", gpt=a, images=[r.frames[0]],
              objects=SP.object_records(scene, r),
              truth={"qtype": str(qtype), "answer": ans, "object": scene.focus})


def region_caption(ctx: CX.Ctx) -> dict:
  rng = ctx.rng
  scene, r = ctx.image_scene()
  f = scene.focus
  kind = "mask" if rng.random() < 0.5 else "box"
  reg = SP.region(r.mask(f)[0], r.boxes[f, 0], kind)
  np_ = W.noun_phrase(scene.objects[f])
  q = W.pick(rng, W.REGION_Q).format(roi=T.ROI)
  a = W.pick(rng, W.REGION_A).format(Np=W.cap(np_), np=np_)
  return dict(human=f"{T.IMAGE}\n{q}", gpt=a, images=[r.frames[0]], regions=[reg],
              objects=SP.object_records(scene, r), truth={"object": f})


def grounded_qa(ctx: CX.Ctx) -> dict:
  rng = ctx.rng
  scene, r = ctx.image_scene()
  objs, f = scene.objects, scene.focus
  mode = rng.integers(3) if not ctx.heldout else 1 + rng.integers(2)
  if mode == 0:
    ks = [int(k) for k in rng.permutation(len(objs))]
    q = W.pick(rng, W.GROUNDED_ALL_Q)
    what = "objects"
  else:
    if mode == 1:
      shape = objs[f].shape
    else:
      shape = V.SHAPES[int(rng.integers(len(V.SHAPES)))]
    ks = [k for k in range(len(objs)) if objs[k].shape == shape]
    what = V.SHAPE_PLURALS[shape]
    q = W.pick(rng, W.GROUNDED_FIND_Q).format(what=what, one=shape)
  if ks:
    a = W.cap(W.join([f"{W.noun_phrase(objs[k])} {SP.loc(r.boxes[k, 0], scene.size)}"
                      for k in ks])) + "."
  else:
    a = W.pick(rng, W.GROUNDED_NONE_A).format(what=what)
  return dict(human=f"{T.IMAGE}\n{q}", gpt=a, images=[r.frames[0]],
              objects=SP.object_records(scene, r), truth={"objects": ks, "object": f})


def video_caption(ctx: CX.Ctx) -> dict:
  rng = ctx.rng
  scene, r = ctx.video_scene()
  items = [f"{W.noun_phrase(scene.objects[k])} {W.motion_phrase(scene.objects[k])}"
           for k in rng.permutation(len(scene.objects))]
  answer = W.cap(W.pick(rng, W.CAPTION_A).format(objs=W.join(items),
                                                  bg=W.background_phrase(scene)))
  return dict(human=f"{T.VIDEO}\n{W.pick(rng, W.VIDEO_CAPTION_Q)}", gpt=answer, video=r.frames,
              objects=SP.object_records(scene, r),
              truth={"objects": list(range(len(scene.objects))), "object": scene.focus})


def video_qa(ctx: CX.Ctx) -> dict:
  rng = ctx.rng
  scene, r = ctx.video_scene()
  f = scene.focus
  o = scene.objects[f]
  ref = W.refer(scene, f, rng)[0]
  options = ["motion", "changes"] + (["change"] if o.change_frame >= 0 else []) + ["event"]
  qtype = options[int(rng.integers(len(options)))]
  if qtype == "motion":
    q = W.pick(rng, W.MOTION_Q).format(ref=ref)
    ans = o.motion
    a = ("It does not move." if ans == "static"
         else W.pick(rng, ("{M}.", "It moves {m}.", "{Ref} moves {m}.")).format(
             M=W.cap(ans), m=ans, Ref=W.cap(ref)))
  elif qtype == "change":
    ref = W.refer(scene, f, rng, avoid=("colour",)) or W.refer(scene, f, rng)
    q = W.pick(rng, W.CHANGE_Q).format(ref=ref[0])
    ans = o.final_colour
    a = W.pick(rng, ("{C}.", "It turns {c}.", "It becomes {c}.")).format(C=W.cap(ans), c=ans)
  elif qtype == "changes":
    q = W.pick(rng, W.CHANGES_YN_Q).format(ref=ref)
    ans = "yes" if o.change_frame >= 0 else "no"
    a = (f"Yes, it turns {o.final_colour}." if ans == "yes" else "No.")
  else:
    event = o.event if o.event != "none" else ("enters", "leaves")[int(rng.integers(2))]
    q = W.pick(rng, W.EVENT_Q[event]).format(ref=ref)
    ans = "yes" if o.event == event else "no"
    a = W.pick(rng, ("Yes.", "Yes, it does.") if ans == "yes" else ("No.", "No, it does not."))
  return dict(human=f"{T.VIDEO}\n{q}", gpt=a, video=r.frames,
              objects=SP.object_records(scene, r),
              truth={"qtype": qtype, "answer": ans, "object": f})
