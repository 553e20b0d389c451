"""The vision -> LLM projector (LLaVA's `mm_projector`): "linear" or "mlp{N}x_gelu".

`[..., C_vision] -> [..., D_llm]`. Parameter names mirror LLaVA's `nn.Sequential`: the i-th
Linear of the sequence is `layers_{i}` (PyTorch `mm_projector.{i}`; GELUs sit at the odd
indices), so "mlp2x_gelu" has `layers_0` and `layers_2`. The "linear" projector is one
`layers_0` (PyTorch `mm_projector`, a bare Linear).
"""
from __future__ import annotations

import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vitron_jax.nn.layers import Dense

_MLP_RE = re.compile(r"^mlp(\d+)x_gelu$")


def projector_depth(kind: str) -> int:
  """Number of Linear layers of a projector kind; ValueError for an unknown kind."""
  if kind == "linear":
    return 1
  m = _MLP_RE.match(kind)
  if m and int(m.group(1)) >= 1:
    return int(m.group(1))
  raise ValueError(f"unknown projector type {kind!r}; expected 'linear' or 'mlp<N>x_gelu' "
                   "(e.g. 'mlp2x_gelu')")


class Projector(nn.Module):
  """LLaVA projector; see the module docstring for names."""
  kind: str
  out_features: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    depth = projector_depth(self.kind)
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = Dense(self.out_features, axes=(None, "embed"), name="layers_0", **kw)(x)
    for i in range(1, depth):
      x = jax.nn.gelu(x, approximate=False)
      x = Dense(self.out_features, axes=("mlp", "embed"), name=f"layers_{2 * i}", **kw)(x)
    return x
