"""PNG line plots with PIL only (no matplotlib): the loss curves of a run.

`line_plot({name: (steps, values)}, path)` draws each series in its own colour on shared axes
(y optionally logarithmic), with min/max tick labels and a legend; returns the PNG bytes.
"""
from __future__ import annotations

import io
import math
from typing import Mapping, Sequence

import PIL.Image
import PIL.ImageDraw

COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127)]


def _fmt(v: float) -> str:
  return f"{v:.3g}"


def line_plot(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: str | None,
              *, title: str = "", width: int = 720, height: int = 420,
              log_y: bool = False) -> bytes:
  """Draw the series; write the PNG to `path` (if given) and return its bytes."""
  im = PIL.Image.new("RGB", (width, height), "white")
  d = PIL.ImageDraw.Draw(im)
  left, right, top, bottom = 64, width - 16, 28, height - 40
  d.rectangle([left, top, right, bottom], outline=(0, 0, 0))
  if title:
    d.text((left, 8), title, fill=(0, 0, 0))
  pts = [(x, y) for xs, ys in series.values() for x, y in zip(xs, ys)
         if y is not None and math.isfinite(y) and (not log_y or y > 0)]
  if pts:
    tf = (lambda v: math.log10(v)) if log_y else (lambda v: v)
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(tf(p[1]) for p in pts), max(tf(p[1]) for p in pts)
    x1 = x1 if x1 > x0 else x0 + 1
    y1 = y1 if y1 > y0 else y0 + 1e-6
    sx = lambda x: left + (x - x0) / (x1 - x0) * (right - left)
    sy = lambda y: bottom - (tf(y) - y0) / (y1 - y0) * (bottom - top)
    for i, (name, (xs, ys)) in enumerate(series.items()):
      colour = COLOURS[i % len(COLOURS)]
      line = [(sx(x), sy(y)) for x, y in zip(xs, ys)
              if y is not None and math.isfinite(y) and (not log_y or y > 0)]
      if len(line) == 1:
        x, y = line[0]
        d.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
      elif line:
        d.line(line, fill=colour, width=2)
      d.text((right - 160, top + 6 + 14 * i), name, fill=colour)
    lo, hi = (10 ** y0, 10 ** y1) if log_y else (y0, y1)
    d.text((4, bottom - 10), _fmt(lo), fill=(0, 0, 0))
    d.text((4, top), _fmt(hi), fill=(0, 0, 0))
    d.text((left, bottom + 6), _fmt(x0), fill=(0, 0, 0))
    d.text((right - 40, bottom + 6), _fmt(x1), fill=(0, 0, 0))
    d.text(((left + right) // 2 - 12, bottom + 20), "step", fill=(0, 0, 0))
  buf = io.BytesIO()
  im.save(buf, format="PNG")
  data = buf.getvalue()
  if path:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
      f.write(data)
    import os  # pylint: disable=import-outside-toplevel
    os.replace(tmp, path)
  return data
