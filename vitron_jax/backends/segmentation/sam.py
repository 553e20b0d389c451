"""The whole SAM model in Flax, parameter tree shaped like transformers' `SamModel`.

    params = init_sam_params(config, rng)
    out = SamModel(config).apply({"params": params}, pixels, points=..., labels=...)

Methods (use with `apply(..., method=...)`):
* `embed_image(pixels [B, S, S, 3]) -> [B, E, E, C]` (the expensive part; once per image);
* `decode(image_embeddings, points, labels, boxes, mask_prompt, extra_tokens,
  multimask_output) -> (masks [B, P, M, 4E, 4E] logits, iou [B, P, M])`;
* `__call__(pixels, ...)` = both, returning a dict with `image_embeddings`, `pred_masks`,
  `iou_scores`.

`extra_tokens` `[B, K, C]` are appended to every mask's sparse prompts: this is how the VITRON
hybrid head's signal tokens (or a projected text embedding) condition the decoder. With no
point or box prompts they form the whole sparse prompt (one mask per image, P = 1).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vitron_jax.backends.segmentation.config import SamConfig
from vitron_jax.backends.segmentation.image_encoder import SamVisionEncoder
from vitron_jax.backends.segmentation.mask_decoder import SamMaskDecoder
from vitron_jax.backends.segmentation.prompt_encoder import PositionalEmbedding, SamPromptEncoder


def join_sparse(sparse: jax.Array | None, extra: jax.Array | None) -> jax.Array | None:
  """Append `extra` `[B, K, C]` to each of the P prompt sets of `sparse` `[B, P, n, C]`."""
  if extra is None:
    return sparse
  if sparse is None:
    return extra[:, None]
  b, p = sparse.shape[:2]
  if extra.shape[0] != b or extra.shape[-1] != sparse.shape[-1]:
    raise ValueError(f"extra prompt tokens {tuple(extra.shape)} do not fit sparse prompts "
                     f"{tuple(sparse.shape)}: expected [{b}, K, {sparse.shape[-1]}]")
  extra = jnp.broadcast_to(extra[:, None].astype(sparse.dtype), (b, p) + extra.shape[1:])
  return jnp.concatenate([sparse, extra], axis=2)


class SamModel(nn.Module):
  config: SamConfig

  def setup(self):
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)
    self.shared_image_embedding = PositionalEmbedding(cfg.vision.num_pos_feats,
                                                      float(cfg.vision.hidden_size // 2))
    self.vision_encoder = SamVisionEncoder(cfg.vision, dtype=dtype, remat=cfg.remat)
    self.prompt_encoder = SamPromptEncoder(cfg.prompt, pe=self.shared_image_embedding,
                                           dtype=dtype)
    self.mask_decoder = SamMaskDecoder(cfg.decoder, dtype=dtype)

  def embed_image(self, pixels: jax.Array) -> jax.Array:
    """`[B, S, S, 3]` normalised, padded pixels -> `[B, E, E, C]` image embeddings."""
    return self.vision_encoder(pixels)

  def image_positional_embeddings(self) -> jax.Array:
    """`[E, E, C]` dense positional encoding of the embedding grid."""
    return self.shared_image_embedding.grid(self.config.embedding_size)

  def check_prompts(self, image_embeddings, points, labels, boxes, mask_prompt, extra_tokens):
    """Static (shape) checks; value checks live in `processing.preprocess_*` (outside jit)."""
    cfg = self.config
    e, c, b = cfg.embedding_size, cfg.hidden_size, image_embeddings.shape[0]
    if image_embeddings.shape[1:] != (e, e, c):
      raise ValueError(f"image_embeddings must be [batch, {e}, {e}, {c}], got "
                       f"{tuple(image_embeddings.shape)}")
    if points is not None:
      if points.ndim != 4 or points.shape[-1] != 2 or points.shape[0] != b:
        raise ValueError(f"points must be [{b}, masks, points, 2] (x, y), got "
                         f"{tuple(points.shape)}")
      if labels is not None and labels.shape != points.shape[:-1]:
        raise ValueError(f"labels must be {tuple(points.shape[:-1])} to match points, got "
                         f"{tuple(labels.shape)}")
    if boxes is not None:
      if boxes.ndim != 3 or boxes.shape[-1] != 4 or boxes.shape[0] != b:
        raise ValueError(f"boxes must be [{b}, masks, 4] (x1, y1, x2, y2), got "
                         f"{tuple(boxes.shape)}")
      if points is not None and points.shape[1] != boxes.shape[1]:
        raise ValueError(f"points ({points.shape[1]} masks) and boxes ({boxes.shape[1]} masks) "
                         "must prompt the same number of masks")
    lr = cfg.low_res_size
    if mask_prompt is not None and tuple(mask_prompt.shape) != (b, lr, lr):
      raise ValueError(f"mask_prompt must be low-resolution logits [{b}, {lr}, {lr}] "
                       f"(4x the {e}x{e} embedding grid), got {tuple(mask_prompt.shape)}")
    if extra_tokens is not None and (extra_tokens.ndim != 3 or extra_tokens.shape[0] != b
                                     or extra_tokens.shape[-1] != c):
      raise ValueError(f"extra prompt tokens (signal condition) must be [{b}, K, {c}], got "
                       f"{tuple(extra_tokens.shape)}")

  def decode(self, image_embeddings: jax.Array, points: jax.Array | None = None,
             labels: jax.Array | None = None, boxes: jax.Array | None = None,
             mask_prompt: jax.Array | None = None, extra_tokens: jax.Array | None = None,
             multimask_output: bool = True) -> tuple[jax.Array, jax.Array]:
    """Masks `[B, P, M, 4E, 4E]` (logits) and IoU predictions `[B, P, M]`."""
    self.check_prompts(image_embeddings, points, labels, boxes, mask_prompt, extra_tokens)
    dense = self.encode_dense(mask_prompt, image_embeddings.shape[0])
    return self.decode_dense(image_embeddings, dense, points, labels, boxes, extra_tokens,
                             multimask_output)

  def decode_dense(self, image_embeddings: jax.Array, dense: jax.Array,
                   points: jax.Array | None = None, labels: jax.Array | None = None,
                   boxes: jax.Array | None = None, extra_tokens: jax.Array | None = None,
                   multimask_output: bool = True) -> tuple[jax.Array, jax.Array]:
    """`decode` with an already embedded dense prompt `[B, E, E, C]` (used by tracking)."""
    self.check_prompts(image_embeddings, points, labels, boxes, None, extra_tokens)
    sparse = join_sparse(self.prompt_encoder.encode_sparse(points, labels, boxes), extra_tokens)
    return self.mask_decoder(image_embeddings, self.image_positional_embeddings(), sparse,
                             dense, multimask_output)

  def encode_dense(self, mask_prompt: jax.Array | None, batch_size: int) -> jax.Array:
    """Dense prompt embedding `[B, E, E, C]` (the no-mask embedding when None)."""
    return self.prompt_encoder.encode_dense(batch_size, mask_prompt)

  def __call__(self, pixels: jax.Array, points: jax.Array | None = None,
               labels: jax.Array | None = None, boxes: jax.Array | None = None,
               mask_prompt: jax.Array | None = None, extra_tokens: jax.Array | None = None,
               multimask_output: bool = True) -> dict[str, jax.Array]:
    emb = self.embed_image(pixels)
    masks, iou = self.decode(emb, points, labels, boxes, mask_prompt, extra_tokens,
                             multimask_output)
    return {"image_embeddings": emb, "pred_masks": masks, "iou_scores": iou}

  def init_all(self, pixels: jax.Array) -> dict[str, jax.Array]:
    """Touches every parameter (points, boxes and a mask prompt); used by `init_sam_params`."""
    b = pixels.shape[0]
    lr = self.config.low_res_size
    points = jnp.zeros((b, 1, 1, 2), jnp.float32)
    boxes = jnp.tile(jnp.array([[[0.0, 0.0, 1.0, 1.0]]]), (b, 1, 1))
    self.encode_dense(None, b)
    return self(pixels, points=points, labels=jnp.ones((b, 1, 1), jnp.int32), boxes=boxes,
                mask_prompt=jnp.zeros((b, lr, lr), jnp.float32))


def init_sam_params(config: SamConfig, rng: jax.Array, boxed: bool = False) -> Any:
  """Random SAM parameters (the `params` collection); `boxed` keeps the logical-axis boxes."""
  s = config.image_size
  variables = SamModel(config).init(rng, jnp.zeros((1, s, s, config.vision.num_channels)),
                                    method=SamModel.init_all)
  params = variables["params"]
  return params if boxed else nn.meta.unbox(params)
