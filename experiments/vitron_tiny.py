"""A tiny VITRON (seconds on CPU): 2-layer Llama, 2-layer CLIP on 32x32 images, two backends.

    cfg = get_config()            # or get_config("embedding") to pick the routing mode
    vcfg = vitron_config_from(cfg.model, protocol_ids(tokenizer), len(tokenizer))

The model section (`cfg.model`) is what `vitron_jax.models.vitron_config.vitron_config_from`
reads; the rest follows the trainer's `base_config()`.
"""
from __future__ import annotations

import ml_collections

from vitron_jax.train.defaults import base_config, sweep_from

ROUTING = ("text", "embedding", "hybrid", "superlink")


def model_config(routing: str = "hybrid") -> ml_collections.ConfigDict:
  m = ml_collections.ConfigDict()
  m.llm = ml_collections.ConfigDict(dict(
      base_vocab_size=512, pad_vocab_to_multiple_of=64, hidden_size=64, intermediate_size=128,
      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
      max_position_embeddings=512, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2,
      pad_token_id=0, scan_layers=True, remat_policy="none"))
  m.frontend = ml_collections.ConfigDict(dict(
      vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, image_size=32, patch_size=8, projection_dim=32,
                  hidden_act="quick_gelu"),
      select_layer=-2, select_feature="patch", freeze_vision=True, projector="mlp2x_gelu",
      num_frames=2, video_tokens="per_frame", region_layers=(1, 2), region_tokens="fused",
      box_freqs=4))
  m.head = ml_collections.ConfigDict(dict(
      backends={"segment_image": {"num_queries": 2, "condition_shape": (4, 16)},
                "generate_image": {"num_queries": 4, "condition_shape": (8, 24)}},
      routing=routing, hybrid_combine="gated_sum", task_dim=32, shared_dim=32,
      projector_dim=32, projector_depth=1, projector_heads=4))
  m.synergy = ml_collections.ConfigDict(dict(mode="reversal", lam=0.1, d_model=32, depth=1,
                                             num_heads=4))
  return m


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  routing = arg or "hybrid"
  if routing not in ROUTING:
    raise ValueError(f"vitron_tiny: config argument must be a routing mode {ROUTING}, got "
                     f"{arg!r}")
  c = base_config()
  c.task.name = "vitron"
  c.model = model_config(routing)
  c.loss = ml_collections.ConfigDict(dict(lm=1.0, align=1.0, synergy=0.1, backend=1.0))
  c.train.steps = 20
  c.data.global_batch = 8
  c.mesh.rules = "fsdp"
  c.mesh.shape = ml_collections.ConfigDict({"data": 1, "fsdp": -1, "tensor": 1})
  return c


def sweep() -> list[dict]:
  """Routing-mode ablation."""
  return sweep_from([{"model.head.routing": r} for r in ROUTING])
