"""Small SAM building blocks with logical axis names: convolutions, a transposed 2x2 conv,
learned token tables and SAM's MLP head.

Convolution kernels are stored Flax-style `[kh, kw, in, out]` (axes `(None, None, "conv_in",
"conv_out")`); PyTorch's `Conv2d` weight `[out, in, kh, kw]` and `ConvTranspose2d` weight
`[in, out, kh, kw]` convert with a transpose (`vitron_jax.convert.sam`).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vitron_jax.nn.layers import Dense, default_kernel_init

CONV_AXES = (None, None, "conv_in", "conv_out")


class Conv2d(nn.Module):
  """PyTorch-like `Conv2d` on channels-last `[B, H, W, C]` (square kernel, symmetric padding)."""
  features: int
  kernel_size: int
  stride: int = 1
  padding: int = 0
  use_bias: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k, p = self.kernel_size, self.padding
    kernel = self.param("kernel", nn.with_logical_partitioning(default_kernel_init, CONV_AXES),
                        (k, k, x.shape[-1], self.features))
    y = jax.lax.conv_general_dilated(
        x.astype(self.dtype), kernel.astype(self.dtype), (self.stride, self.stride),
        ((p, p), (p, p)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
    if self.use_bias:
      bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros,
                                                             ("conv_out",)), (self.features,))
      y = y + bias.astype(self.dtype)
    return y


class ConvTranspose2x2(nn.Module):
  """PyTorch `ConvTranspose2d(kernel_size=2, stride=2)`: `[B, H, W, Ci] -> [B, 2H, 2W, Co]`.

  Each input pixel writes one 2x2 output block, so this is one einsum (exact, no overlap).
  """
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", nn.with_logical_partitioning(default_kernel_init, CONV_AXES),
                        (2, 2, x.shape[-1], self.features))
    bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros,
                                                           ("conv_out",)), (self.features,))
    b, h, w, _ = x.shape
    y = jnp.einsum("bhwc,ijco->bhiwjo", x.astype(self.dtype), kernel.astype(self.dtype))
    return y.reshape(b, 2 * h, 2 * w, self.features) + bias.astype(self.dtype)


class TokenTable(nn.Module):
  """A learned `[num, features]` table named `weight` (PyTorch `nn.Embedding`), used whole."""
  num: int
  features: int

  @nn.compact
  def __call__(self) -> jax.Array:
    return self.param("weight", nn.with_logical_partitioning(nn.initializers.normal(1.0),
                                                             (None, "embed")),
                      (self.num, self.features))


class FeedForward(nn.Module):
  """SAM's `SamFeedForward`: `proj_in`, `num_layers - 2` hidden `layers_i`, `proj_out`, ReLU."""
  hidden: int
  out_features: int
  num_layers: int
  sigmoid_output: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = jax.nn.relu(Dense(self.hidden, axes=("embed", "mlp"), dtype=self.dtype,
                          name="proj_in")(x))
    for i in range(self.num_layers - 2):
      x = jax.nn.relu(Dense(self.hidden, axes=(None, "mlp"), dtype=self.dtype,
                            name=f"layers_{i}")(x))
    x = Dense(self.out_features, axes=("mlp", "embed"), dtype=self.dtype, name="proj_out")(x)
    return jax.nn.sigmoid(x) if self.sigmoid_output else x
