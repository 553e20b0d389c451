"""The special token strings of the VITRON text protocol (DESIGN.md §3).

Input placeholders (inserted by the data pipeline, replaced by visual embeddings):

* ``<image>`` one image, ``<video>`` one video, ``<roi>`` one user-drawn region (one per region,
  in the order of the sample's ``regions`` list).

Invocation tags (produced by the model when it calls a backend):

* ``<inv>`` … ``</inv>`` wrap one invocation; ``<cmd>`` … ``</cmd>`` wrap the command text;
  ``<region>`` … ``</region>`` wrap location tokens (4 per box) and optionally two time tokens.

Module tokens, one per backend; the mapping module name <-> token is :data:`MODULE_TOKENS`:

============== ================ =========================================
module name    token            backend (DESIGN.md §4)
============== ================ =========================================
segment_image  ``<seg_image>``  referring / interactive image segmentation
segment_video  ``<seg_video>``  video segmentation and tracking
generate_image ``<gen_image>``  text (+ boxes) -> image
edit_image     ``<edit_image>`` image editing / inpainting
generate_video ``<gen_video>``  text (+ layout boxes) -> video
image_to_video ``<img2video>``  first frame + text (+ layout boxes) -> video
edit_video     ``<edit_video>`` video editing
============== ================ =========================================

Location tokens ``<loc0000>`` … ``<loc1023>``: a normalised coordinate ``x`` in [0, 1] becomes
``q = round(x * 1023)``; a box is 4 tokens in the order x1, y1, x2, y2.

Time tokens ``<t00>`` … ``<t63>``: a frame index (0-based) of a video.

A ``generate_video`` or ``image_to_video`` invocation's boxes are the clip's layout: each
object's box in every frame, object-major (object 0 in frames 0 … T-1, then object 1 …), in the
command's order.
"""
from __future__ import annotations

import functools

IMAGE = "<image>"
VIDEO = "<video>"
ROI = "<roi>"
PLACEHOLDERS: tuple[str, ...] = (IMAGE, VIDEO, ROI)

INV_OPEN, INV_CLOSE = "<inv>", "</inv>"
CMD_OPEN, CMD_CLOSE = "<cmd>", "</cmd>"
REGION_OPEN, REGION_CLOSE = "<region>", "</region>"
INVOCATION_TAGS: tuple[str, ...] = (INV_OPEN, INV_CLOSE, CMD_OPEN, CMD_CLOSE, REGION_OPEN,
                                    REGION_CLOSE)

#: module name -> module token, in a fixed order.
MODULE_TOKENS: dict[str, str] = {
    "segment_image": "<seg_image>",
    "segment_video": "<seg_video>",
    "generate_image": "<gen_image>",
    "edit_image": "<edit_image>",
    "generate_video": "<gen_video>",
    "image_to_video": "<img2video>",
    "edit_video": "<edit_video>",
}
#: module token -> module name.
TOKEN_MODULES: dict[str, str] = {t: m for m, t in MODULE_TOKENS.items()}
MODULES: tuple[str, ...] = tuple(MODULE_TOKENS)

NUM_LOC_TOKENS = 1024
NUM_TIME_TOKENS = 64


def module_token(module: str) -> str:
  """The token of a module name; ValueError for an unknown module."""
  if module not in MODULE_TOKENS:
    raise ValueError(f"unknown module {module!r}; expected one of {list(MODULE_TOKENS)}")
  return MODULE_TOKENS[module]


def loc_token(q: int) -> str:
  """``<locNNNN>`` for a quantised coordinate ``q`` in [0, 1023]."""
  if not isinstance(q, int) or isinstance(q, bool) or not 0 <= q < NUM_LOC_TOKENS:
    raise ValueError(f"location index must be an int in [0, {NUM_LOC_TOKENS - 1}], got {q!r}")
  return f"<loc{q:04d}>"


def time_token(frame: int) -> str:
  """``<tNN>`` for a frame index in [0, 63]."""
  if not isinstance(frame, int) or isinstance(frame, bool) or not 0 <= frame < NUM_TIME_TOKENS:
    raise ValueError(f"frame index must be an int in [0, {NUM_TIME_TOKENS - 1}], got {frame!r}")
  return f"<t{frame:02d}>"


def quantize(x: float) -> int:
  """Normalised coordinate in [0, 1] -> location index ``round(x * 1023)``."""
  x = float(x)
  if not 0.0 <= x <= 1.0:  # also rejects NaN
    raise ValueError(f"normalised coordinate must be in [0, 1], got {x}")
  return int(round(x * (NUM_LOC_TOKENS - 1)))


def dequantize(q: int) -> float:
  """Location index -> normalised coordinate ``q / 1023``."""
  if not 0 <= q < NUM_LOC_TOKENS:
    raise ValueError(f"location index must be in [0, {NUM_LOC_TOKENS - 1}], got {q}")
  return q / (NUM_LOC_TOKENS - 1)


def all_special_tokens() -> list[str]:
  """Every special token, in a fixed order: placeholders, tags, modules, locations, times."""
  return list(_all_special_tokens())


@functools.cache
def _all_special_tokens() -> tuple[str, ...]:
  return (PLACEHOLDERS + INVOCATION_TAGS + tuple(MODULE_TOKENS.values())
          + tuple(f"<loc{q:04d}>" for q in range(NUM_LOC_TOKENS))
          + tuple(f"<t{t:02d}>" for t in range(NUM_TIME_TOKENS)))
