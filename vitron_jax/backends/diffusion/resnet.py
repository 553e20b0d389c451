"""Residual and resampling blocks (diffusers `resnet.py`, `downsampling.py`, `upsampling.py`).

All channels-last: images `[B, H, W, C]`; `TemporalConvLayer` takes frames stacked in the batch,
`[B*T, H, W, C]`, and convolves along T.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vitron_jax.backends.diffusion.embeddings import act_fn
from vitron_jax.nn.conv import Conv, GroupNorm, upsample_nearest
from vitron_jax.nn.layers import Dense


class ResnetBlock2D(nn.Module):
  """GN -> act -> conv1 -> (+ time embedding) -> GN -> act -> conv2, plus (1x1) shortcut.

  x: `[B, H, W, C_in]`, temb: `[B, temb_dim]` or None -> `[B, H, W, out_channels]`.
  `time_embedding_norm="scale_shift"` applies the time embedding as FiLM after norm2.
  """
  out_channels: int
  groups: int = 32
  groups_out: int | None = None
  eps: float = 1e-6
  act: str = "silu"
  time_embedding_norm: str = "default"
  output_scale_factor: float = 1.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, temb: jax.Array | None = None) -> jax.Array:
    kw = dict(dtype=self.dtype)
    f = act_fn(self.act)
    out = self.out_channels
    h = f(GroupNorm(self.groups, eps=self.eps, name="norm1", **kw)(x))
    h = Conv(out, (3, 3), padding=1, name="conv1", **kw)(h)
    norm2 = GroupNorm(self.groups_out or self.groups, eps=self.eps, name="norm2", **kw)
    if temb is not None:
      if self.time_embedding_norm not in ("default", "scale_shift"):
        raise ValueError(f"unknown time_embedding_norm {self.time_embedding_norm!r}; expected "
                         "'default' or 'scale_shift'")
      n = out if self.time_embedding_norm == "default" else 2 * out
      t = Dense(n, axes=("embed", "conv_out"), name="time_emb_proj", **kw)(f(temb))
      t = t[:, None, None, :]
      if self.time_embedding_norm == "default":
        h = norm2(h + t)
      else:
        scale, shift = jnp.split(t, 2, axis=-1)
        h = norm2(h) * (1 + scale) + shift
    else:
      h = norm2(h)
    h = Conv(out, (3, 3), padding=1, name="conv2", **kw)(f(h))
    if x.shape[-1] != out:
      x = Conv(out, (1, 1), name="conv_shortcut", **kw)(x)
    y = x + h
    if self.output_scale_factor != 1.0:
      y = y / self.output_scale_factor
    return y


class Downsample2D(nn.Module):
  """Stride-2 3x3 conv named `conv`; `padding=0` pads (0, 1) on H and W first (the VAE)."""
  out_channels: int
  padding: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    pad = ((0, 1), (0, 1)) if self.padding == 0 else self.padding
    return Conv(self.out_channels, (3, 3), strides=2, padding=pad, dtype=self.dtype,
                name="conv")(x)


class Upsample2D(nn.Module):
  """Nearest 2x upsampling (or to `output_size`) then a 3x3 conv named `conv`."""
  out_channels: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, output_size: Sequence[int] | None = None) -> jax.Array:
    x = upsample_nearest(x, output_size)
    return Conv(self.out_channels, (3, 3), padding=1, dtype=self.dtype, name="conv")(x)


class TemporalConvLayer(nn.Module):
  """Four (GN -> SiLU -> conv over T, kernel (3, 1, 1)) stages plus identity (ModelScope).

  `[B*T, H, W, C] -> [B*T, H, W, C]`; PyTorch names `conv{1..4}.0` (GroupNorm) and
  `conv1.2` / `conv{2,3,4}.3` (Conv3d) become `conv1_0`, `conv1_2`, `conv2_3`, ...
  """
  num_frames: int
  groups: int = 32
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    bt, hgt, wid, c = x.shape
    t = self.num_frames
    h = x.reshape(bt // t, t, hgt, wid, c)
    identity = h
    for i, conv_idx in ((1, 2), (2, 3), (3, 3), (4, 3)):
      h = jax.nn.silu(GroupNorm(self.groups, name=f"conv{i}_0", dtype=self.dtype)(h))
      h = Conv(c, (3, 1, 1), padding=((1, 1), (0, 0), (0, 0)), dtype=self.dtype,
               name=f"conv{i}_{conv_idx}")(h)
    return (identity + h).reshape(bt, hgt, wid, c)
