"""Generation tasks: text -> image (phrases + boxes), text -> video, image -> video."""
from __future__ import annotations

import numpy as np

from vitron_jax.data.pixelworld import context as CX
from vitron_jax.data.pixelworld import sample as SP
from vitron_jax.data.pixelworld import templates as W
from vitron_jax.protocol import invocation as I
from vitron_jax.protocol import tokens as T


def text_to_image(ctx: CX.Ctx) -> dict:
  """GLIGEN-style generation; with `<roi>` inputs the invocation carries one box per phrase.

  The command lists the phrases in z-order (the order of `targets["phrases"]` and
  `targets["boxes"]`), each phrase verbatim, then the background.
  """
  rng = ctx.rng
  scene, r = ctx.image_scene()
  objs, size = scene.objects, scene.size
  phrases = [W.noun_phrase(o) for o in objs]
  boxes = r.boxes[:, 0].astype(np.float32)
  bg = W.background_phrase(scene)
  regions, inv_boxes = [], ()
  if rng.random() < 0.35:
    regions = [SP.region(r.mask(k)[0], boxes[k], "box") for k in range(len(objs))]
    items = W.join([f"{p} in {T.ROI}" for p in phrases])
    q = W.pick(rng, W.T2I_ROI_Q).format(items=items, bg=bg)
    inv_boxes = tuple(SP.norm_box(b, size) for b in boxes)
    command = f"{W.join(phrases)} {bg}"
  else:
    with_pos = rng.random() < 0.5
    items = [f"{p} {W.positioned(o, size)}" if with_pos else p for p, o in zip(phrases, objs)]
    command = f"{W.join(items)} {bg}"
    q = W.pick(rng, W.T2I_Q).format(prompt=command)
  inv = I.Invocation("generate_image", command, inv_boxes)
  a = W.pick(rng, W.GEN_A).format(inv=I.render(inv))
  return dict(human=q, gpt=a, regions=regions, objects=SP.object_records(scene, r),
              targets={"image": r.frames[0], "phrases": phrases, "boxes": boxes,
                       "background": scene.background},
              truth={"object": scene.focus, "module": "generate_image",
                     "objects": list(range(len(objs)))})


def _video_prompt(scene) -> tuple[str, list[str]]:
  phrases = [W.noun_phrase(o) for o in scene.objects]
  items = [f"{p} {W.motion_phrase(o)}" for p, o in zip(phrases, scene.objects)]
  return f"{W.join(items)} {W.background_phrase(scene)}", phrases


def trajectory_boxes(r, size: int) -> tuple[I.Box, ...]:
  """A video's planned layout: every object's box in every frame, object-major (object 0's
  frames 0..T-1, then object 1's ...), normalised; a frame where the object is not visible
  has the empty box (0, 0, 0, 0)."""
  k, t = r.boxes.shape[:2]
  return tuple(SP.norm_box(r.boxes[j, f], size) for j in range(k) for f in range(t))


def text_to_video(ctx: CX.Ctx) -> dict:
  """The command lists each object's phrase with its motion (in z-order), then the
  background; the invocation carries the layout of the clip (`trajectory_boxes`: each
  object's box in every frame), as LLM-grounded video diffusion plans one: the prompt does
  not say where an object starts, so any start that moves the asked way is a right plan."""
  rng = ctx.rng
  scene, r = ctx.video_scene()
  command, phrases = _video_prompt(scene)
  q = W.pick(rng, W.T2V_Q).format(prompt=command)
  inv = I.Invocation("generate_video", command, trajectory_boxes(r, scene.size))
  a = W.pick(rng, W.GEN_A).format(inv=I.render(inv))
  return dict(human=q, gpt=a, objects=SP.object_records(scene, r),
              targets={"video": r.frames, "phrases": phrases,
                       "boxes": np.transpose(r.boxes, (1, 0, 2)).astype(np.float32),
                       "background": scene.background},
              truth={"object": scene.focus, "module": "generate_video",
                     "objects": list(range(len(scene.objects)))})


def image_to_video(ctx: CX.Ctx) -> dict:
  """The first frame is the input image; the command says how each object moves, and the
  invocation carries the clip's layout (`trajectory_boxes`): where each object of the image
  is in every frame, so the LLM finds the objects in the image and plans their paths."""
  rng = ctx.rng
  scene, r = ctx.video_scene()
  items = [f"{W.noun_phrase(o, definite=True)} is {W.motion_phrase(o)}" for o in scene.objects]
  command = W.join(items)
  q = W.pick(rng, W.I2V_Q).format(prompt=command)
  inv = I.Invocation("image_to_video", command, trajectory_boxes(r, scene.size))
  a = W.pick(rng, W.GEN_A).format(inv=I.render(inv))
  return dict(human=f"{T.IMAGE}\n{q}", gpt=a, images=[r.frames[0]],
              objects=SP.object_records(scene, r),
              targets={"source_image": r.frames[0], "video": r.frames,
                       "boxes": np.transpose(r.boxes, (1, 0, 2)).astype(np.float32)},
              truth={"object": scene.focus, "module": "image_to_video",
                     "objects": list(range(len(scene.objects)))})
