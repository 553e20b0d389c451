"""Non-overlapping patch embedding (ViT / CLIP / SAM): a conv with stride = kernel = patch.

Written as a reshape into patches followed by one contraction, which is exactly the strided
convolution. The kernel is stored channels-last as `[p_h, p_w, in_channels, features]`
(Flax's HWIO conv layout): a PyTorch `Conv2d.weight` `[features, in, p_h, p_w]` converts with
`weight.transpose(2, 3, 1, 0)`.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vitron_jax.nn.layers import Initializer, default_kernel_init


def patchify(x: jax.Array, patch: tuple[int, int]) -> jax.Array:
  """`[B, H, W, C]` -> `[B, H/p_h, W/p_w, p_h, p_w, C]`; H and W must be multiples of the patch."""
  b, h, w, c = x.shape
  ph, pw = patch
  if h % ph or w % pw:
    raise ValueError(f"image height and width must be multiples of the patch size {ph}x{pw}, "
                     f"got {h}x{w}")
  x = x.reshape(b, h // ph, ph, w // pw, pw, c)
  return x.transpose(0, 1, 3, 2, 4, 5)


class PatchEmbed(nn.Module):
  """`[B, H, W, C]` images -> `[B, H/p, W/p, features]` patch embeddings."""
  features: int
  patch_size: int | tuple[int, int]
  use_bias: bool = True
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernel_init: Initializer = default_kernel_init
  axes: tuple[str | None, ...] = (None, None, "conv_in", "embed")

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    ph, pw = ((self.patch_size, self.patch_size) if isinstance(self.patch_size, int)
              else tuple(self.patch_size))
    kernel = self.param("kernel", nn.with_logical_partitioning(self.kernel_init, self.axes),
                        (ph, pw, x.shape[-1], self.features), self.param_dtype)
    patches = patchify(x.astype(self.dtype), (ph, pw))
    y = jnp.einsum("bhwpqc,pqcd->bhwd", patches, kernel.astype(self.dtype))
    if self.use_bias:
      bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros,
                                                             self.axes[-1:]),
                        (self.features,), self.param_dtype)
      y = y + bias.astype(self.dtype)
    return y
