"""The quick PixelWorld run, exactly as a user starts it (`vitron-train
--config=experiments/pixelworld.py:quick`, nothing overridden but the workdir): it finishes and
its evaluation (free-running answers on unseen samples) beats chance on every task it trains,
the masks its frozen segmenter makes from the answers included; then `vitron-chat` on the run
(the trained model itself writes the segmentation invocation, chat runs the run's segmenter on
it and writes the mask). About thirteen minutes on 2 CPU cores."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from train_runs import ROOT, child_env
from vitron_jax.protocol import invocation as I

sys.path.insert(0, str(ROOT / "experiments"))
import pixelworld as EP  # noqa: E402


@pytest.mark.slow
@pytest.mark.runs_first
def test_quick_run_beats_chance_on_every_task_it_trains(tmp_path):
  exe = Path(sys.executable).with_name("vitron-train")
  # the timeout guards against a hang, not a speed bar: ~19 min beside a busy second worker,
  # more than 25 on a slow day (fresh-clone CI at 9b16a3d)
  proc = subprocess.run([str(exe), "--config=experiments/pixelworld.py:quick",
                         f"--workdir={tmp_path}"], cwd=ROOT, env=child_env(devices=1),
                        capture_output=True, text=True, timeout=2700, check=False)
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
  _chat_with_the_run(tmp_path)


def _chat_with_the_run(workdir: Path) -> None:
  """Two scripted `vitron-chat` turns on a val image whose evaluated answer invoked the
  segmenter: the prompt the evaluation asked (turn 1), then "Describe this image."."""
  from vitron_jax.train.task import build_task  # pylint: disable=import-outside-toplevel
  (path,) = (workdir / "eval").glob("answers_*.jsonl")
  lines = [json.loads(x) for x in path.read_text().splitlines()]
  segmented = [x for x in lines if x["split"] == "val" and x["subtask"] == "ref_seg"
               and getattr(I.find_invocation(x["answer"]), "module", "") == "segment_image"]
  assert segmented, "no val ref_seg answer invoked the segmenter"
  hit = segmented[0]
  sample = {s["id"]: s for s in build_task(EP.get_config("quick")).eval_samples("val")}[hit["id"]]
  image = workdir / "chat_image.png"
  PIL.Image.fromarray(sample["images"][0]).save(image)
  ask = hit["prompt"].replace("<image>\n", "")  # chat puts the image placeholder back
  exe = Path(sys.executable).with_name("vitron-chat")
  out = workdir / "chat"
  proc = subprocess.run([str(exe), f"--workdir={workdir}", f"--image={image}", f"--say={ask}",
                         "--say=Describe this image.", "--max_new_tokens=48",
                         f"--out_dir={out}"], cwd=ROOT, env=child_env(devices=1),
                        capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-4000:]
  assert proc.stdout.count("VITRON:") == 2, proc.stdout
  first = proc.stdout.split("USER: Describe this image.")[0]
  assert "<seg_image>" in first and "[ran segment_image (built in; " in first, proc.stdout
  mask = np.asarray(PIL.Image.open(out / "turn1_segment_image_mask.png"))
  assert mask.shape == sample["images"][0].shape[:2] and set(np.unique(mask)) <= {0, 255}
  assert PIL.Image.open(out / "turn1_segment_image_overlay.png").size == (128, 128)
