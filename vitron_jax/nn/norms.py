"""RMSNorm (Llama) and LayerNorm (CLIP, UNets, SAM), statistics in fp32."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class RMSNorm(nn.Module):
  """Llama's RMSNorm: `weight * x / sqrt(mean(x^2) + eps)`, normalised in fp32."""
  eps: float = 1e-6
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  axis_name: str = "norm"

  @nn.compact
  def __call__(self, x):
    weight = self.param("weight", nn.with_logical_partitioning(nn.initializers.ones,
                                                               (self.axis_name,)),
                        (x.shape[-1],), self.param_dtype)
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    # transformers casts back to the input dtype before the weight multiply.
    return weight.astype(self.dtype) * y.astype(self.dtype)


class LayerNorm(nn.Module):
  """LayerNorm over the last axis with `weight`/`bias` named as in PyTorch."""
  eps: float = 1e-5
  use_bias: bool = True
  use_scale: bool = True
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  axis_name: str = "norm"

  @nn.compact
  def __call__(self, x):
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
    if self.use_scale:
      w = self.param("weight", nn.with_logical_partitioning(nn.initializers.ones,
                                                            (self.axis_name,)),
                     (x.shape[-1],), self.param_dtype)
      y = y * w.astype(jnp.float32)
    if self.use_bias:
      b = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros,
                                                          (self.axis_name,)),
                     (x.shape[-1],), self.param_dtype)
      y = y + b.astype(jnp.float32)
    return y.astype(self.dtype)
