"""`sweep_report.md`: one row per run of a sweep (its overrides), one column per evaluated
metric, from each run's `summary.json` (the final evaluation the trainer wrote).

    write_sweep_report(sweep_dir, [(run_name, overrides), ...])

For VITRON runs the columns are each subtask's primary metric, with the chance level of the
same samples in the first row; for other tasks, every numeric evaluation metric. A run with no
summary (failed, still running) gets a row that says so, never a silent gap.
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping, Sequence

from vitron_jax.convert.safetensors_io import write_text

REPORT = "sweep_report.md"
SKIP = ("eval_seconds", "eval_skipped", "beats_chance_all")


def _columns(evals: Sequence[Mapping[str, Any]]) -> tuple[list[str], bool]:
  keys = sorted({k for e in evals for k, v in e.items() if isinstance(v, (int, float))})
  primary = [k[:-len("/primary")] for k in keys if k.endswith("/primary")]
  if primary:
    return primary, True
  return [k for k in keys if k not in SKIP], False


def sweep_report_text(rows: Sequence[tuple[str, Mapping[str, Any], Mapping[str, Any] | None]]
                      ) -> str:
  """rows: (run name, overrides, eval metrics or None) -> markdown."""
  evals = [e for _, _, e in rows if e]  # None: no summary.json; {}: no evaluation in it
  cols, vitron = _columns(evals)
  head = ["run", "overrides"] + cols
  lines = ["# Sweep", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  if vitron and evals:
    chance = [max((e.get(f"{c}/chance", float("nan")) for e in evals if f"{c}/chance" in e),
                  default=float("nan")) for c in cols]
    lines.append("| chance | | " + " | ".join(f"{x:.3f}" for x in chance) + " |")
  for name, overrides, e in rows:
    ov = ", ".join(f"{k}={v}" for k, v in overrides.items()) or "(base)"
    if not e:
      why = "no summary" if e is None else "no evaluation"
      lines.append(f"| {name} | {ov} | " + " | ".join([why] * max(len(cols), 1)) + " |")
      continue
    vals = [e.get(f"{c}/primary" if vitron else c) for c in cols]
    lines.append(f"| {name} | {ov} | " + " | ".join(
        "-" if v is None else f"{float(v):.3f}" for v in vals) + " |")
  return "\n".join(lines) + "\n"


def read_eval(run_dir: str) -> Mapping[str, Any] | None:
  """The run's final evaluation ({} when it made none), or None without a summary."""
  path = os.path.join(run_dir, "summary.json")
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f).get("eval") or {}


def write_sweep_report(sweep_dir: str, runs: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
  rows = [(name, ov, read_eval(os.path.join(sweep_dir, name))) for name, ov in runs]
  return str(write_text(sweep_report_text(rows), os.path.join(sweep_dir, REPORT)))
