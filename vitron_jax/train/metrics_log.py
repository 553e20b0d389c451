"""Run logging: JSONL, TensorBoard events, a PNG of the loss curves, a tqdm progress bar.

Everything is written by the primary process into the workdir:

    metrics.jsonl        one JSON object per line: {"kind": "train" | "eval" | "event", "step",
                         ...}; train lines carry loss, grad_norm, lr, throughput
    tensorboard/         event files (train/*, eval/*, and eval pictures)
    loss.png             train loss (and eval metrics) against step, redrawn at each eval/end

On resume the JSONL keeps only lines up to the restored step, so the file always tells the
history of the state being trained (steps after the checkpoint were lost with the process).
"""
from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from typing import Any, Mapping

import numpy as np

from vitron_jax.train import plots
from vitron_jax.train.tensorboard import EventWriter


def quiet_library_logs() -> None:
  """Python logging of a run: orbax logs every file it renames at INFO through absl; keep its
  warnings only."""
  def keep(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or not any(
        f"{os.sep}{lib}{os.sep}" in record.pathname for lib in ("orbax", "grain", "jax"))
  logging.getLogger("absl").addFilter(keep)


def _jsonable(v: Any) -> Any:
  if isinstance(v, (np.generic, np.ndarray)):
    v = v.item() if np.ndim(v) == 0 else np.asarray(v).tolist()
  if isinstance(v, float) and not math.isfinite(v):
    return str(v)
  return v


def read_jsonl(path: str) -> list[dict]:
  if not os.path.exists(path):
    return []
  out = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      line = line.strip()
      if line:
        try:
          out.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a kill -9
          continue
  return out


class MetricsLog:
  """See the module docstring. Inactive (no files) on non-primary processes."""

  def __init__(self, workdir: str, *, total_steps: int, start_step: int = 0,
               primary: bool = True, jsonl: bool = True, tensorboard: bool = True,
               png: bool = True, progress: bool = True, examples_per_step: int = 0,
               tokens_per_step: int = 0):
    self.workdir, self.primary = workdir, primary
    self.total_steps, self.examples_per_step = total_steps, examples_per_step
    self.tokens_per_step = tokens_per_step
    self.png = png and primary
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._f = None
    self._tb = None
    self._bar = None
    self._last_t = time.perf_counter()
    self._last_step = start_step
    if not primary:
      return
    os.makedirs(workdir, exist_ok=True)
    if jsonl:
      self._truncate_after(start_step)
      self._f = open(self.path, "a", encoding="utf-8")  # pylint: disable=consider-using-with
    if tensorboard:
      self._tb = EventWriter(os.path.join(workdir, "tensorboard"))
    if progress and sys.stderr.isatty():
      from tqdm import tqdm  # pylint: disable=import-outside-toplevel
      self._bar = tqdm(total=total_steps, initial=start_step, dynamic_ncols=True,
                       desc="train")

  def _truncate_after(self, step: int) -> None:
    rows = read_jsonl(self.path)
    if not rows:
      return
    keep = [r for r in rows if int(r.get("step", 0)) <= step]
    tmp = self.path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
      for r in keep:
        f.write(json.dumps(r) + "\n")
    os.replace(tmp, self.path)

  def _write(self, record: Mapping[str, Any]) -> None:
    if self._f is not None:
      self._f.write(json.dumps({k: _jsonable(v) for k, v in record.items()}) + "\n")
      self._f.flush()

  # -- records -----------------------------------------------------------------------------
  def train(self, step: int, metrics: Mapping[str, float], **extra: Any) -> dict[str, float]:
    """Log train metrics of `step`; returns them with throughput added."""
    now = time.perf_counter()
    dt = max(now - self._last_t, 1e-9)
    n = max(step - self._last_step, 0)
    out = {k: float(v) for k, v in metrics.items()}
    if n:
      out["steps_per_s"] = n / dt
      if self.examples_per_step:
        out["examples_per_s"] = n * self.examples_per_step / dt
      if self.tokens_per_step:
        out["tokens_per_s"] = n * self.tokens_per_step / dt
    self._last_t, self._last_step = now, step
    if not self.primary:
      return out
    self._write({"kind": "train", "step": step, **out, **extra})
    line = f"step {step:6d}  loss {out.get('loss', float('nan')):.4f}"
    if "tokens_per_s" in out:
      line += f"  {out['tokens_per_s']:.0f} tok/s"
    if self._bar is not None:
      self._bar.write(line)
    else:
      print(line, flush=True)
    if self._tb is not None:
      self._tb.scalars(step, {f"train/{k}": v for k, v in out.items()})
    if self._bar is not None:
      self._bar.n = step
      post = {"loss": f"{out.get('loss', float('nan')):.4f}"}
      if "steps_per_s" in out:
        post["it/s"] = f"{out['steps_per_s']:.2f}"
      if "tokens_per_s" in out:
        post["tok/s"] = f"{out['tokens_per_s']:.0f}"
      self._bar.set_postfix(post, refresh=True)
    return out

  def eval(self, step: int, metrics: Mapping[str, Any]) -> None:
    if not self.primary:
      return
    scalars = {k: float(v) for k, v in metrics.items()
               if isinstance(v, (int, float, np.generic)) and not isinstance(v, bool)}
    self._write({"kind": "eval", "step": step, **scalars})
    if self._tb is not None:
      self._tb.scalars(step, {f"eval/{k}": v for k, v in scalars.items()})
    self.plot()

  def picture(self, step: int, tag: str, png: bytes, height: int, width: int) -> None:
    if self.primary and self._tb is not None:
      self._tb.image(step, tag, png, height, width)

  def event(self, step: int, what: str, **fields: Any) -> None:
    if self.primary:
      self._write({"kind": "event", "step": step, "event": what, **fields})
      if self._bar is not None:
        self._bar.write(f"[step {step}] {what} {fields if fields else ''}")

  # -- plot --------------------------------------------------------------------------------
  def plot(self) -> str | None:
    if not self.png:
      return None
    rows = read_jsonl(self.path)
    series = {}
    train = [r for r in rows if r.get("kind") == "train" and "loss" in r]
    if train:
      series["train loss"] = ([r["step"] for r in train], [float(r["loss"]) for r in train])
    evals = [r for r in rows if r.get("kind") == "eval"]
    for key in sorted({k for r in evals for k in r if k.endswith("loss")}):
      pts = [(r["step"], float(r[key])) for r in evals if key in r]
      series[f"eval {key}"] = ([p[0] for p in pts], [p[1] for p in pts])
    if not series:
      return None
    path = os.path.join(self.workdir, "loss.png")
    positive = all(v > 0 for _, ys in series.values() for v in ys)
    plots.line_plot(series, path, title="loss", log_y=positive)
    return path

  def flush(self) -> None:
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
    if self._f is not None:
      self._f.close()
      self._f = None
    if self._tb is not None:
      self._tb.close()
    self.plot()
