"""SAM's prompt encoder in Flax: random-Fourier positional encoding of points and box corners,
learned point-type embeddings, and the convolutional embedding of dense mask prompts.

Names follow transformers' `SamPromptEncoder` (`mask_embed/{conv1,conv2,conv3,layer_norm1,
layer_norm2}`, `no_mask_embed`, `point_embed_{0..3}`, `not_a_point_embed`). The Fourier matrix
is the model-level `shared_image_embedding` (tied in transformers), passed in as `pe`.

Coordinates are pixels in the model frame (the resized, padded `S x S` input):
points `[B, P, N, 2]` as (x, y), labels `[B, P, N]` with 1 = foreground, 0 = background,
-1 = not-a-point, -10 = padding (ignored); boxes `[B, P, 4]` as (x1, y1, x2, y2); mask prompts
`[B, 4E, 4E]` logits. Sparse output `[B, P, n_tokens, C]`, dense output `[B, E, E, C]`.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vitron_jax.backends.segmentation.config import SamPromptEncoderConfig
from vitron_jax.backends.segmentation.layers import Conv2d, TokenTable
from vitron_jax.nn.mlp import activation
from vitron_jax.nn.norms import LayerNorm

LABEL_PAD = -10
LABEL_NOT_A_POINT = -1


class PositionalEmbedding(nn.Module):
  """Random Fourier features of normalised coordinates: `[..., 2] in [0,1] -> [..., 2F]`."""
  num_pos_feats: int
  scale: float

  @nn.compact
  def __call__(self, coords: jax.Array) -> jax.Array:
    matrix = self.param("positional_embedding",
                        nn.with_logical_partitioning(nn.initializers.normal(self.scale),
                                                     (None, "embed")),
                        (2, self.num_pos_feats))
    c = 2.0 * coords.astype(jnp.float32) - 1.0
    c = 2.0 * np.pi * (c @ matrix.astype(jnp.float32))
    return jnp.concatenate([jnp.sin(c), jnp.cos(c)], axis=-1)

  def grid(self, size: int) -> jax.Array:
    """Image-wide positional embedding `[size, size, 2F]` at pixel-cell centres."""
    centres = (jnp.arange(size, dtype=jnp.float32) + 0.5) / size
    x = jnp.broadcast_to(centres[None, :], (size, size))
    y = jnp.broadcast_to(centres[:, None], (size, size))
    return self(jnp.stack([x, y], axis=-1))


class SamMaskEmbedding(nn.Module):
  """Mask logits `[B, 4E, 4E]` -> dense embedding `[B, E, E, C]` (two stride-2 convs + 1x1)."""
  config: SamPromptEncoderConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, masks: jax.Array) -> jax.Array:
    cfg = self.config
    act = activation(cfg.hidden_act)
    c4 = cfg.mask_input_channels // 4
    x = masks[..., None].astype(self.dtype)
    x = Conv2d(c4, 2, stride=2, dtype=self.dtype, name="conv1")(x)
    x = act(LayerNorm(eps=cfg.layer_norm_eps, dtype=self.dtype, name="layer_norm1")(x))
    x = Conv2d(cfg.mask_input_channels, 2, stride=2, dtype=self.dtype, name="conv2")(x)
    x = act(LayerNorm(eps=cfg.layer_norm_eps, dtype=self.dtype, name="layer_norm2")(x))
    return Conv2d(cfg.hidden_size, 1, dtype=self.dtype, name="conv3")(x)


class SamPromptEncoder(nn.Module):
  """Sparse (points, boxes) and dense (mask) prompt embeddings."""
  config: SamPromptEncoderConfig
  pe: nn.Module  # the shared PositionalEmbedding
  dtype: Any = jnp.float32

  def setup(self):
    cfg = self.config
    self.mask_embed = SamMaskEmbedding(cfg, dtype=self.dtype)
    self.no_mask_embed = TokenTable(1, cfg.hidden_size)
    self.point_embed = [TokenTable(1, cfg.hidden_size) for _ in range(cfg.num_point_embeddings)]
    self.not_a_point_embed = TokenTable(1, cfg.hidden_size)

  def _normalise(self, coords: jax.Array) -> jax.Array:
    return (coords.astype(jnp.float32) + 0.5) / self.config.image_size

  def embed_points(self, points: jax.Array, labels: jax.Array, pad: bool) -> jax.Array:
    """`[B, P, N, 2]`, `[B, P, N]` -> `[B, P, N (+1 if pad), C]`."""
    if pad:
      b, p = points.shape[:2]
      points = jnp.concatenate([points, jnp.full((b, p, 1, 2), -0.5, points.dtype)], axis=2)
      labels = jnp.concatenate([labels, jnp.full((b, p, 1), LABEL_NOT_A_POINT, labels.dtype)],
                               axis=2)
    emb = self.pe(self._normalise(points))
    lab = labels[..., None]
    emb = jnp.where(lab == LABEL_NOT_A_POINT, self.not_a_point_embed()[0], emb)
    emb = jnp.where(lab == LABEL_PAD, 0.0, emb)
    emb = emb + jnp.where(lab == 0, self.point_embed[0]()[0], 0.0)
    emb = emb + jnp.where(lab == 1, self.point_embed[1]()[0], 0.0)
    return emb.astype(self.dtype)

  def embed_boxes(self, boxes: jax.Array) -> jax.Array:
    """`[B, P, 4]` -> `[B, P, 2, C]` (corner encodings plus corner-type embeddings)."""
    b, p = boxes.shape[:2]
    emb = self.pe(self._normalise(boxes.reshape(b, p, 2, 2)))
    corners = jnp.stack([self.point_embed[2]()[0], self.point_embed[3]()[0]])
    return (emb + corners).astype(self.dtype)

  def embed_masks(self, masks: jax.Array) -> jax.Array:
    return self.mask_embed(masks)

  def encode_sparse(self, points: jax.Array | None = None, labels: jax.Array | None = None,
                    boxes: jax.Array | None = None) -> jax.Array | None:
    """Sparse tokens `[B, P, n, C]` of points (padded with a not-a-point without boxes) and
    box corners, or None without either."""
    sparse = None
    if points is not None:
      if labels is None:
        labels = jnp.ones(points.shape[:-1], jnp.int32)
      sparse = self.embed_points(points, labels, pad=boxes is None)
    if boxes is not None:
      box = self.embed_boxes(boxes)
      sparse = box if sparse is None else jnp.concatenate([sparse, box], axis=2)
    return sparse

  def encode_dense(self, batch_size: int, masks: jax.Array | None = None) -> jax.Array:
    """Dense embedding `[B, E, E, C]` of mask logits, or the learned no-mask embedding."""
    cfg = self.config
    if masks is not None:
      return self.embed_masks(masks)
    e = cfg.image_embedding_size
    return jnp.broadcast_to(self.no_mask_embed()[0].astype(self.dtype),
                            (batch_size, e, e, cfg.hidden_size))

  def __call__(self, batch_size: int, points: jax.Array | None = None,
               labels: jax.Array | None = None, boxes: jax.Array | None = None,
               masks: jax.Array | None = None) -> tuple[jax.Array | None, jax.Array]:
    """Returns (sparse `[B, P, n, C]` or None, dense `[B, E, E, C]`)."""
    return self.encode_sparse(points, labels, boxes), self.encode_dense(batch_size, masks)
