"""Resizing feature grids exactly as PyTorch does it (for parity with HF/diffusers models).

`resize_bicubic_torch` reproduces `torch.nn.functional.interpolate(mode="bicubic",
align_corners=False, antialias=False)`: Keys cubic convolution with A = -0.75, source
coordinate `(dst + 0.5) * in / out - 0.5` (not clamped), neighbour indices clamped to the
border. It differs from `jax.image.resize(method="cubic")` (A = -0.5, antialiasing when
downsampling, different border handling), which is why it exists. The resize is separable and
written as two small matrices built with numpy from the static sizes, so it is exact,
jit-friendly and differentiable.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

_A = -0.75  # PyTorch's cubic convolution coefficient.


def _cubic_weights(t: np.ndarray) -> np.ndarray:
  """`[n, 4]` weights of the neighbours at offsets -1, 0, 1, 2 for fractional positions t."""
  def near(x):  # |x| <= 1
    return ((_A + 2) * x - (_A + 3)) * x * x + 1

  def far(x):  # 1 < |x| < 2
    return ((_A * x - 5 * _A) * x + 8 * _A) * x - 4 * _A

  return np.stack([far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)], axis=-1)


@functools.lru_cache(maxsize=128)
def bicubic_matrix(in_size: int, out_size: int) -> np.ndarray:
  """`[out_size, in_size]` matrix `M` with `resize(x) = M @ x` along one axis (torch bicubic)."""
  if in_size < 1 or out_size < 1:
    raise ValueError(f"bicubic resize needs positive sizes, got {in_size} -> {out_size}")
  scale = in_size / out_size
  src = scale * (np.arange(out_size, dtype=np.float64) + 0.5) - 0.5
  base = np.floor(src)
  w = _cubic_weights(src - base)
  m = np.zeros((out_size, in_size), np.float64)
  rows = np.arange(out_size)
  for k in range(4):
    idx = np.clip(base.astype(np.int64) - 1 + k, 0, in_size - 1)
    np.add.at(m, (rows, idx), w[:, k])
  return m


def resize_bicubic_torch(x: jax.Array, size: tuple[int, int]) -> jax.Array:
  """Resize channels-last `[..., H, W, C]` to `[..., size[0], size[1], C]` like torch bicubic."""
  if x.ndim < 3:
    raise ValueError(f"resize_bicubic_torch expects [..., H, W, C], got shape {tuple(x.shape)}")
  h, w = x.shape[-3], x.shape[-2]
  out_h, out_w = int(size[0]), int(size[1])
  if (h, w) == (out_h, out_w):
    return x
  mh = jnp.asarray(bicubic_matrix(h, out_h), dtype=jnp.float32)
  mw = jnp.asarray(bicubic_matrix(w, out_w), dtype=jnp.float32)
  hp = jax.lax.Precision.HIGHEST
  y = jnp.einsum("oh,...hwc->...owc", mh, x.astype(jnp.float32), precision=hp)
  y = jnp.einsum("pw,...owc->...opc", mw, y, precision=hp)
  return y.astype(x.dtype)
