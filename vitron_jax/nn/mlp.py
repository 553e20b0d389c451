"""Feed-forward blocks: Llama's gated SiLU MLP and the plain two-layer MLP (CLIP, SAM)."""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from vitron_jax.nn.layers import Dense

ACTIVATIONS: dict[str, Callable] = {
    "silu": jax.nn.silu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "relu": jax.nn.relu,
}


def activation(name: str) -> Callable:
  if name not in ACTIVATIONS:
    raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
  return ACTIVATIONS[name]


class GatedMLP(nn.Module):
  """`down(act(gate(x)) * up(x))`, parameter names as in transformers' LlamaMLP."""
  hidden: int
  act: str = "silu"
  use_bias: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    kw = dict(use_bias=self.use_bias, dtype=self.dtype, param_dtype=self.param_dtype)
    gate = Dense(self.hidden, axes=("embed", "mlp"), name="gate_proj", **kw)(x)
    up = Dense(self.hidden, axes=("embed", "mlp"), name="up_proj", **kw)(x)
    h = activation(self.act)(gate) * up
    return Dense(x.shape[-1], axes=("mlp", "embed"), name="down_proj", **kw)(h)


class MLP(nn.Module):
  """`fc2(act(fc1(x)))` (CLIP / SAM naming)."""
  hidden: int
  act: str = "gelu"
  out_features: int | None = None
  names: tuple[str, str] = ("fc1", "fc2")
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    h = Dense(self.hidden, axes=("embed", "mlp"), name=self.names[0], **kw)(x)
    h = activation(self.act)(h)
    return Dense(self.out_features or x.shape[-1], axes=("mlp", "embed"), name=self.names[1],
                 **kw)(h)
