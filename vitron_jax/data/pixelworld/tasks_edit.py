"""Editing tasks: image editing (recolour, remove, add, move) and video recolouring.

`targets["mask"]` (image) / `targets["masks"]` (video) mark every pixel the edit may change:
the union of the edited object's visible masks before and after. Outside it, `image` equals
`source_image` exactly.
"""
from __future__ import annotations

import numpy as np

from vitron_jax.data.pixelworld import context as CX
from vitron_jax.data.pixelworld import sample as SP
from vitron_jax.data.pixelworld import scene as SC
from vitron_jax.data.pixelworld import splits as S
from vitron_jax.data.pixelworld import templates as W
from vitron_jax.data.pixelworld import vocab as V
from vitron_jax.protocol import invocation as I
from vitron_jax.protocol import tokens as T

EDIT_OPS = ("recolour", "remove", "add", "move")


def _new_colour(rng, scene: SC.Scene, k: int) -> str | None:
  o = scene.objects[k]
  used = {p for j, other in enumerate(scene.objects) if j != k for p in other.pairs()}
  options = [c for c in S.allowed_colours(o.shape) if c not in o.colours
             and (c, o.shape) not in used]
  return options[int(rng.integers(len(options)))] if options else None


def _fits(scene: SC.Scene) -> bool:
  """True when every object keeps MIN_VISIBLE_FRACTION visible (image scenes)."""
  canvas = SC.Canvas(scene.size)
  return all(canvas.try_add(o.shape, o.centres[0, 0], o.centres[0, 1], o.radius)
             for o in scene.objects)


def _recolour(ctx, scene):
  f = scene.focus
  new = _new_colour(ctx.rng, scene, f)
  if new is None:
    return None
  ref = W.refer(scene, f, ctx.rng)[0]
  after = scene.copy()
  after.objects[f].colours = (new,)
  q = W.pick(ctx.rng, W.RECOLOUR_Q).format(ref=ref, colour=new)
  return after, q, f"make {ref} {new}", [f], f, {"op": "recolour", "colour": new}, []


def _remove(ctx, scene):
  f = scene.focus
  ref = W.refer(scene, f, ctx.rng)[0]
  after = scene.copy()
  del after.objects[f]
  q = W.pick(ctx.rng, W.REMOVE_Q).format(ref=ref)
  return after, q, f"remove {ref}", [f], None, {"op": "remove"}, []


def _add(ctx, scene):
  rng, size = ctx.rng, scene.size
  used = {p for o in scene.objects for p in o.pairs()}
  colour, shape = S.sample_colour_shape(rng, heldout=ctx.heldout, exclude=used)
  size_name = V.SIZE_NAMES[int(rng.integers(len(V.SIZE_NAMES)))]
  radius = SC.sample_radius(rng, size_name, size)
  for _ in range(30):
    cx, cy = SC.random_centre(rng, radius, size)
    after = scene.copy()
    after.objects.append(SC.Obj(shape, size_name, radius, np.array([[cx, cy]]), (colour,)))
    if _fits(after):
      break
  else:
    return None
  new = after.objects[-1]
  np_ = W.noun_phrase(new)
  regions = []
  if rng.random() < 0.3:
    y0, x0, m = SC.R.shape_window(shape, cx, cy, radius, size)
    full = np.zeros((size, size), bool)
    full[y0:y0 + m.shape[0], x0:x0 + m.shape[1]] = m
    regions = [SP.region(full, SC.R.tight_box(full), "box")]
    q = W.pick(rng, W.ADD_Q).format(np=np_, where=f"in {T.ROI}")
    command = f"add {np_}"
  else:
    where = W.positioned(new, size)
    q = W.pick(rng, W.ADD_Q).format(np=np_, where=where)
    command = f"add {np_} {where}"
  after.focus = len(after.objects) - 1
  return after, q, command, [], after.focus, {"op": "add", "colour": colour, "shape": shape,
                                               "size": size_name}, regions


def _move(ctx, scene):
  rng, size, f = ctx.rng, scene.size, scene.focus
  o = scene.objects[f]
  here = V.position_of(o.centres[0, 0], o.centres[0, 1], size)
  for _ in range(30):
    cx, cy = SC.random_centre(rng, o.radius, size)
    there = V.position_of(cx, cy, size)
    if there == here:
      continue
    after = scene.copy()
    after.objects[f].centres = np.array([[cx, cy]])
    if _fits(after):
      break
  else:
    return None
  ref = W.refer(scene, f, rng)[0]
  regions = []
  if rng.random() < 0.3:
    y0, x0, m = SC.R.shape_window(o.shape, cx, cy, o.radius, size)
    full = np.zeros((size, size), bool)
    full[y0:y0 + m.shape[0], x0:x0 + m.shape[1]] = m
    regions = [SP.region(full, SC.R.tight_box(full), "box")]
    q = W.pick(rng, W.MOVE_Q).format(ref=ref, where=f"to {T.ROI}")
    command = f"move {ref}"
  else:
    q = W.pick(rng, W.MOVE_Q).format(ref=ref, where=f"to the {there}")
    command = f"move {ref} to the {there}"
  return after, q, command, [f], f, {"op": "move", "position": there}, regions


def image_edit(ctx: CX.Ctx) -> dict:
  rng = ctx.rng
  op = EDIT_OPS[int(rng.integers(len(EDIT_OPS)))]
  scene, r = ctx.image_scene(heldout_focus=ctx.heldout and op != "add")
  result = None
  if op == "add":
    result = _add(ctx, scene)
  elif op == "move":
    result = _move(ctx, scene)
  elif op == "remove":
    result = _remove(ctx, scene)
  if result is None:  # recolour, or the fallback when add / move find no room
    result = _recolour(ctx, scene) or _remove(ctx, scene)
  after, q, command, before_ids, after_id, info, regions = result
  ra = SC.render_scene(after)
  size = scene.size
  mask = np.zeros((size, size), bool)
  boxes = []
  for k in before_ids:
    mask |= r.mask(k)[0]
    boxes.append(r.boxes[k, 0])
  if after_id is not None:
    mask |= ra.mask(after_id)[0]
    if info["op"] != "recolour":
      boxes.append(ra.boxes[after_id, 0])
  inv = I.Invocation("edit_image", command, tuple(SP.norm_box(b, size) for b in boxes))
  a = W.pick(rng, W.GEN_A).format(inv=I.render(inv))
  objects = SP.object_records(scene, r)
  if info["op"] == "recolour":
    objects[scene.focus]["colour_after"] = info["colour"]
  truth = dict(info, module="edit_image",
               object=scene.focus if info["op"] != "add" else None,
               object_after=after_id,
               box=(ra.boxes[after_id, 0] if after_id is not None else r.boxes[scene.focus, 0]))
  if truth["object"] is None:
    del truth["object"]
  if truth["object_after"] is None:
    del truth["object_after"]
  return dict(human=f"{T.IMAGE}\n{q}", gpt=a, images=[r.frames[0]], regions=regions,
              objects=objects,
              targets={"source_image": r.frames[0], "image": ra.frames[0], "mask": mask,
                       "boxes": np.array(boxes, np.float32).reshape(-1, 4),
                       "objects_after": SP.object_records(after, ra)},
              truth=truth)


def video_edit(ctx: CX.Ctx) -> dict:
  """Recolour one object through the whole clip."""
  rng = ctx.rng
  for _ in range(10):
    scene, r = ctx.video_scene()
    new = _new_colour(rng, scene, scene.focus)
    if new is not None:
      break
  else:
    raise RuntimeError("no colour left for a video edit in 10 scenes")
  f = scene.focus
  ref = W.refer(scene, f, rng)[0]
  after = scene.copy()
  after.objects[f].colours = (new,) * scene.num_frames
  ra = SC.render_scene(after)
  q = W.pick(rng, W.VEDIT_Q).format(ref=ref, colour=new)
  inv = I.Invocation("edit_video", f"make {ref} {new}")
  a = W.pick(rng, W.GEN_A).format(inv=I.render(inv))
  objects = SP.object_records(scene, r)
  objects[f]["colour_after"] = new
  return dict(human=f"{T.VIDEO}\n{q}", gpt=a, video=r.frames, objects=objects,
              targets={"source_video": r.frames, "video": ra.frames, "masks": r.mask(f),
                       "objects_after": SP.object_records(after, ra)},
              truth={"op": "recolour", "colour": new, "object": f, "module": "edit_video"})
