"""VITRON on PixelWorld: every task cluster of the built-in world, trained and evaluated.

    vitron-train --config=experiments/pixelworld.py:quick --workdir=/tmp/pw_quick
    vitron-train --config=experiments/pixelworld.py --workdir=/tmp/pw        # longer, 64 px

"quick": the tiny model (`vitron_tiny.py`), 32 px images, 2-frame videos, image tasks, a few
hundred steps on CPU; the evaluation (held-out split, PixelWorld metrics: attribute accuracy,
box IoU, mask IoU, routing accuracy, colour / shape checks of generated pictures) runs at the
end and is compared with each metric's chance level. "" (default): all tasks, 64 px, 8 frames.
Sweep: routing modes (text / embedding / hybrid / superlink), the DESIGN.md §3 ablation.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import phase_data  # noqa: E402

import ml_collections  # noqa: E402


def get_config(arg: str = ""):
  if arg not in ("", "quick"):
    raise ValueError(f"pixelworld: argument must be '' or 'quick', got {arg!r}")
  quick = arg == "quick"
  c = phase_data.phase_config("3", "tiny" if quick else "")
  c.data.sources = (("pixelworld", "image" if quick else None, 1.0),)
  c.data.pixelworld = ml_collections.ConfigDict(dict(
      image_size=32 if quick else 64, num_frames=2 if quick else 8, max_objects=3 if quick
      else 4, seed=0))
  c.optim.trainable = ()                 # everything but the frozen vision tower trains
  c.optim.freeze = (r"^frontend/vision_tower/",)
  c.optim.lr = 3e-3 if quick else 1e-3
  c.optim.warmup_steps = 20
  c.train.steps = 300 if quick else 5000
  c.train.log_every = 10
  c.train.eval_every = 0 if quick else 1000
  c.train.eval_at_end = True
  c.eval = ml_collections.ConfigDict(dict(split="heldout", num_samples=64 if quick else 500,
                                          pictures=4))
  c.checkpoint.every_steps = 100 if quick else 1000
  return c


def get_sweep(arg: str = ""):
  return [{"model.head.routing": r} for r in ("text", "embedding", "hybrid", "superlink")]
