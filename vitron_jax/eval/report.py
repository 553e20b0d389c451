"""`report.md` of a run's evaluation: per evaluated split, one table row per subtask (task,
metric, ours, chance, samples); the answer pictures below.

    write_report(workdir, step, {"val": table, "heldout": table2},
                 pictures={tag: (png_or_gif_bytes, h, w)}, title="...")

Each table is `eval.answers.summarize`'s output. Pictures are written under `report/` and linked,
as `.gif` when their bytes are a GIF (the videos backends made), else `.png`;
the run's loss curve (`loss.png`, drawn by the trainer) is linked when present. The file is
rewritten atomically at every evaluation, so it always describes the newest one.
"""
from __future__ import annotations

import os
import re
from typing import Mapping, Sequence

from vitron_jax.convert.safetensors_io import write_text
from vitron_jax.eval.answers import primary_metric

REPORT = "report.md"
PICTURE_DIR = "report"


def _fmt(x: float) -> str:
  return f"{x:.3f}"


def _file_name(tag: str, data: bytes = b"") -> str:
  """The picture file of `tag`: `.gif` when `data` is a GIF (it starts with b"GIF8": GIF87a or
  GIF89a), else `.png`."""
  ext = ".gif" if data[:4] == b"GIF8" else ".png"
  return re.sub(r"[^A-Za-z0-9_.-]+", "_", tag).strip("_") + ext


SPLIT_NOTES = {
    "val": "unseen samples of the training distribution",
    "heldout": "unseen colour-shape and motion-shape combinations on the object each sample "
               "is about (compositional generalisation)",
}


def _table_lines(split: str, table: Mapping[str, Mapping[str, float]]) -> list[str]:
  note = SPLIT_NOTES.get(split)
  lines = [f"## `{split}` split" + (f": {note}" if note else ""), "",
           "| task | metric | ours | chance | beats chance | samples |",
           "|---|---|---|---|---|---|"]
  for sub, row in sorted(table.items()):
    lines.append(f"| {sub} | {primary_metric(sub)} | {_fmt(row['primary'])} | "
                 f"{_fmt(row['chance'])} | {'yes' if row['beats_chance'] else 'no'} | "
                 f"{int(row['n'])} |")
  n_beat = sum(bool(r["beats_chance"]) for r in table.values())
  return lines + ["", f"{n_beat} of {len(table)} subtasks beat chance.", ""]


def report_text(step: int, tables: Mapping[str, Mapping[str, Mapping[str, float]]], *,
                title: str, picture_files: Mapping[str, str] | None = None,
                loss_png: str | None = None, skipped: int = 0,
                notes: Sequence[str] = ()) -> str:
  """The markdown of the report (no I/O); `tables` maps split -> table, in order."""
  if not tables:
    raise ValueError("report_text needs at least one split's table")
  lines = [f"# {title}", "", f"Evaluation at step {int(step)}: free-running greedy answers "
           "(never teacher-forced); each subtask's primary metric beside the chance level of "
           "the same samples.", ""]
  lines += [line for n in notes for line in (n, "")]
  for split, table in tables.items():
    lines += _table_lines(split, table)
  if skipped:
    lines.append(f"{skipped} evaluation samples did not fit the layout and were not scored.")
  if loss_png:
    lines += ["", "## Loss", "", f"![loss curves]({loss_png})"]
  if picture_files:
    lines += ["", "## Answers", ""]
    for tag, path in sorted(picture_files.items()):
      lines += [f"**{tag}**", "", f"![{tag}]({path})", ""]
  return "\n".join(lines).rstrip() + "\n"


def write_report(workdir: str, step: int,
                 tables: Mapping[str, Mapping[str, Mapping[str, float]]], *,
                 title: str = "VITRON on PixelWorld",
                 pictures: Mapping[str, tuple[bytes, int, int]] | None = None,
                 skipped: int = 0, notes: Sequence[str] = ()) -> str:
  """Writes `<workdir>/report.md` (and its pictures: `{tag: (PNG or GIF bytes, height, width)}`;
  `notes`: paragraphs under the introduction); returns its path."""
  files = {}
  if pictures:
    os.makedirs(os.path.join(workdir, PICTURE_DIR), exist_ok=True)
    for tag, (data, _, _) in pictures.items():
      rel = f"{PICTURE_DIR}/{_file_name(tag, data)}"
      with open(os.path.join(workdir, rel), "wb") as f:
        f.write(data)
      files[tag] = rel
  loss = "loss.png" if os.path.exists(os.path.join(workdir, "loss.png")) else None
  text = report_text(step, tables, title=title, picture_files=files,
                     loss_png=loss, skipped=skipped, notes=notes)
  return str(write_text(text, os.path.join(workdir, REPORT)))
