"""Timestep and box embeddings of the diffusion networks (diffusers `embeddings.py`)."""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vitron_jax.nn.layers import Dense
from vitron_jax.nn.mlp import activation


def act_fn(name: str):
  """diffusers activation names ("silu"/"swish", "gelu", "mish", "relu")."""
  if name in ("silu", "swish"):
    return jax.nn.silu
  if name == "mish":
    return lambda x: x * jnp.tanh(jax.nn.softplus(x))
  return activation(name)


def timestep_embedding(timesteps: jax.Array, dim: int, flip_sin_to_cos: bool = False,
                       downscale_freq_shift: float = 1.0, scale: float = 1.0,
                       max_period: int = 10000) -> jax.Array:
  """Sinusoidal embedding `[B] -> [B, dim]` (diffusers `get_timestep_embedding`, fp32)."""
  if timesteps.ndim != 1:
    raise ValueError(f"timesteps must be a 1-d array [batch], got shape {tuple(timesteps.shape)}")
  half = dim // 2
  exponent = -math.log(max_period) * jnp.arange(half, dtype=jnp.float32)
  exponent = exponent / (half - downscale_freq_shift)
  emb = timesteps.astype(jnp.float32)[:, None] * jnp.exp(exponent)[None, :]
  emb = scale * emb
  emb = jnp.concatenate([jnp.sin(emb), jnp.cos(emb)], axis=-1)
  if flip_sin_to_cos:
    emb = jnp.concatenate([emb[:, half:], emb[:, :half]], axis=-1)
  if dim % 2 == 1:
    emb = jnp.pad(emb, ((0, 0), (0, 1)))
  return emb


def broadcast_timesteps(timesteps, batch: int, name: str = "timesteps") -> jax.Array:
  """A scalar or `[batch]` (or `[1]`) timestep array as `[batch]`."""
  t = jnp.asarray(timesteps)
  if t.ndim == 0:
    t = t[None]
  if t.ndim != 1 or t.shape[0] not in (1, batch):
    raise ValueError(f"{name} must be a scalar or have shape [{batch}] (one per sample), "
                     f"got shape {tuple(t.shape)}")
  return jnp.broadcast_to(t, (batch,))


class TimestepEmbedding(nn.Module):
  """`linear_2(act(linear_1(x)))` (+ optional `cond_proj`), as diffusers' TimestepEmbedding."""
  time_embed_dim: int
  act: str = "silu"
  out_dim: int | None = None
  post_act: str | None = None
  cond_proj_dim: int | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, sample: jax.Array, condition: jax.Array | None = None) -> jax.Array:
    if condition is not None:
      if self.cond_proj_dim is None:
        raise ValueError("timestep_cond was given but the config has no time_cond_proj_dim")
      sample = sample + Dense(sample.shape[-1], axes=("embed", "embed"), use_bias=False,
                              dtype=self.dtype, name="cond_proj")(condition)
    x = Dense(self.time_embed_dim, axes=("embed", "mlp"), dtype=self.dtype,
              name="linear_1")(sample)
    x = act_fn(self.act)(x)
    x = Dense(self.out_dim or self.time_embed_dim, axes=("mlp", "embed"), dtype=self.dtype,
              name="linear_2")(x)
    if self.post_act is not None:
      x = act_fn(self.post_act)(x)
    return x


def mlp_embedding(x: jax.Array, prefix: str, hidden: int, out: int,
                  dtype: Any = jnp.float32) -> jax.Array:
  """`nn.Sequential(Linear, SiLU, Linear)` built inside the calling compact module.

  Submodules are named `<prefix>_0` and `<prefix>_2`, mirroring PyTorch's `<prefix>.0` and
  `<prefix>.2`; call only from within a `@nn.compact` method.
  """
  x = Dense(hidden, axes=("embed", "mlp"), dtype=dtype, name=f"{prefix}_0")(x)
  x = jax.nn.silu(x)
  return Dense(out, axes=("mlp", "embed"), dtype=dtype, name=f"{prefix}_2")(x)


def fourier_box_embedding(num_freqs: int, boxes: jax.Array) -> jax.Array:
  """`[B, N, 4] -> [B, N, num_freqs * 2 * 4]` (diffusers `get_fourier_embeds_from_boundingbox`)."""
  b, n = boxes.shape[:2]
  freqs = 100.0 ** (jnp.arange(num_freqs, dtype=jnp.float32) / num_freqs)
  emb = freqs[None, None, None, :].astype(boxes.dtype) * boxes[..., None]  # [B, N, 4, F]
  emb = jnp.stack([jnp.sin(emb), jnp.cos(emb)], axis=-1)  # [B, N, 4, F, 2]
  emb = jnp.transpose(emb, (0, 1, 3, 4, 2))  # [B, N, F, 2, 4]
  return emb.reshape(b, n, num_freqs * 2 * 4)
