"""VITRON at the paper's size: Vicuna-7B v1.5 + CLIP ViT-L/14-336 + every backend module.

    cfg = get_config()             # phase "3" (cross-task synergy), hybrid routing
    cfg = get_config("1.1")        # a training phase of DESIGN.md §5: 1.1, 1.2, 1.3, 2, 3
    vcfg = vitron_config_from(cfg.model)   # canonical protocol ids after Vicuna's 32000

Backend condition shapes (DESIGN.md §4): SAM-style segmentation takes 256-wide sparse prompt
tokens; SD-1.4 / GLIGEN takes the CLIP-L text condition (77 x 768); ZeroScope, I2VGen-XL and
the video editor take the OpenCLIP-H text condition (77 x 1024). K query slots: small for
segmentation, larger for diffusion.
"""
from __future__ import annotations

import ml_collections

from vitron_jax.train.defaults import base_config, sweep_from

PHASES = ("1.1", "1.2", "1.3", "2", "3")
BACKENDS = {
    "segment_image": {"num_queries": 8, "condition_shape": (8, 256)},
    "segment_video": {"num_queries": 8, "condition_shape": (8, 256)},
    "generate_image": {"num_queries": 32, "condition_shape": (77, 768)},
    "edit_image": {"num_queries": 32, "condition_shape": (77, 768)},
    "generate_video": {"num_queries": 32, "condition_shape": (77, 1024)},
    "image_to_video": {"num_queries": 32, "condition_shape": (77, 1024)},
    "edit_video": {"num_queries": 32, "condition_shape": (77, 1024)},
}
# what trains in each phase (regexes over parameter paths; the rest is frozen)
TRAINABLE = {
    "1.1": (r"^frontend/mm_projector/",),
    "1.2": (r"^frontend/mm_projector/", r"^frontend/region_encoder/", r"^llm/"),
    "1.3": (r"^head/",),
    "2": (r"^frontend/mm_projector/", r"^frontend/region_encoder/", r"^llm/"),
    "3": (r"^frontend/mm_projector/", r"^frontend/region_encoder/", r"^llm/", r"^head/",
          r"^discriminator/"),
}
LOSS = {  # lm, align, synergy, backend
    "1.1": (1.0, 0.0, 0.0, 0.0), "1.2": (1.0, 0.0, 0.0, 0.0), "1.3": (0.0, 1.0, 0.0, 1.0),
    "2": (1.0, 0.0, 0.0, 0.0), "3": (1.0, 1.0, 0.1, 1.0),
}


def model_config(routing: str = "hybrid") -> ml_collections.ConfigDict:
  m = ml_collections.ConfigDict()
  m.llm = ml_collections.ConfigDict(dict(
      preset="vicuna_7b", base_vocab_size=32000, pad_vocab_to_multiple_of=128,
      scan_layers=True, remat_policy="dots_with_no_batch_dims_saveable", dtype="bfloat16",
      param_dtype="float32"))
  m.frontend = ml_collections.ConfigDict(dict(
      vision="vit_l14_336", select_layer=-2, select_feature="patch", freeze_vision=True,
      projector="mlp2x_gelu", num_frames=8, video_tokens="per_frame",
      region_layers=(8, 16, 23), region_tokens="fused", box_freqs=8, dtype="bfloat16"))
  m.head = ml_collections.ConfigDict(dict(
      backends=BACKENDS, routing=routing, hybrid_combine="gated_sum", task_dim=1024,
      shared_dim=1024, projector_dim=1024, projector_depth=2, projector_heads=16,
      dtype="bfloat16"))
  m.synergy = ml_collections.ConfigDict(dict(mode="reversal", lam=0.1, d_model=512, depth=2,
                                             num_heads=8))
  return m


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  phase = arg or "3"
  if phase not in PHASES:
    raise ValueError(f"vitron_7b: config argument must be a phase {PHASES}, got {arg!r}")
  c = base_config()
  c.task.name = "vitron"
  c.phase = phase
  c.model = model_config()
  lm, align, syn, backend = LOSS[phase]
  c.loss = ml_collections.ConfigDict(dict(lm=lm, align=align, synergy=syn, backend=backend))
  c.optim.trainable = TRAINABLE[phase]
  c.optim.lr = 2e-5 if phase in ("1.2", "2", "3") else 1e-3
  c.optim.weight_decay = 0.0
  c.optim.warmup_steps = 300
  c.train.steps = 10000
  c.train.compute_dtype = "bfloat16"
  c.data.global_batch = 256
  c.mesh.rules = "fsdp_tensor"
  c.mesh.shape = ml_collections.ConfigDict({"data": 1, "fsdp": -1, "tensor": 1})
  return c


def sweep() -> list[dict]:
  """Routing-mode and synergy ablations (phase 3)."""
  return sweep_from([{"model.head.routing": r} for r in ("text", "embedding", "hybrid",
                                                           "superlink")]
                    + [{"model.synergy.mode": "off"}, {"model.synergy.lam": 1.0}])
