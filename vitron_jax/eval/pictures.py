"""Pictures of samples and predictions: PNG with boxes and masks drawn, GIF for videos.

`sample_picture(sample)` lays out the inputs (object boxes and labels, user regions), the
targets (masks, result images, video frames) and the conversation text; `save_gif` writes a
video with optional per-frame boxes and masks. `Animation` is a video a backend made (a tracked
clip, a generated video), drawn frame by frame: `animation(video, masks=, boxes=)` builds one,
`.png()` is its frames side by side and `.gif_bytes()` its GIF. Used by the docs and
evaluation reports.
"""
from __future__ import annotations

import dataclasses
import io
import textwrap
from typing import Any, Sequence

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont

from vitron_jax.eval.boxes import predicted_box

MASK_RGB = np.array([255, 255, 255], np.float64)
BOX_COLOURS = ((255, 255, 255), (0, 0, 0), (255, 0, 255), (0, 255, 0))
ROW_FRAMES = 8


def _font():
  return PIL.ImageFont.load_default()


def overlay(image: Any, *, masks: Sequence[Any] = (), boxes: Any = (), labels: Sequence[str] = (),
            scale: int = 4, alpha: float = 0.45) -> PIL.Image.Image:
  """uint8 `[H, W, 3]` -> enlarged picture with masks tinted and pixel boxes outlined."""
  img = np.asarray(image)
  if img.ndim != 3 or img.shape[-1] != 3 or img.dtype != np.uint8:
    raise ValueError(f"image must be uint8 [H, W, 3], got {img.dtype} {img.shape}")
  out = img.astype(np.float64)
  for m in masks:
    m = np.asarray(m).astype(bool)
    if m.shape != img.shape[:2]:
      raise ValueError(f"mask shape {m.shape} does not match image {img.shape[:2]}")
    out[m] = (1 - alpha) * out[m] + alpha * MASK_RGB
  pic = PIL.Image.fromarray(out.round().astype(np.uint8)).resize(
      (img.shape[1] * scale, img.shape[0] * scale), PIL.Image.NEAREST)
  draw = PIL.ImageDraw.Draw(pic)
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  for i, b in enumerate(boxes):
    if not np.isfinite(b).all() or b[2] <= b[0] or b[3] <= b[1]:
      continue
    colour = BOX_COLOURS[i % len(BOX_COLOURS)]
    draw.rectangle([b[0] * scale, b[1] * scale, b[2] * scale - 1, b[3] * scale - 1],
                   outline=colour, width=max(1, scale // 2))
    if i < len(labels) and labels[i]:
      draw.text((b[0] * scale + 2, b[1] * scale + 1), labels[i], fill=colour, font=_font())
  return pic


def side_by_side(pictures: Sequence[PIL.Image.Image], gap: int = 4) -> PIL.Image.Image:
  w = sum(p.width for p in pictures) + gap * (len(pictures) - 1)
  h = max(p.height for p in pictures)
  row = PIL.Image.new("RGB", (w, h), (40, 40, 40))
  x = 0
  for p in pictures:
    row.paste(p, (x, 0))
    x += p.width + gap
  return row


def _stack(rows: Sequence[PIL.Image.Image], gap: int = 6) -> PIL.Image.Image:
  w = max(r.width for r in rows)
  h = sum(r.height for r in rows) + gap * (len(rows) - 1)
  out = PIL.Image.new("RGB", (w, h), (40, 40, 40))
  y = 0
  for r in rows:
    out.paste(r, (0, y))
    y += r.height + gap
  return out


def _text(lines: Sequence[str], width_px: int) -> PIL.Image.Image:
  chars = max(20, width_px // 6)
  wrapped = [w for line in lines for w in (textwrap.wrap(line, chars) or [""])]
  pic = PIL.Image.new("RGB", (width_px, 12 * len(wrapped) + 6), (250, 250, 250))
  draw = PIL.ImageDraw.Draw(pic)
  for i, line in enumerate(wrapped):
    draw.text((4, 3 + 12 * i), line, fill=(0, 0, 0), font=_font())
  return pic


def _frames(video: np.ndarray) -> list[int]:
  t = video.shape[0]
  return sorted(set(np.linspace(0, t - 1, min(t, ROW_FRAMES)).round().astype(int).tolist()))


def _labels(objects) -> list[str]:
  return [f"{o.get('size', '')} {o.get('colour', '')} {o.get('shape', '')}".strip()
          for o in objects]


def sample_picture(sample: dict, *, scale: int = 4) -> PIL.Image.Image:
  """One picture of a sample: inputs with boxes, regions and targets, then the conversation."""
  objects = sample.get("objects", [])
  targets = sample.get("targets", {})
  regions = sample.get("regions", [])
  labels = _labels(objects)
  rows = []
  for img in sample.get("images", []):
    boxes = [o["boxes"][0] for o in objects] if "video" not in sample else []
    masks = [r["mask"] for r in regions if np.asarray(r["mask"]).ndim == 2]
    if "mask" in targets:
      masks.append(targets["mask"])
    rows.append(side_by_side([overlay(img, masks=masks, boxes=boxes, labels=labels,
                                      scale=scale)]))
  if "video" in sample:
    video = sample["video"]
    tmasks = targets.get("masks")
    rmasks = [np.asarray(r["mask"]) for r in regions if np.asarray(r["mask"]).ndim == 3]
    pics = []
    for t in _frames(video):
      masks = [m[t] for m in rmasks] + ([tmasks[t]] if tmasks is not None else [])
      boxes = [o["boxes"][t] for o in objects if o["visible"][t]]
      pics.append(overlay(video[t], masks=masks, boxes=boxes, scale=scale))
    rows.append(side_by_side(pics))
  if "image" in targets:
    rows.append(side_by_side([overlay(targets["image"], boxes=targets.get("boxes", ()),
                                      scale=scale)]))
  if "video" in targets and "video" not in sample or (
      "video" in targets and not np.array_equal(targets["video"], sample.get("video"))):
    rows.append(side_by_side([overlay(targets["video"][t], scale=scale)
                              for t in _frames(targets["video"])]))
  if not rows:
    rows.append(PIL.Image.new("RGB", (64 * scale, 8), (40, 40, 40)))
  width = max(r.width for r in rows)
  lines = [f"[{sample.get('task', '?')}/{sample.get('subtask', '?')}] {sample.get('id', '')}"]
  lines += [f"{c['from']}: {c['value']}" for c in sample.get("conversations", [])]
  rows.append(_text(lines, max(width, 320)))
  return _stack(rows)


def answer_picture(sample: dict, answer: str, *,
                   made: Sequence[PIL.Image.Image | Animation] = (),
                   scale: int = 4) -> PIL.Image.Image:
  """`sample_picture` with a model's answer under it: its box drawn on the input, then `made`
  (pictures of what the backends made of the answer: a mask tinted on the input, a generated
  image; an `Animation` as its frames side by side), then its text."""
  pic = sample_picture(sample, scale=scale)
  rows = [pic]
  inputs = sample.get("images") or ([sample["video"][0]] if "video" in sample else [])
  first = []
  if inputs:
    h, w = np.shape(inputs[0])[:2]
    box = predicted_box(answer, w, h)
    first.append(overlay(inputs[0], boxes=[] if box is None else [box], labels=["answer"],
                         scale=scale))
  if first or made:
    rows.append(side_by_side(first + [still(m) for m in made]))
  rows.append(_text([f"model: {answer}"], max(r.width for r in rows)))
  return _stack(rows)


def save_sample_png(sample: dict, path: str, *, scale: int = 4) -> None:
  sample_picture(sample, scale=scale).save(path, format="PNG")


@dataclasses.dataclass(frozen=True)
class Animation:
  """A video a backend made, drawn: its frames (PIL images of one size), in order.

  `png()` is the still the answer picture shows, `gif_bytes(fps)` the GIF the report embeds.
  Built by `animation(video, masks=, boxes=)`; a backend's `score` returns one for a sample
  where a PIL image would be a still.
  """

  frames: tuple[PIL.Image.Image, ...]

  def __post_init__(self):
    frames = tuple(self.frames)
    if not frames or not all(isinstance(f, PIL.Image.Image) for f in frames):
      raise ValueError("Animation frames must be one or more PIL images, got "
                       f"{[type(f).__name__ for f in frames]}")
    sizes = {f.size for f in frames}
    if len(sizes) != 1:
      raise ValueError(f"Animation frames must share one size, got sizes {sorted(sizes)}")
    object.__setattr__(self, "frames", frames)

  @property
  def size(self) -> tuple[int, int]:
    """(width, height) of one frame."""
    return self.frames[0].size

  def png(self) -> PIL.Image.Image:
    """Every frame side by side (`side_by_side`), as one still picture."""
    return side_by_side(self.frames)

  def gif_bytes(self, fps: float = 4.0) -> bytes:
    """The frames as an animated, looping GIF (see `_write_gif`)."""
    buf = io.BytesIO()
    _write_gif(self.frames, buf, fps)
    return buf.getvalue()


def still(picture: PIL.Image.Image | Animation) -> PIL.Image.Image:
  """A picture a backend made as one still: an `Animation`'s `png()`, a PIL image itself."""
  return picture.png() if isinstance(picture, Animation) else picture


def _write_gif(frames: Sequence[PIL.Image.Image], fp: Any, fps: float) -> None:
  """Writes `frames` to `fp` (a path or a binary file) as a looping GIF at `fps`. Pillow merges
  identical consecutive frames into one (their durations add), so a still stretch of video
  reads back as fewer frames, shown as long."""
  if fps <= 0:
    raise ValueError(f"fps must be positive, got {fps}")
  frames[0].save(fp, format="GIF", save_all=True, append_images=list(frames[1:]),
                 duration=int(1000 / fps), loop=0)


def animation(video: Any, masks: Any = None, boxes: Any = None, *,
              scale: int = 4) -> Animation:
  """uint8 video `[T, H, W, 3]` -> `Animation` of its frames enlarged `scale` times (`overlay`),
  frame t with `masks[t]` tinted (masks `[T, H, W]`, any dtype, nonzero = in) and `boxes[t]`
  outlined (boxes `[T, N, 4]` pixel corners, or per frame a list of N boxes, N may vary)."""
  vid = np.asarray(video)
  if vid.ndim != 4 or vid.shape[-1] != 3 or vid.dtype != np.uint8:
    raise ValueError(f"video must be uint8 [T, H, W, 3], got {vid.dtype} {vid.shape}")
  t, h, w = vid.shape[:3]
  if t == 0:
    raise ValueError(f"video has no frames: {vid.shape}")
  if masks is not None:
    masks = np.asarray(masks)
    if masks.shape != (t, h, w):
      raise ValueError(f"masks must be [T, H, W] = {[t, h, w]} like the video, got "
                       f"{list(masks.shape)}")
  per_frame = [()] * t
  if boxes is not None:
    if len(boxes) != t:
      raise ValueError(f"boxes must have one entry per frame (T = {t}), got {len(boxes)}")
    per_frame = []
    for i, b in enumerate(boxes):
      b = np.asarray(b, np.float64)
      if b.size and (b.ndim not in (1, 2) or b.shape[-1] != 4):
        raise ValueError(f"boxes[{i}] must be [N, 4] pixel boxes, got shape {b.shape}")
      per_frame.append(b.reshape(-1, 4))
  return Animation(tuple(
      overlay(vid[i], masks=[] if masks is None else [masks[i]], boxes=per_frame[i],
              scale=scale) for i in range(t)))


def save_gif(video: Any, path: str, *, boxes: Any = None, masks: Any = None, fps: float = 4.0,
             scale: int = 4) -> None:
  """uint8 `[T, H, W, 3]` -> animated GIF; optional boxes `[T, N, 4]` and masks `[T, H, W]`
  (`animation`, written by `_write_gif`)."""
  _write_gif(animation(video, masks=masks, boxes=boxes, scale=scale).frames, path, fps)


def sample_gif(sample: dict, path: str, *, fps: float = 4.0, scale: int = 4) -> None:
  """GIF of a sample's video (or its target video) with the target masks when present."""
  targets = sample.get("targets", {})
  video = sample.get("video", targets.get("video"))
  if video is None:
    raise ValueError(f"sample {sample.get('id')} has no video")
  save_gif(video, path, masks=targets.get("masks"), fps=fps, scale=scale)
