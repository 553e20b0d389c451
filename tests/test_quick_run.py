"""The quick PixelWorld run, exactly as a user starts it (`vitron-train
--config=experiments/pixelworld.py:quick`, nothing overridden but the workdir): it finishes and
its evaluation (free-running answers on unseen samples) beats chance on every task it trains,
the masks its frozen segmenter makes from the answers included. About twelve minutes on 2 CPU
cores."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from train_runs import ROOT, child_env

sys.path.insert(0, str(ROOT / "experiments"))
import pixelworld as EP  # noqa: E402


@pytest.mark.slow
@pytest.mark.runs_first
def test_quick_run_beats_chance_on_every_task_it_trains(tmp_path):
  exe = Path(sys.executable).with_name("vitron-train")
  proc = subprocess.run([str(exe), "--config=experiments/pixelworld.py:quick",
                         f"--workdir={tmp_path}"], cwd=ROOT, env=child_env(devices=1),
                        capture_output=True, text=True, timeout=1500, check=False)
  assert proc.returncode == 0, proc.stderr[-4000:]
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["final_step"] == EP.get_config("quick").train.steps
  ev = summary["eval"]
  trained = EP.QUICK_UNDERSTAND + EP.QUICK_INVOKE
  table = {sub: (ev[f"{sub}/primary"], ev[f"{sub}/chance"], ev[f"{sub}/n"]) for sub in trained}
  print("\nval split (ours, chance, samples):", table)
  assert all(n >= 32 for _, _, n in table.values()), table
  assert all(ours > chance for ours, chance, _ in table.values()), table
  assert ev["beats_chance_all"] == 1.0
  # the segmenter (stage s0, frozen in the step) made masks from the answers; they beat random
  # boxes (its own quality is measured by the stage: box + text and text alone)
  assert ev["ref_seg_masks/n"] >= 32 and ev["ref_seg_masks/primary"] > ev["ref_seg_masks/chance"]
  seg = json.loads((tmp_path / "stages" / "s0_segmenter" / "summary.json").read_text())["eval"]
  assert seg["mask_iou"] > 0.2 and seg["text_mask_iou"] > 0.2, seg
  # the vision stage ran first and its tower sees objects, not only backgrounds
  stage = json.loads((tmp_path / "stages" / "s1_vision" / "summary.json").read_text())["eval"]
  assert stage["retrieval_accuracy"] > 10 * stage["chance"], stage
  # the held-out split (unseen attribute combinations) is scored and reported beside it
  assert all(f"heldout/{sub}/primary" in ev for sub in trained)
  report = (tmp_path / "report.md").read_text()
  assert "## `val` split" in report and "## `heldout` split" in report
  assert "| ref_seg_masks | mask_iou |" in report
