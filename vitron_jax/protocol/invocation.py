"""The text form of a backend invocation: data class, renderer and a parser that never raises.

Grammar (whitespace is allowed between structural tokens; the command is stripped)::

  <inv> MODULE <cmd> command text </cmd> [<region> LOC* [TIME TIME] </region>] </inv>

* ``MODULE`` is one module token of :data:`tokens.MODULE_TOKENS` (``<seg_image>`` …);
* ``LOC*`` are 4 location tokens per box (x1, y1, x2, y2, normalised, ``<loc0000>``…);
* ``TIME TIME`` are the first and last frame (inclusive) of a video time span (``<t00>``…).

Example: ``<inv><seg_image><cmd>the red circle</cmd><region><loc0012><loc0034><loc0500>
<loc0600></region></inv>`` (without the line break).

`parse` returns an :class:`Invocation` or an :class:`InvocationError` (a value, not an
exception) for any input, so that free-running model output can be scored. Error kinds:
``not_text``, ``no_invocation``, ``leading_text``, ``unclosed``, ``nested``, ``missing_module``,
``unknown_module``, ``missing_cmd``, ``empty_cmd``, ``bad_cmd``, ``bad_region``,
``bad_coordinates``, ``bad_time_span``, ``trailing_text``, ``internal``.

Boxes here are *normalised* ``(x1, y1, x2, y2)`` in [0, 1] with x1 <= x2 and y1 <= y2; the
helpers `normalize_box` / `denormalize_box` convert from / to pixel boxes (exclusive end).
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Sequence

from vitron_jax.protocol import tokens as T

Box = tuple[float, float, float, float]

_MODULE_ALT = "|".join(re.escape(t[1:-1]) for t in T.MODULE_TOKENS.values())
#: any protocol token (placeholders, tags, modules, locations, times).
SPECIAL_RE = re.compile(r"<(?:/?(?:inv|cmd|region)|image|video|roi|" + _MODULE_ALT
                        + r"|loc\d{4}|t\d{2})>")
LOC_RE = re.compile(r"<loc(\d{4})>")
TIME_RE = re.compile(r"<t(\d{2})>")
_REGION_PART_RE = re.compile(r"<[^<>]*>|[^<>\s]+|[<>]")


@dataclasses.dataclass(frozen=True)
class InvocationError:
  """Why a text is not a valid invocation. `kind` is one of the kinds in the module doc."""
  kind: str
  message: str

  def __bool__(self) -> bool:  # an error is falsy, an Invocation truthy
    return False


def _check_box(box, name: str) -> Box:
  try:
    vals = tuple(float(v) for v in box)
  except TypeError as e:
    raise ValueError(f"{name} must be 4 numbers (x1, y1, x2, y2), got {box!r}") from e
  if len(vals) != 4:
    raise ValueError(f"{name} must be 4 numbers (x1, y1, x2, y2), got {len(vals)}: {box!r}")
  if not all(0.0 <= v <= 1.0 for v in vals):
    raise ValueError(f"{name} must be normalised to [0, 1], got {vals}")
  if vals[0] > vals[2] or vals[1] > vals[3]:
    raise ValueError(f"{name} must have x1 <= x2 and y1 <= y2, got {vals}")
  return vals  # type: ignore[return-value]


@dataclasses.dataclass(frozen=True)
class Invocation:
  """One backend call: module name, command text, optional boxes and video time span.

  boxes: normalised (x1, y1, x2, y2) each; time_span: inclusive (first, last) frame indices.
  """
  module: str
  command: str
  boxes: tuple[Box, ...] = ()
  time_span: tuple[int, int] | None = None

  def __post_init__(self):
    if self.module not in T.MODULE_TOKENS:
      raise ValueError(f"Invocation.module must be one of {list(T.MODULE_TOKENS)}, "
                       f"got {self.module!r}")
    if not isinstance(self.command, str) or not self.command.strip():
      raise ValueError(f"Invocation.command must be non-empty text, got {self.command!r}")
    if self.command != self.command.strip():
      raise ValueError(f"Invocation.command must not start or end with whitespace, "
                       f"got {self.command!r}")
    if SPECIAL_RE.search(self.command):
      raise ValueError(f"Invocation.command must not contain protocol tokens, "
                       f"got {self.command!r}")
    object.__setattr__(self, "boxes", tuple(
        _check_box(b, f"Invocation.boxes[{i}]") for i, b in enumerate(self.boxes)))
    if self.time_span is not None:
      span = tuple(self.time_span)
      if (len(span) != 2 or not all(isinstance(t, int) and not isinstance(t, bool) for t in span)
          or not 0 <= span[0] <= span[1] < T.NUM_TIME_TOKENS):
        raise ValueError(f"Invocation.time_span must be (first, last) frame ints with "
                         f"0 <= first <= last < {T.NUM_TIME_TOKENS}, got {self.time_span!r}")
      object.__setattr__(self, "time_span", span)

  def __bool__(self) -> bool:
    return True


def box_to_loc_tokens(box: Sequence[float]) -> str:
  """Normalised box -> 4 location tokens ``<locX1><locY1><locX2><locY2>``."""
  vals = _check_box(box, "box")
  return "".join(T.loc_token(T.quantize(v)) for v in vals)


def loc_tokens_to_box(text: str) -> Box:
  """Exactly 4 location tokens (whitespace between allowed) -> normalised box; ValueError."""
  parts = _REGION_PART_RE.findall(text) if isinstance(text, str) else None
  if not parts or len(parts) != 4 or not all(LOC_RE.fullmatch(p) for p in parts):
    raise ValueError(f"expected 4 location tokens <locNNNN>, got {text!r}")
  qs = [int(LOC_RE.fullmatch(p).group(1)) for p in parts]
  if max(qs) >= T.NUM_LOC_TOKENS:
    raise ValueError(f"location tokens must be <loc0000>..<loc1023>, got {text!r}")
  return _check_box([T.dequantize(q) for q in qs], "box")


def find_boxes(text: str) -> list[Box]:
  """Every run of 4 consecutive location tokens in free text, as boxes; never raises.

  Runs that are out of range or have x1 > x2 / y1 > y2 are skipped (they are not boxes).
  """
  if not isinstance(text, str):
    return []
  out: list[Box] = []
  for m in re.finditer(r"(?:<loc\d{4}>\s*){4}", text):
    try:
      out.append(loc_tokens_to_box(m.group(0)))
    except ValueError:
      continue
  return out


def find_time_span(text: str) -> tuple[int, int] | None:
  """The first two time tokens in free text as (first, last), or None; never raises."""
  if not isinstance(text, str):
    return None
  ts = [int(t) for t in TIME_RE.findall(text)[:2]]
  if len(ts) < 2 or ts[0] > ts[1] or ts[1] >= T.NUM_TIME_TOKENS:
    return None
  return ts[0], ts[1]


def normalize_box(box_px: Sequence[float], width: int, height: int) -> Box:
  """Pixel box (x1, y1, x2, y2), exclusive end, -> normalised box in [0, 1]."""
  if width <= 0 or height <= 0:
    raise ValueError(f"image width and height must be positive, got {width}x{height}")
  x1, y1, x2, y2 = (float(v) for v in box_px)
  return _check_box((x1 / width, y1 / height, x2 / width, y2 / height), "box")


def denormalize_box(box: Sequence[float], width: int, height: int) -> Box:
  """Normalised box -> pixel box (x1, y1, x2, y2) as floats."""
  x1, y1, x2, y2 = _check_box(box, "box")
  return (x1 * width, y1 * height, x2 * width, y2 * height)


def render(inv: Invocation) -> str:
  """Invocation -> protocol text; the region block only when there are boxes or a span."""
  if not isinstance(inv, Invocation):
    raise TypeError(f"render expects an Invocation, got {type(inv).__name__}")
  out = [T.INV_OPEN, T.MODULE_TOKENS[inv.module], T.CMD_OPEN, inv.command, T.CMD_CLOSE]
  if inv.boxes or inv.time_span is not None:
    out.append(T.REGION_OPEN)
    out.extend(box_to_loc_tokens(b) for b in inv.boxes)
    if inv.time_span is not None:
      out.extend(T.time_token(t) for t in inv.time_span)
    out.append(T.REGION_CLOSE)
  out.append(T.INV_CLOSE)
  return "".join(out)


def _parse_region(region: str) -> tuple[tuple[Box, ...], tuple[int, int] | None] | InvocationError:
  parts = _REGION_PART_RE.findall(region)
  locs: list[int] = []
  times: list[int] = []
  for p in parts:
    if (m := LOC_RE.fullmatch(p)):
      if times:
        return InvocationError("bad_region", "location tokens after time tokens")
      locs.append(int(m.group(1)))
    elif (m := TIME_RE.fullmatch(p)):
      times.append(int(m.group(1)))
    else:
      return InvocationError("bad_region", f"unexpected {p[:40]!r} inside <region>")
  if not locs and not times:
    return InvocationError("bad_region", "empty <region>")
  if len(locs) % 4:
    return InvocationError("bad_region", f"{len(locs)} location tokens, not a multiple of 4")
  if any(q >= T.NUM_LOC_TOKENS for q in locs):
    return InvocationError("bad_coordinates", "location token beyond <loc1023>")
  boxes = []
  for i in range(0, len(locs), 4):
    x1, y1, x2, y2 = (T.dequantize(q) for q in locs[i:i + 4])
    if x1 > x2 or y1 > y2:
      return InvocationError("bad_coordinates", f"box {i // 4} has x1 > x2 or y1 > y2: "
                             f"{locs[i:i + 4]}")
    boxes.append((x1, y1, x2, y2))
  span = None
  if times:
    if len(times) != 2:
      return InvocationError("bad_time_span", f"expected 2 time tokens, got {len(times)}")
    if times[1] >= T.NUM_TIME_TOKENS or times[0] > times[1]:
      return InvocationError("bad_time_span", f"time span must be first <= last, got {times}")
    span = (times[0], times[1])
  return tuple(boxes), span


def _parse(text) -> Invocation | InvocationError:
  if not isinstance(text, str):
    return InvocationError("not_text", f"expected a string, got {type(text).__name__}")
  s = text.strip()
  if not s.startswith(T.INV_OPEN):
    if T.INV_OPEN in s:
      return InvocationError("leading_text", "text before <inv>; use find_invocation")
    return InvocationError("no_invocation", "no <inv> in the text")
  close = s.find(T.INV_CLOSE)
  if close < 0:
    return InvocationError("unclosed", "<inv> without </inv>")
  if s[close + len(T.INV_CLOSE):].strip():
    return InvocationError("trailing_text", "text after </inv>; use find_invocation")
  body = s[len(T.INV_OPEN):close]
  if T.INV_OPEN in body:
    return InvocationError("nested", "<inv> inside an invocation")
  body = body.lstrip()
  m = re.match(r"<[^<>\s]*>", body)
  if m is None or m.group(0) in (T.CMD_OPEN, T.REGION_OPEN):
    return InvocationError("missing_module", "expected a module token after <inv>")
  if m.group(0) not in T.TOKEN_MODULES:
    return InvocationError("unknown_module", f"unknown module token {m.group(0)[:40]!r}")
  module = T.TOKEN_MODULES[m.group(0)]
  rest = body[m.end():].lstrip()
  if not rest.startswith(T.CMD_OPEN):
    return InvocationError("missing_cmd", "expected <cmd> after the module token")
  end = rest.find(T.CMD_CLOSE)
  if end < 0:
    return InvocationError("unclosed", "<cmd> without </cmd>")
  command = rest[len(T.CMD_OPEN):end].strip()
  if not command:
    return InvocationError("empty_cmd", "empty command")
  if SPECIAL_RE.search(command):
    return InvocationError("bad_cmd", "protocol token inside the command")
  rest = rest[end + len(T.CMD_CLOSE):].strip()
  boxes: tuple[Box, ...] = ()
  span = None
  if rest:
    if not rest.startswith(T.REGION_OPEN):
      return InvocationError("trailing_text", f"unexpected {rest[:40]!r} after </cmd>")
    rend = rest.find(T.REGION_CLOSE)
    if rend < 0:
      return InvocationError("unclosed", "<region> without </region>")
    if rest[rend + len(T.REGION_CLOSE):].strip():
      return InvocationError("trailing_text", "unexpected text after </region>")
    region = _parse_region(rest[len(T.REGION_OPEN):rend])
    if isinstance(region, InvocationError):
      return region
    boxes, span = region
  return Invocation(module, command, boxes, span)


def parse(text: str) -> Invocation | InvocationError:
  """One invocation (the whole text, surrounding whitespace ignored) -> typed result.

  Never raises: any malformed input gives an InvocationError.
  """
  try:
    return _parse(text)
  except Exception as e:  # a bug here must not crash an evaluation run; report it as a value
    return InvocationError("internal", f"{type(e).__name__}: {e}")


def _first_span(answer: str) -> tuple[int, int]:
  """(start of the first ``<inv>``, end of the ``</inv>`` after it); -1 where absent."""
  start = answer.find(T.INV_OPEN)
  close = answer.find(T.INV_CLOSE, start) if start >= 0 else -1
  return start, (close + len(T.INV_CLOSE) if close >= 0 else -1)


def find_invocation(answer: str) -> Invocation | InvocationError | None:
  """The first invocation inside a longer answer; None when the answer has no ``<inv>``."""
  if not isinstance(answer, str):
    return InvocationError("not_text", f"expected a string, got {type(answer).__name__}")
  start, end = _first_span(answer)
  if start < 0:
    return None
  if end < 0:
    return InvocationError("unclosed", "<inv> without </inv>")
  return parse(answer[start:end])


def replace_invocation(answer: str, inv: Invocation) -> str:
  """`answer` with its first invocation (``<inv>`` ... ``</inv>``) rendered anew from `inv`;
  the text around it is kept as it was. ValueError when the answer has no closed
  invocation."""
  start, end = _first_span(answer) if isinstance(answer, str) else (-1, -1)
  if end < 0:
    raise ValueError(f"answer has no closed invocation to replace: {answer!r}")
  return answer[:start] + render(inv) + answer[end:]


def split_answer(answer: str) -> tuple[str, Invocation | InvocationError | None]:
  """(answer text without its first invocation, whitespace collapsed; `find_invocation`)."""
  result = find_invocation(answer)
  if not isinstance(answer, str) or result is None:
    return (answer if isinstance(answer, str) else ""), result
  start, end = _first_span(answer)
  text = answer[:start] if end < 0 else answer[:start] + answer[end:]
  return " ".join(text.split()), result


def is_finite_box(box: Sequence[float]) -> bool:
  """True for 4 finite numbers (used by metrics before scoring a predicted box)."""
  try:
    return len(box) == 4 and all(math.isfinite(float(v)) for v in box)
  except (TypeError, ValueError):
    return False
