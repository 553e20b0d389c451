"""Dense and embedding layers whose parameters carry logical axis names.

Logical names (see `vitron_jax.nn.partitioning`): "embed" (model width), "mlp" (ffn width),
"heads", "kv", "vocab", "layers" (the scanned axis), "conv_in"/"conv_out", "norm". Mesh
rules map them to the `data`/`fsdp`/`tensor` mesh axes.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

Initializer = Callable[..., Any]
default_kernel_init = nn.initializers.normal(stddev=0.02)


class Dense(nn.Module):
  """`y = x @ kernel + bias` with kernel axes `axes = (in_name, out_name)`."""
  features: int
  axes: tuple[str | None, str | None] = ("embed", "mlp")
  use_bias: bool = True
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernel_init: Initializer = default_kernel_init
  precision: Any = None

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", nn.with_logical_partitioning(self.kernel_init, self.axes),
                        (x.shape[-1], self.features), self.param_dtype)
    y = jnp.dot(x.astype(self.dtype), kernel.astype(self.dtype), precision=self.precision)
    if self.use_bias:
      bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, self.axes[1:]),
                        (self.features,), self.param_dtype)
      y = y + bias.astype(self.dtype)
    return y


class DenseGeneral(nn.Module):
  """Dense over a trailing feature shape, e.g. `[.., embed] -> [.., heads, head_dim]`."""
  features: Sequence[int]
  axes: tuple[str | None, ...] = ("embed", "heads", "kv")
  use_bias: bool = True
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernel_init: Initializer = default_kernel_init

  @nn.compact
  def __call__(self, x):
    feats = tuple(self.features)
    kernel = self.param("kernel", nn.with_logical_partitioning(self.kernel_init, self.axes),
                        (x.shape[-1],) + feats, self.param_dtype)
    y = jnp.tensordot(x.astype(self.dtype), kernel.astype(self.dtype), axes=1)
    if self.use_bias:
      bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, self.axes[1:]),
                        feats, self.param_dtype)
      y = y + bias.astype(self.dtype)
    return y


class Embed(nn.Module):
  """Token embedding `[vocab, embed]`; `attend` gives tied output logits."""
  num_embeddings: int
  features: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  embedding_init: Initializer = default_kernel_init

  def setup(self):
    self.embedding = self.param(
        "embedding", nn.with_logical_partitioning(self.embedding_init, ("vocab", "embed")),
        (self.num_embeddings, self.features), self.param_dtype)

  def __call__(self, ids):
    return jnp.take(self.embedding, ids, axis=0).astype(self.dtype)

  def attend(self, x):
    return jnp.dot(x.astype(self.dtype), self.embedding.astype(self.dtype).T)
