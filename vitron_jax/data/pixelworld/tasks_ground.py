"""Grounding (referring expression -> box, video grounding -> box + time span) and
segmentation (referring image segmentation, video segmentation / tracking) tasks."""
from __future__ import annotations

import numpy as np

from vitron_jax.data.pixelworld import context as CX
from vitron_jax.data.pixelworld import sample as SP
from vitron_jax.data.pixelworld import templates as W
from vitron_jax.protocol import invocation as I
from vitron_jax.protocol import tokens as T


def ref_box(ctx: CX.Ctx) -> dict:
  rng = ctx.rng
  scene, r = ctx.image_scene()
  f = scene.focus
  ref = W.refer(scene, f, rng)[0]
  box = r.boxes[f, 0]
  q = W.pick(rng, W.BOX_Q).format(ref=ref)
  a = W.pick(rng, W.BOX_A).format(box=SP.loc(box, scene.size), ref=ref, Ref=W.cap(ref))
  return dict(human=f"{T.IMAGE}\n{q}", gpt=a, images=[r.frames[0]],
              objects=SP.object_records(scene, r),
              truth={"object": f, "box": box.astype(np.float32)})


def video_grounding(ctx: CX.Ctx) -> dict:
  rng = ctx.rng
  scene, r = ctx.video_scene()
  f = scene.focus
  ref = W.refer(scene, f, rng)[0]
  span = r.span(f)
  box = r.boxes[f, span[0]]
  q = W.pick(rng, W.VGROUND_Q).format(ref=ref)
  a = W.pick(rng, W.VGROUND_A).format(
      box=SP.loc(box, scene.size), span=SP.span_tokens(span), t0=T.time_token(span[0]),
      t1=T.time_token(span[1]), Ref=W.cap(ref))
  return dict(human=f"{T.VIDEO}\n{q}", gpt=a, video=r.frames,
              objects=SP.object_records(scene, r),
              truth={"object": f, "box": box.astype(np.float32),
                     "time_span": np.array(span, np.int32)})


def ref_seg(ctx: CX.Ctx) -> dict:
  """Referring image segmentation: an invocation of segment_image with the object's box."""
  rng = ctx.rng
  scene, r = ctx.image_scene()
  f = scene.focus
  box = r.boxes[f, 0]
  regions = []
  if rng.random() < 0.3:  # the user marks the object; the model names it in the command
    regions = [SP.region(r.mask(f)[0], box, "mask" if rng.random() < 0.5 else "box")]
    ref = W.refer(scene, f, rng, full=True)[0]
    q = W.pick(rng, W.SEG_ROI_Q).format(roi=T.ROI)
  else:
    ref = W.refer(scene, f, rng)[0]
    q = W.pick(rng, W.SEG_Q).format(ref=ref)
  inv = I.Invocation("segment_image", ref, (SP.norm_box(box, scene.size),))
  a = W.pick(rng, W.SEG_A).format(inv=I.render(inv), ref=ref)
  return dict(human=f"{T.IMAGE}\n{q}", gpt=a, images=[r.frames[0]], regions=regions,
              objects=SP.object_records(scene, r),
              targets={"mask": r.mask(f)[0], "boxes": box[None].astype(np.float32)},
              truth={"object": f, "module": "segment_image"})


def video_seg(ctx: CX.Ctx) -> dict:
  """Video segmentation / tracking: segment_video with the first box and the time span."""
  rng = ctx.rng
  scene, r = ctx.video_scene()
  f = scene.focus
  span = r.span(f)
  box = r.boxes[f, span[0]]
  masks = r.mask(f)
  regions = []
  if rng.random() < 0.3:
    regions = [SP.region(np.where(np.arange(masks.shape[0])[:, None, None] == span[0], masks,
                                  False), box, "mask" if rng.random() < 0.5 else "box",
                         frame=span[0])]
    ref = W.refer(scene, f, rng, full=True)[0]
    q = W.pick(rng, W.TRACK_ROI_Q).format(roi=T.ROI)
  else:
    ref = W.refer(scene, f, rng)[0]
    q = W.pick(rng, W.TRACK_Q).format(ref=ref)
  inv = I.Invocation("segment_video", ref, (SP.norm_box(box, scene.size),), span)
  a = W.pick(rng, W.SEG_A).format(inv=I.render(inv), ref=ref)
  return dict(human=f"{T.VIDEO}\n{q}", gpt=a, video=r.frames, regions=regions,
              objects=SP.object_records(scene, r),
              targets={"masks": masks, "boxes": r.boxes[f].astype(np.float32),
                       "visible": r.present[f].copy(),
                       "time_span": np.array(span, np.int32)},
              truth={"object": f, "module": "segment_video",
                     "time_span": np.array(span, np.int32)})
