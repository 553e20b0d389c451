"""Tiny random transformers `SamModel`s for the parity tests (built in-process, no downloads)."""
from __future__ import annotations

import numpy as np
import torch
from transformers import (SamConfig as HFSamConfig, SamMaskDecoderConfig, SamModel as HFSamModel,
                          SamPromptEncoderConfig, SamVisionConfig)

# Two configurations that exercise different paths: A pads 8x8 grids into 3x3 windows and
# uses one global layer; B has no qkv bias, two global layers, 3 vision heads, a deeper IoU
# head and a 128-px input.
CONFIGS = {
    "A": dict(
        vision=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, image_size=64,
                    patch_size=8, window_size=3, global_attn_indexes=[1], output_channels=16,
                    num_pos_feats=8, mlp_dim=64),
        prompt=dict(hidden_size=16, image_size=64, patch_size=8, mask_input_channels=8),
        decoder=dict(hidden_size=16, mlp_dim=32, num_attention_heads=2, iou_head_hidden_dim=16)),
    "B": dict(
        vision=dict(hidden_size=48, num_hidden_layers=3, num_attention_heads=3, image_size=128,
                    patch_size=16, window_size=4, global_attn_indexes=[0, 2], output_channels=32,
                    num_pos_feats=16, mlp_dim=96, qkv_bias=False),
        prompt=dict(hidden_size=32, image_size=128, patch_size=16, mask_input_channels=16),
        decoder=dict(hidden_size=32, mlp_dim=48, num_attention_heads=4, iou_head_hidden_dim=24,
                     iou_head_depth=4, num_hidden_layers=2)),
}


def tiny_hf_sam(name: str, seed: int = 0) -> HFSamModel:
  """A random fp32 transformers SamModel; every parameter re-drawn so that none is trivial
  (transformers zero-initialises the relative/absolute positions)."""
  c = CONFIGS[name]
  torch.manual_seed(seed)
  config = HFSamConfig(vision_config=SamVisionConfig(**c["vision"]),
                       prompt_encoder_config=SamPromptEncoderConfig(**c["prompt"]),
                       mask_decoder_config=SamMaskDecoderConfig(**c["decoder"]))
  model = HFSamModel(config).eval()
  with torch.no_grad():
    for n, p in model.named_parameters():
      if "layer_norm" in n and n.endswith("weight"):
        p.copy_(1.0 + 0.1 * torch.randn_like(p))
      else:
        p.copy_(0.3 * torch.randn_like(p))
  return model


def state_dict_numpy(model: HFSamModel) -> dict[str, np.ndarray]:
  return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def hf_outputs(model: HFSamModel, pixels_nchw: np.ndarray, multimask_output: bool = True,
               **prompts) -> dict[str, np.ndarray]:
  """Run the reference; prompts are numpy (`input_points`, `input_labels`, `input_boxes`,
  `input_masks` `[B, 1, 4E, 4E]`)."""
  kw = {k: torch.from_numpy(np.asarray(v)) for k, v in prompts.items() if v is not None}
  with torch.no_grad():
    out = model(pixel_values=torch.from_numpy(pixels_nchw), multimask_output=multimask_output,
                **kw)
    emb = model.get_image_embeddings(torch.from_numpy(pixels_nchw))
  return {"image_embeddings": emb.permute(0, 2, 3, 1).numpy(),
          "pred_masks": out.pred_masks.numpy(), "iou_scores": out.iou_scores.numpy()}
