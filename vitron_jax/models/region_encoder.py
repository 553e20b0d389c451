"""The region encoder: mask pooling over several ViT layers plus an encoding of the box.

Inputs come from `vitron_jax.models.region_inputs` (boxes, masks and scribbles all became
binary masks there, with the mask's normalised bounding box):

* features: one array per chosen ViT layer, `[B, S, T, gh, gw, C]` (S images or videos per
  sample, T frames; T = 1 for images);
* masks `[B, R, T, H, W]` (pixels, H and W multiples of gh and gw), boxes `[B, R, T, 4]`,
  frame_valid `[B, R, T]`, source `[B, R]` (which of the S the region is drawn on).

Each mask is area-pooled onto the patch grid (the fraction of each patch it covers); each
layer's feature map is averaged under those weights over space and the frames where the region
is present. A region's box encoding (Fourier features of the frame-averaged normalised box
through a small MLP) is added. `tokens="fused"` sums the projected layers into one token per
region; `tokens="per_layer"` keeps one token per layer. Output `[B, R, n_tokens, out_features]`.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vitron_jax.models.region_inputs import RegionError
from vitron_jax.nn.layers import Dense
from vitron_jax.nn.norms import LayerNorm

REGION_TOKEN_MODES = ("fused", "per_layer")


def tokens_per_region(mode: str, num_layers: int) -> int:
  if mode not in REGION_TOKEN_MODES:
    raise ValueError(f"region token mode must be one of {REGION_TOKEN_MODES}, got {mode!r}")
  return 1 if mode == "fused" else num_layers


def grid_weights(masks: jax.Array, grid: tuple[int, int]) -> jax.Array:
  """`[..., H, W]` masks -> `[..., gh, gw]` fraction of each patch covered."""
  *lead, h, w = masks.shape
  gh, gw = grid
  if h % gh or w % gw:
    raise ValueError(f"region masks of {h}x{w} pixels do not tile the {gh}x{gw} patch grid "
                     "(expected the image size, a multiple of the grid)")
  m = masks.reshape(*lead, gh, h // gh, gw, w // gw).astype(jnp.float32)
  return m.mean(axis=(-3, -1))


def box_fourier_features(boxes: jax.Array, num_freqs: int) -> jax.Array:
  """`[..., 4]` normalised boxes -> `[..., 4 + 8 * num_freqs]` (raw, sin and cos features)."""
  freqs = jnp.pi * (2.0 ** jnp.arange(num_freqs, dtype=jnp.float32))
  ang = boxes[..., None].astype(jnp.float32) * freqs  # [..., 4, F]
  feats = jnp.concatenate([jnp.sin(ang), jnp.cos(ang)], -1).reshape(*boxes.shape[:-1], -1)
  return jnp.concatenate([boxes.astype(jnp.float32), feats], -1)


def check_regions(masks, frame_valid, valid, name: str = "regions") -> None:
  """On concrete inputs: every valid region must have area in some present frame."""
  if isinstance(masks, jax.core.Tracer) or isinstance(valid, jax.core.Tracer):
    return
  m = np.asarray(masks)
  fv = np.asarray(frame_valid, bool)
  area = (m.reshape(*m.shape[:3], -1).sum(-1) * fv).sum(-1)  # [B, R]
  bad = np.argwhere(np.asarray(valid, bool) & (area <= 0))
  if bad.size:
    i, j = bad[0]
    raise RegionError(f"{name}: sample {i} region {j} has zero area (its mask is empty in "
                      "every present frame)")


class BoxEncoder(nn.Module):
  """Fourier box features `[..., F]` -> `[..., out_features]` (`fc2(gelu(fc1(x)))`)."""
  out_features: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    h = Dense(self.out_features, axes=(None, "mlp"), name="fc1", **kw)(x.astype(self.dtype))
    return Dense(self.out_features, axes=("mlp", "embed"), name="fc2", **kw)(jax.nn.gelu(h))


class RegionEncoder(nn.Module):
  """Mask-pooled multi-layer features + box encoding -> `[B, R, n_tokens, out_features]`."""
  out_features: int
  num_layers: int
  tokens: str = "fused"
  box_freqs: int = 8
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: Sequence[jax.Array], masks: jax.Array, boxes: jax.Array,
               frame_valid: jax.Array, source: jax.Array,
               valid: jax.Array | None = None) -> jax.Array:
    features = tuple(features)
    if len(features) != self.num_layers:
      raise ValueError(f"region encoder expects {self.num_layers} feature maps (one per "
                       f"chosen ViT layer), got {len(features)}")
    if masks.ndim != 5:
      raise ValueError(f"region masks must be [batch, regions, frames, H, W], got shape "
                       f"{tuple(masks.shape)}")
    b, r, t = masks.shape[:3]
    f0 = features[0]
    if f0.ndim != 6 or f0.shape[0] != b or f0.shape[2] != t:
      raise ValueError(f"region features must be [batch={b}, sources, frames={t}, gh, gw, C], "
                       f"got shape {tuple(f0.shape)}")
    if boxes.shape != (b, r, t, 4) or frame_valid.shape != (b, r, t) or source.shape != (b, r):
      raise ValueError(f"region boxes {tuple(boxes.shape)}, frame_valid "
                       f"{tuple(frame_valid.shape)} and source {tuple(source.shape)} must be "
                       f"{(b, r, t, 4)}, {(b, r, t)} and {(b, r)}")
    if valid is None:
      valid = jnp.any(frame_valid, -1)
    check_regions(masks, frame_valid, valid)
    tokens_per_region(self.tokens, self.num_layers)
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)

    fv = frame_valid.astype(jnp.float32)
    w = grid_weights(masks, f0.shape[3:5]) * fv[..., None, None]    # [B, R, T, gh, gw]
    onehot = jax.nn.one_hot(source, f0.shape[1], dtype=jnp.float32)  # [B, R, S]
    total = jnp.maximum(jnp.sum(w, axis=(2, 3, 4)), 1e-6)            # [B, R]
    per_layer = []
    for i, f in enumerate(features):
      pooled = jnp.einsum("brs,brtij,bstijc->brc", onehot, w, f.astype(jnp.float32))
      pooled = (pooled / total[..., None]).astype(self.dtype)
      pooled = LayerNorm(name=f"layer_norm_{i}", **kw)(pooled)
      per_layer.append(Dense(self.out_features, axes=(None, "embed"), name=f"layer_proj_{i}",
                             **kw)(pooled))
    nframes = jnp.maximum(jnp.sum(fv, -1, keepdims=True), 1.0)
    box = jnp.sum(boxes.astype(jnp.float32) * fv[..., None], axis=2) / nframes  # [B, R, 4]
    box_enc = BoxEncoder(self.out_features, name="box_encoder", **kw)(
        box_fourier_features(box, self.box_freqs))
    if self.tokens == "fused":
      out = (sum(per_layer) + box_enc)[:, :, None]
    else:
      out = jnp.stack(per_layer, axis=2) + box_enc[:, :, None]
    return out.astype(self.dtype)
