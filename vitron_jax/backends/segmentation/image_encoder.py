"""SAM's ViT image encoder in Flax: patch embedding, absolute positions, windowed and global
attention with decomposed relative position terms (MViTv2), and the convolutional neck.

Parameter names follow transformers' `SamVisionEncoder` (`patch_embed/projection`,
`pos_embed`, `layers_{i}/{layer_norm1,attn/{qkv,proj,rel_pos_h,rel_pos_w},layer_norm2,
mlp/{lin1,lin2}}`, `neck/{conv1,layer_norm1,conv2,layer_norm2}`).

Shapes: pixels `[B, S, S, 3]` (normalised, padded) -> embeddings `[B, E, E, output_channels]`
with `E = S / patch_size`, channels-last.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vitron_jax.backends.segmentation.config import SamVisionConfig
from vitron_jax.backends.segmentation.layers import Conv2d
from vitron_jax.nn.attention import dot_product_attention
from vitron_jax.nn.layers import Dense
from vitron_jax.nn.mlp import MLP
from vitron_jax.nn.norms import LayerNorm


def relative_positions(size: int, rel_pos: jax.Array) -> jax.Array:
  """`[size, size, C]` table `R[q, k] = rel_pos[q - k + size - 1]` (query and key same size)."""
  if rel_pos.shape[0] != 2 * size - 1:
    raise ValueError(f"relative position table has {rel_pos.shape[0]} rows; a {size}-token "
                     f"axis needs {2 * size - 1} (image size differs from the config's)")
  idx = jnp.arange(size)[:, None] - jnp.arange(size)[None, :] + size - 1
  return rel_pos[idx]


def decomposed_rel_pos_bias(q: jax.Array, rel_pos_h: jax.Array, rel_pos_w: jax.Array,
                            hw: tuple[int, int]) -> jax.Array:
  """Additive attention bias `[B, heads, h*w, h*w]` from unscaled queries `[B, h*w, heads, d]`."""
  h, w = hw
  b, _, n, d = q.shape
  rh = relative_positions(h, rel_pos_h)  # [h, kh, d]
  rw = relative_positions(w, rel_pos_w)  # [w, kw, d]
  qr = q.reshape(b, h, w, n, d)
  bias_h = jnp.einsum("bhwnc,hkc->bnhwk", qr, rh)
  bias_w = jnp.einsum("bhwnc,wkc->bnhwk", qr, rw)
  bias = bias_h[..., :, None] + bias_w[..., None, :]  # [b, n, h, w, kh, kw]
  return bias.reshape(b, n, h * w, h * w)


def window_partition(x: jax.Array, window: int) -> tuple[jax.Array, tuple[int, int]]:
  """`[B, H, W, C]` -> `[B * nH * nW, window, window, C]`, zero-padding H and W up first."""
  b, h, w, c = x.shape
  ph, pw = (-h) % window, (-w) % window
  x = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)))
  hp, wp = h + ph, w + pw
  x = x.reshape(b, hp // window, window, wp // window, window, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, window, window, c), (hp, wp)


def window_unpartition(windows: jax.Array, window: int, padded: tuple[int, int],
                       original: tuple[int, int]) -> jax.Array:
  """Inverse of `window_partition`, cropping the padding away."""
  hp, wp = padded
  h, w = original
  b = windows.shape[0] // ((hp // window) * (wp // window))
  x = windows.reshape(b, hp // window, wp // window, window, window, -1)
  x = x.transpose(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
  return x[:, :h, :w, :]


class SamVisionAttention(nn.Module):
  """Multi-head self-attention over a `[B, h, w, C]` grid with decomposed relative positions."""
  config: SamVisionConfig
  size: int  # side of the grid this layer attends over (window or full grid)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg = self.config
    b, h, w, c = x.shape
    heads = cfg.num_attention_heads
    hd = c // heads
    qkv = Dense(3 * c, axes=("embed", "heads"), use_bias=cfg.qkv_bias, dtype=self.dtype,
                name="qkv")(x)
    qkv = qkv.reshape(b, h * w, 3, heads, hd)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    bias = None
    if cfg.use_rel_pos:
      init = nn.with_logical_partitioning(nn.initializers.zeros, (None, "kv"))
      rel_h = self.param("rel_pos_h", init, (2 * self.size - 1, hd))
      rel_w = self.param("rel_pos_w", init, (2 * self.size - 1, hd))
      bias = decomposed_rel_pos_bias(q, rel_h.astype(self.dtype), rel_w.astype(self.dtype),
                                     (h, w))
    out = dot_product_attention(q, k, v, bias=bias)
    out = out.reshape(b, h, w, c)
    return Dense(c, axes=("heads", "embed"), dtype=self.dtype, name="proj")(out)


class SamVisionLayer(nn.Module):
  """Pre-norm ViT block; `window > 0` attends within non-overlapping windows."""
  config: SamVisionConfig
  window: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg = self.config
    eps = cfg.layer_norm_eps
    residual = x
    y = LayerNorm(eps=eps, dtype=self.dtype, name="layer_norm1")(x)
    size = self.window if self.window > 0 else cfg.grid_size
    if self.window > 0:
      hw = y.shape[1:3]
      y, padded = window_partition(y, self.window)
    y = SamVisionAttention(cfg, size, dtype=self.dtype, name="attn")(y)
    if self.window > 0:
      y = window_unpartition(y, self.window, padded, hw)
    x = residual + y
    y = LayerNorm(eps=eps, dtype=self.dtype, name="layer_norm2")(x)
    return x + MLP(cfg.mlp_dim, act=cfg.hidden_act, names=("lin1", "lin2"), dtype=self.dtype,
                   name="mlp")(y)


class SamVisionNeck(nn.Module):
  """1x1 conv -> LayerNorm -> 3x3 conv -> LayerNorm, no biases on the convs."""
  config: SamVisionConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = self.config.output_channels
    x = Conv2d(c, 1, use_bias=False, dtype=self.dtype, name="conv1")(x)
    x = LayerNorm(eps=1e-6, dtype=self.dtype, name="layer_norm1")(x)
    x = Conv2d(c, 3, padding=1, use_bias=False, dtype=self.dtype, name="conv2")(x)
    return LayerNorm(eps=1e-6, dtype=self.dtype, name="layer_norm2")(x)


class PatchEmbed(nn.Module):
  """Non-overlapping patch projection `[B, S, S, 3] -> [B, E, E, hidden]`."""
  config: SamVisionConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, pixels: jax.Array) -> jax.Array:
    cfg = self.config
    return Conv2d(cfg.hidden_size, cfg.patch_size, stride=cfg.patch_size, dtype=self.dtype,
                  name="projection")(pixels)


class SamVisionEncoder(nn.Module):
  """`[B, S, S, C] -> [B, E, E, output_channels]`; `remat` recomputes each layer on backward."""
  config: SamVisionConfig
  dtype: Any = jnp.float32
  remat: bool = False

  @nn.compact
  def __call__(self, pixels: jax.Array) -> jax.Array:
    cfg = self.config
    s = cfg.image_size
    if pixels.ndim != 4 or pixels.shape[1:] != (s, s, cfg.num_channels):
      raise ValueError(f"pixel_values must be [batch, {s}, {s}, {cfg.num_channels}] "
                       f"(preprocessed, channels-last), got {tuple(pixels.shape)}")
    pixels = nn.with_logical_constraint(pixels, ("batch", None, None, None))
    x = PatchEmbed(cfg, dtype=self.dtype, name="patch_embed")(pixels)
    if cfg.use_abs_pos:
      g = cfg.grid_size
      pos = self.param("pos_embed", nn.with_logical_partitioning(
          nn.initializers.zeros, (None, None, None, "embed")), (1, g, g, cfg.hidden_size))
      x = x + pos.astype(x.dtype)
    layer_cls = nn.remat(SamVisionLayer) if self.remat else SamVisionLayer
    for i in range(cfg.num_hidden_layers):
      x = layer_cls(cfg, cfg.window_for_layer(i), dtype=self.dtype, name=f"layers_{i}")(x)
    x = SamVisionNeck(cfg, dtype=self.dtype, name="neck")(x)
    return nn.with_logical_constraint(x, ("batch", None, None, None))
