"""A tiny LLaVA-format folder written by the tests: good and deliberately bad samples."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import PIL.Image

BAD = {"broken_img": "undecodable image", "no_video": "missing video file",
       "empty_conv": "empty conversation", "too_long": "longer than the sequence"}


def _png(h, w, colour) -> bytes:
  buf = io.BytesIO()
  PIL.Image.fromarray(np.full((h, w, 3), colour, np.uint8)).save(buf, format="PNG")
  return buf.getvalue()


def _conv(q="<image>\nWhat colour is it?", a="Red."):
  return [{"from": "human", "value": q}, {"from": "gpt", "value": a}]


def write_llava_folder(root: Path, n_extra_good: int = 6) -> Path:
  """train.json (good image / gif video / frame-folder video, then 4 bad samples, then more
  good text samples) and val.json (2 good samples)."""
  root.mkdir(parents=True, exist_ok=True)
  (root / "img").mkdir(exist_ok=True)
  (root / "vid" / "frames").mkdir(parents=True, exist_ok=True)
  (root / "img" / "a.png").write_bytes(_png(20, 30, (255, 0, 0)))
  (root / "img" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg at all")
  frames = [PIL.Image.fromarray(np.full((12, 12, 3), (40 * k, 0, 0), np.uint8))
            for k in range(5)]
  frames[0].save(root / "vid" / "clip.gif", save_all=True, append_images=frames[1:])
  for k in range(3):
    (root / "vid" / "frames" / f"{k:03d}.png").write_bytes(_png(10, 10, (0, 80 * k, 0)))
  items = [
      {"id": "good_img", "image": "img/a.png", "conversations": _conv()},
      {"id": "good_vid", "video": "vid/clip.gif",
       "conversations": _conv("<video>\nWhat happens?", "It gets brighter.")},
      {"id": "good_frames", "video": "vid/frames",
       "conversations": _conv("<video>\nWhat colour?", "Green."), "source": "fixture"},
      {"id": "broken_img", "image": "img/broken.jpg", "conversations": _conv()},
      {"id": "no_video", "video": "vid/missing.mp4", "conversations": _conv("<video>\nHi", "Hi")},
      {"id": "empty_conv", "conversations": []},
      {"id": "too_long", "conversations": _conv("Tell me a story.", "Once upon a time " * 40)},
  ]
  items += [{"id": f"text_{k}", "conversations": _conv(f"What is {k} + 1?", f"{k + 1}.")}
            for k in range(n_extra_good)]
  (root / "train.json").write_text(json.dumps(items))
  (root / "val.json").write_text(json.dumps(
      [{"id": f"val_{k}", "conversations": _conv(f"Say {k}.", f"{k}.")} for k in range(2)]))
  return root
