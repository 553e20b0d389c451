"""Shared by the phase configs (`phase*.py`): model and phase settings, data mixtures, sweeps.

The model section, what trains (`optim.trainable`) and the loss weights of each phase come
from `vitron_7b.py` (paper size) or, with the "tiny" argument, `vitron_tiny.py` with the
same phase settings. The data section is a weighted mixture (`data.sources`): each entry is
``(kind, where, weight)`` with kind "pixelworld" (where = tasks, e.g. "understanding" or
"image_qa,ref_box") or "llava_json" (where = a LLaVA / Vitron JSON folder, built to tfds on
first use). The paper's corpora per phase are listed in `PAPER_DATA` for reference: point
`llava_json` entries at their local copies.
"""
from __future__ import annotations

import importlib.util
import os

import ml_collections

HERE = os.path.dirname(os.path.abspath(__file__))

# PixelWorld stand-ins per phase (every corpus of the paper has a PixelWorld task cluster)
PIXELWORLD = {
    "1.1": (("pixelworld", "image_caption,video_caption", 1.0),),
    "1.2": (("pixelworld", "understanding", 0.4), ("pixelworld", "segmentation", 0.2),
            ("pixelworld", "generation", 0.2), ("pixelworld", "editing", 0.2)),
    "1.3": (("pixelworld", "segmentation", 0.4), ("pixelworld", "generation", 0.3),
            ("pixelworld", "editing", 0.3)),
    "2": (("pixelworld", "grounding", 0.5), ("pixelworld", "region_caption,grounded_qa", 0.5)),
    "3": (("pixelworld", None, 1.0),),
}
PAPER_DATA = {
    "1.1": "CC3M / LLaVA-Pretrain-558K captions, WebVid captions",
    "1.2": "LLaVA-Instruct, Video-ChatGPT, invocation-oriented instructions (Vitron)",
    "1.3": "captions paired with backend conditions (COCO, WebVid, RefCOCO masks, edit pairs)",
    "2": "RefCOCO/+/g, Flickr30K boxes, VidSTG / HC-STVG spans, grounded QA",
    "3": "the union of the backend tasks (segmentation, generation, editing)",
}


def _load(name: str):
  spec = importlib.util.spec_from_file_location(f"_exp_{name}", os.path.join(HERE, f"{name}.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def phase_config(phase: str, arg: str = "") -> ml_collections.ConfigDict:
  if arg not in ("", "tiny"):
    raise ValueError(f"phase {phase}: config argument must be '' (paper size) or 'tiny', got "
                     f"{arg!r}")
  big = _load("vitron_7b")
  c = big.get_config(phase)
  if arg == "tiny":
    tiny = _load("vitron_tiny").get_config()
    c.model = tiny.model
    c.train.steps = 20
    c.train.compute_dtype = "float32"
    c.data.global_batch = 8
    c.optim.warmup_steps = 2
    c.mesh.rules = tiny.mesh.rules
    c.mesh.shape = tiny.mesh.shape
  c.data.sources = PIXELWORLD[phase]
  c.data.pixelworld = ml_collections.ConfigDict(dict(
      image_size=32 if arg == "tiny" else 64, num_frames=2 if arg == "tiny" else 8,
      max_objects=4, seed=0))
  if phase == "2":  # grounding tuning: LoRA on the LLM (full tuning: --config.lora.enabled=False)
    c.lora.enabled = True
    c.lora.rank = 8 if arg == "tiny" else 128
    c.lora.alpha = 16.0 if arg == "tiny" else 256.0
    c.lora.targets = r"^llm/.*(self_attn/(q_proj|k_proj|v_proj|o_proj)|mlp/(gate_proj|up_proj|down_proj))/kernel$"
    c.lora.freeze_base = False            # optim.trainable decides (LLM base frozen below)
    c.optim.trainable = (r"^lora/", r"^model/frontend/mm_projector/",
                         r"^model/frontend/region_encoder/")
    c.optim.lr = 2e-4
  c.task.components = ml_collections.ConfigDict({
      "llm": r"^(model/)?llm/", "vision": r"^(model/)?frontend/vision_tower/",
      "frontend": r"^(model/)?frontend/(mm_projector|region_encoder)/",
      "head": r"^(model/)?head/", "discriminator": r"^(model/)?discriminator/"})
  return c


def phase_sweep(phase: str, arg: str = "") -> list[dict]:
  """Learning-rate sweep of a phase (and, for phase 3, the synergy weight)."""
  c = phase_config(phase, arg)
  runs = [{"optim.lr": c.optim.lr * f} for f in (0.5, 1.0, 2.0)]
  if phase == "3":
    runs += [{"model.synergy.lam": lam} for lam in (0.0, 0.3, 1.0)]
  return runs
