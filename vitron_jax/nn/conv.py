"""Convolutions, GroupNorm and resampling helpers, channels-last, with logical axis names.

* `Conv`: N-d convolution on `[B, *spatial, C_in] -> [B, *spatial', C_out]`; kernel
  `[*kernel_size, C_in, C_out]` (HWIO / DHWIO) annotated `(None, .., "conv_in", "conv_out")`.
  PyTorch's `weight` (OIHW / OIDHW) is this `kernel` transposed; `bias` keeps its name.
* `GroupNorm`: PyTorch `nn.GroupNorm` numerics (biased variance, statistics in fp32 over the
  group's channels and every non-batch axis), parameters `weight`/`bias` as in PyTorch.
* `upsample_nearest`, `avg_pool`, `adaptive_avg_pool2d`: PyTorch `F.interpolate(mode="nearest")`,
  `AvgPool2d` and `AdaptiveAvgPool2d` index rules on channels-last arrays.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Initializer = Callable[..., Any]
Padding = int | Sequence[int] | Sequence[tuple[int, int]]

_SPATIAL = {1: "W", 2: "HW", 3: "DHW"}

#: axes for convs whose output is a few pixel/latent channels (3, 4, 8): never sharded.
PIXEL_AXES: tuple[str | None, str | None] = ("conv_in", None)


def _tuple(v: int | Sequence[int], n: int, what: str) -> tuple[int, ...]:
  if isinstance(v, int):
    return (v,) * n
  v = tuple(int(a) for a in v)
  if len(v) != n:
    raise ValueError(f"conv {what} {v} must have {n} entries (one per spatial axis)")
  return v


def _padding(p: Padding, n: int) -> list[tuple[int, int]]:
  """int -> symmetric on all axes; (p0, p1, ..) -> symmetric per axis; ((lo, hi), ..) as is."""
  if isinstance(p, int):
    return [(p, p)] * n
  p = tuple(p)
  if len(p) != n:
    raise ValueError(f"conv padding {p} must have {n} entries (one per spatial axis)")
  return [(int(a), int(a)) if isinstance(a, int) else (int(a[0]), int(a[1])) for a in p]


class Conv(nn.Module):
  """PyTorch-style `ConvNd` on channels-last inputs (zero padding, no dilation, no groups)."""
  features: int
  kernel_size: Sequence[int]
  strides: int | Sequence[int] = 1
  padding: Padding = 0
  use_bias: bool = True
  axes: tuple[str | None, str | None] = ("conv_in", "conv_out")
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernel_init: Initializer = nn.initializers.lecun_normal()
  precision: Any = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    ks = tuple(int(k) for k in self.kernel_size)
    n = len(ks)
    if n not in _SPATIAL:
      raise ValueError(f"Conv supports 1, 2 or 3 spatial axes, got kernel_size {ks}")
    if x.ndim != n + 2:
      raise ValueError(f"Conv with kernel {ks} expects input [batch, {n} spatial axes, channels], "
                       f"got shape {tuple(x.shape)}")
    axes = (None,) * n + tuple(self.axes)
    kernel = self.param("kernel", nn.with_logical_partitioning(self.kernel_init, axes),
                        ks + (x.shape[-1], self.features), self.param_dtype)
    sp = _SPATIAL[n]
    dn = jax.lax.conv_dimension_numbers(x.shape, kernel.shape, (f"N{sp}C", f"{sp}IO", f"N{sp}C"))
    y = jax.lax.conv_general_dilated(
        x.astype(self.dtype), kernel.astype(self.dtype),
        window_strides=_tuple(self.strides, n, "strides"), padding=_padding(self.padding, n),
        dimension_numbers=dn, precision=self.precision)
    if self.use_bias:
      bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros,
                                                             (self.axes[1],)),
                        (self.features,), self.param_dtype)
      y = y + bias.astype(self.dtype)
    return y


class GroupNorm(nn.Module):
  """`nn.GroupNorm(num_groups, C, eps, affine)` on `[B, ..., C]` (channels last).

  Statistics run over every non-batch axis and the channels of a group, exactly as PyTorch
  does on `[B, C, ...]`; for a video `[B, T, H, W, C]` that includes the frame axis.
  """
  num_groups: int
  eps: float = 1e-5
  affine: bool = True
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  axis_name: str = "norm"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    if c % self.num_groups:
      raise ValueError(f"GroupNorm: {c} channels are not divisible into {self.num_groups} groups")
    x32 = x.astype(jnp.float32).reshape(x.shape[0], -1, self.num_groups, c // self.num_groups)
    mean = jnp.mean(x32, axis=(1, 3), keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=(1, 3), keepdims=True)
    y = ((x32 - mean) * jax.lax.rsqrt(var + self.eps)).reshape(x.shape)
    if self.affine:
      w = self.param("weight", nn.with_logical_partitioning(nn.initializers.ones,
                                                            (self.axis_name,)),
                     (c,), self.param_dtype)
      b = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros,
                                                          (self.axis_name,)),
                     (c,), self.param_dtype)
      y = y * w.astype(jnp.float32) + b.astype(jnp.float32)
    return y.astype(self.dtype)


def _nearest_index(in_size: int, out_size: int) -> np.ndarray:
  # PyTorch "nearest": src = min(floor(dst * (in / out)), in - 1), scale computed in fp32.
  scale = np.float32(in_size) / np.float32(out_size)
  idx = np.floor(np.arange(out_size, dtype=np.float32) * scale).astype(np.int64)
  return np.minimum(idx, in_size - 1)


def upsample_nearest(x: jax.Array, size: Sequence[int] | None = None,
                     scale: int = 2) -> jax.Array:
  """Nearest-neighbour resize of `[B, H, W, C]` to `size=(H', W')` or by an integer `scale`."""
  if x.ndim != 4:
    raise ValueError(f"upsample_nearest expects [B, H, W, C], got shape {tuple(x.shape)}")
  h, w = x.shape[1:3]
  if size is None:
    return jnp.repeat(jnp.repeat(x, scale, axis=1), scale, axis=2)
  oh, ow = int(size[0]), int(size[1])
  if (oh, ow) == (h * 2, w * 2) or (oh % h == 0 and ow % w == 0 and oh // h == ow // w):
    s = oh // h
    return jnp.repeat(jnp.repeat(x, s, axis=1), s, axis=2)
  x = jnp.take(x, jnp.asarray(_nearest_index(h, oh)), axis=1)
  return jnp.take(x, jnp.asarray(_nearest_index(w, ow)), axis=2)


def avg_pool(x: jax.Array, window: int = 2) -> jax.Array:
  """`AvgPool2d(window, stride=window)` on `[B, H, W, C]` (floor mode, no padding)."""
  b, h, w, c = x.shape
  oh, ow = h // window, w // window
  x = x[:, :oh * window, :ow * window].reshape(b, oh, window, ow, window, c)
  return x.mean(axis=(2, 4))


def _adaptive_matrix(in_size: int, out_size: int) -> np.ndarray:
  # PyTorch adaptive pooling: bin i spans [floor(i*in/out), ceil((i+1)*in/out)).
  m = np.zeros((out_size, in_size), np.float32)
  for i in range(out_size):
    start = (i * in_size) // out_size
    end = -((-(i + 1) * in_size) // out_size)
    m[i, start:end] = 1.0 / (end - start)
  return m


def adaptive_avg_pool2d(x: jax.Array, output_size: Sequence[int]) -> jax.Array:
  """`AdaptiveAvgPool2d(output_size)` on `[B, H, W, C]` (also when upsampling, as PyTorch)."""
  if x.ndim != 4:
    raise ValueError(f"adaptive_avg_pool2d expects [B, H, W, C], got shape {tuple(x.shape)}")
  mh = jnp.asarray(_adaptive_matrix(x.shape[1], int(output_size[0])), x.dtype)
  mw = jnp.asarray(_adaptive_matrix(x.shape[2], int(output_size[1])), x.dtype)
  x = jnp.einsum("oh,bhwc->bowc", mh, x, precision=jax.lax.Precision.HIGHEST)
  return jnp.einsum("pw,bowc->bopc", mw, x, precision=jax.lax.Precision.HIGHEST)
