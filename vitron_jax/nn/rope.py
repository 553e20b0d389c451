"""Rotary position embeddings as Llama uses them (transformers' `rotate_half` convention).

Supported `rope_type`s, as Llama-2/3 configs carry them: "default", "linear" (position
interpolation), "dynamic" (dynamic NTK: the base grows with the current sequence length),
"llama3" (wavelength-dependent smoothing of the frequencies).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp

ROPE_TYPES = ("default", "linear", "dynamic", "llama3")


@dataclasses.dataclass(frozen=True)
class RopeConfig:
  head_dim: int
  theta: float = 10000.0
  rope_type: str = "default"
  factor: float = 1.0
  max_position_embeddings: int = 4096
  original_max_position_embeddings: int | None = None
  low_freq_factor: float = 1.0
  high_freq_factor: float = 4.0

  def __post_init__(self):
    if self.rope_type not in ROPE_TYPES:
      raise ValueError(f"rope_type {self.rope_type!r} is not supported; expected one of "
                       f"{ROPE_TYPES}")
    if self.head_dim % 2:
      raise ValueError(f"rotary head_dim must be even, got {self.head_dim}")

  @classmethod
  def from_hf(cls, head_dim: int, max_position_embeddings: int,
              rope_parameters: Mapping[str, Any] | None, rope_theta: float | None = None):
    """Build from a transformers config's `rope_parameters` (v5) or `rope_scaling` (v4)."""
    p = dict(rope_parameters or {})
    rope_type = p.get("rope_type", p.get("type", "default"))
    theta = p.get("rope_theta", rope_theta if rope_theta is not None else 10000.0)
    return cls(
        head_dim=head_dim, theta=float(theta), rope_type=rope_type,
        factor=float(p.get("factor", 1.0)),
        max_position_embeddings=max_position_embeddings,
        original_max_position_embeddings=p.get("original_max_position_embeddings"),
        low_freq_factor=float(p.get("low_freq_factor", 1.0)),
        high_freq_factor=float(p.get("high_freq_factor", 4.0)))

  def to_hf(self) -> dict[str, Any]:
    d: dict[str, Any] = {"rope_type": self.rope_type, "rope_theta": self.theta}
    if self.rope_type != "default":
      d["factor"] = self.factor
    if self.rope_type == "llama3":
      d.update(low_freq_factor=self.low_freq_factor, high_freq_factor=self.high_freq_factor,
               original_max_position_embeddings=self.original_max_position_embeddings)
    return d


def _base_inv_freq(dim: int, theta) -> jax.Array:
  return 1.0 / (theta ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim))


def inverse_frequencies(cfg: RopeConfig, seq_len: jax.Array | int | None = None) -> jax.Array:
  """`[head_dim // 2]` inverse frequencies; `seq_len` matters only for "dynamic"."""
  dim = cfg.head_dim
  if cfg.rope_type == "default":
    return _base_inv_freq(dim, cfg.theta)
  if cfg.rope_type == "linear":
    return _base_inv_freq(dim, cfg.theta) / cfg.factor
  if cfg.rope_type == "dynamic":
    max_pos = cfg.original_max_position_embeddings or cfg.max_position_embeddings
    if seq_len is None:
      seq_len = max_pos
    seq_len = jnp.maximum(jnp.asarray(seq_len, jnp.float32), max_pos)
    base = cfg.theta * ((cfg.factor * seq_len / max_pos) - (cfg.factor - 1)) ** (dim / (dim - 2))
    return 1.0 / (base ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim))
  # llama3
  inv = _base_inv_freq(dim, cfg.theta)
  old_ctx = cfg.original_max_position_embeddings or cfg.max_position_embeddings
  low_wl = old_ctx / cfg.low_freq_factor
  high_wl = old_ctx / cfg.high_freq_factor
  wavelen = 2 * math.pi / inv
  inv_l = jnp.where(wavelen > low_wl, inv / cfg.factor, inv)
  smooth = (old_ctx / wavelen - cfg.low_freq_factor) / (cfg.high_freq_factor - cfg.low_freq_factor)
  smoothed = (1 - smooth) * inv_l / cfg.factor + smooth * inv_l
  is_medium = (wavelen >= high_wl) & (wavelen <= low_wl)
  return jnp.where(is_medium, smoothed, inv_l)


def rope_frequencies(cfg: RopeConfig, positions: jax.Array,
                     seq_len: jax.Array | int | None = None) -> tuple[jax.Array, jax.Array]:
  """cos and sin of shape `[*positions.shape, head_dim]` (fp32)."""
  if cfg.rope_type == "dynamic" and seq_len is None:
    seq_len = jnp.max(positions) + 1
  inv = inverse_frequencies(cfg, seq_len)
  freqs = positions.astype(jnp.float32)[..., None] * inv
  emb = jnp.concatenate([freqs, freqs], axis=-1)
  return jnp.cos(emb), jnp.sin(emb)


def _rotate_half(x):
  x1, x2 = jnp.split(x, 2, axis=-1)
  return jnp.concatenate([-x2, x1], axis=-1)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """Rotate `x` of shape `[B, T, heads, head_dim]` with cos/sin `[B, T, head_dim]`."""
  cos = cos[:, :, None, :].astype(x.dtype)
  sin = sin[:, :, None, :].astype(x.dtype)
  return x * cos + _rotate_half(x) * sin
