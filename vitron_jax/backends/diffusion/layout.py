"""Grounding as a spatial input: the boxes and phrase embeddings of `GligenInputs` drawn on the
image grid and appended to the UNet's input channels (GLIGEN's spatially aligned conditions,
which it concatenates to the UNet input, applied to its own box grounding).

GLIGEN's box tokens reach the image through gated self-attention only; at PixelWorld size that
attention runs on 4 x 4 / 8 x 8 grids, where a 4-8 px object is one cell, and within the
stages' step budgets the objects stayed blobs wider than their boxes (BUILD_NOTES.md). The
layout gives every position the phrase that covers it, so drawing an object in its box is a
local map the UNet's convolutions learn directly.

`layout_map(grounding, height, width, factor)` -> `[B, h, w, D + factor^2]` on the latent grid
(`h = height / factor`):

* channels `[:D]`: per latent cell, the mean over its pixels of the sum of the phrase
  embeddings whose boxes cover the pixel;
* channels `[D:]`: the union of the boxes at pixel resolution, each `factor x factor` block
  stacked (space-to-depth, row-major), so the boxes' edges stay exact on a coarse grid.

A pixel `(y, x)` is covered by box `(x0, y0, x1, y1)` (normalised) when its centre is inside:
`x0 <= (x + 0.5) / W < x1` and the same in y, which is exactly the half-open integer pixel box
`[x0 W, x1 W)` when the box came from one. Padding slots (mask 0) draw nothing, so a prompt
without boxes has an all-zero layout.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from vitron_jax.backends.diffusion.gligen import GligenInputs


def layout_channels(embedding_dim: int, factor: int) -> int:
  """Channels `layout_map` appends: the phrase embeddings and the stacked box union."""
  return int(embedding_dim) + int(factor) ** 2


def coverage(boxes: jax.Array, masks: jax.Array, height: int, width: int) -> jax.Array:
  """`[B, N, H, W]` float: 1 where slot n's box covers the pixel centre (and the slot is real)."""
  ys = (jnp.arange(height, dtype=jnp.float32) + 0.5) / height
  xs = (jnp.arange(width, dtype=jnp.float32) + 0.5) / width
  b = boxes.astype(jnp.float32)[..., None, None]  # [B, N, 4, 1, 1]
  in_x = (xs[None, None, None, :] >= b[:, :, 0]) & (xs[None, None, None, :] < b[:, :, 2])
  in_y = (ys[None, None, :, None] >= b[:, :, 1]) & (ys[None, None, :, None] < b[:, :, 3])
  on = (masks.astype(jnp.float32) > 0)[..., None, None]
  return (in_x & in_y & on).astype(jnp.float32)


def layout_map(grounding: GligenInputs, height: int, width: int, factor: int) -> jax.Array:
  """See the module docstring."""
  boxes, emb, masks = grounding.boxes, grounding.positive_embeddings, grounding.masks
  if boxes.ndim != 3 or boxes.shape[-1] != 4 or emb.shape[:2] != boxes.shape[:2]:
    raise ValueError(f"layout_map needs boxes [B, N, 4] and embeddings [B, N, D], got "
                     f"{tuple(boxes.shape)} and {tuple(emb.shape)}")
  if height % factor or width % factor:
    raise ValueError(f"layout_map: {height}x{width} must be multiples of the factor {factor}")
  cover = coverage(boxes, masks, height, width)
  h, w = height // factor, width // factor
  bsz, d = emb.shape[0], emb.shape[-1]
  per_pixel = jnp.einsum("bnyx,bnd->byxd", cover, emb.astype(jnp.float32))
  cells = per_pixel.reshape(bsz, h, factor, w, factor, d).mean(axis=(2, 4))
  union = cover.max(axis=1).reshape(bsz, h, factor, w, factor).transpose(0, 1, 3, 2, 4)
  return jnp.concatenate([cells, union.reshape(bsz, h, w, factor * factor)], axis=-1)
