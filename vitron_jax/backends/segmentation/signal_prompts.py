"""Condition tokens for the segmentation backend: signal prompts and the text projection.

The backend's condition is `[B, K, C]` extra *sparse prompt tokens* (C = SAM's prompt width),
appended after any point/box tokens (`sam.join_sparse`). They come from

* the VITRON hybrid head (routing "embedding"/"superlink"): its projector already outputs
  tokens in this space, they are used as they are;
* the command's text embedding (routing "text"): `TextPromptProjection` maps a CLIP text
  embedding `[B, D]` (pooled) or `[B, L, D]` (per token, with an optional validity mask) to K
  tokens with K learned queries attending over the projected text;
* both ("hybrid"): signal tokens then text tokens, `[B, 2K, C]`.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vitron_jax.backends.segmentation.config import SegmentationConfig
from vitron_jax.nn.attention import dot_product_attention
from vitron_jax.nn.layers import Dense
from vitron_jax.nn.mlp import MLP
from vitron_jax.nn.norms import LayerNorm


def check_text_embedding(text: jax.Array, text_dim: int, mask: jax.Array | None = None,
                         name: str = "text_embedding") -> None:
  if text.ndim not in (2, 3) or text.shape[-1] != text_dim:
    raise ValueError(f"{name} must be [batch, {text_dim}] (pooled) or [batch, tokens, "
                     f"{text_dim}], got shape {tuple(text.shape)}")
  if mask is not None:
    if text.ndim != 3 or tuple(mask.shape) != tuple(text.shape[:2]):
      raise ValueError(f"{name} mask must be [batch, tokens] = {tuple(text.shape[:2])} for a "
                       f"per-token embedding, got {tuple(mask.shape)}")
  if not jnp.issubdtype(text.dtype, jnp.floating):
    raise TypeError(f"{name} must be a float embedding array, got dtype {text.dtype}")


class TextPromptProjection(nn.Module):
  """`[B, D]` or `[B, L, D]` text embedding -> `[B, K, C]` sparse prompt tokens."""
  num_tokens: int
  width: int
  text_dim: int
  heads: int = 4
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, text: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    check_text_embedding(text, self.text_dim, mask)
    if text.ndim == 2:
      text = text[:, None]
    b, c, h = text.shape[0], self.width, self.heads
    kv = Dense(c, axes=("embed", "mlp"), dtype=self.dtype, name="in_proj")(text)
    kv = LayerNorm(eps=1e-6, dtype=self.dtype, name="in_norm")(kv)
    queries = self.param("queries", nn.with_logical_partitioning(
        nn.initializers.normal(1.0), (None, "embed")), (self.num_tokens, c))
    q0 = jnp.broadcast_to(queries.astype(self.dtype)[None], (b, self.num_tokens, c))
    split = lambda x: x.reshape(x.shape[:-1] + (h, c // h))
    q = Dense(c, axes=("embed", "heads"), dtype=self.dtype, name="q_proj")(q0)
    k = Dense(c, axes=("embed", "heads"), dtype=self.dtype, name="k_proj")(kv)
    v = Dense(c, axes=("embed", "heads"), dtype=self.dtype, name="v_proj")(kv)
    attn_mask = None if mask is None else mask.astype(bool)[:, None, None, :]
    out = dot_product_attention(split(q), split(k), split(v), mask=attn_mask)
    x = q0 + Dense(c, axes=("heads", "embed"), dtype=self.dtype, name="out_proj")(
        out.reshape(b, self.num_tokens, c))
    x = LayerNorm(eps=1e-6, dtype=self.dtype, name="norm1")(x)
    x = x + MLP(2 * c, act="gelu", dtype=self.dtype, name="mlp")(x)
    return LayerNorm(eps=1e-6, dtype=self.dtype, name="norm2")(x)


class SignalPrompts(nn.Module):
  """The backend's own condition parameters (`text_projection`) and the routing logic."""
  config: SegmentationConfig

  def setup(self):
    cfg = self.config
    self.text_projection = TextPromptProjection(cfg.num_signal_tokens, cfg.width, cfg.text_dim,
                                                cfg.text_heads,
                                                dtype=jnp.dtype(cfg.sam.dtype))

  def text(self, text: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Native condition from a text embedding: `[B, K, C]`."""
    return self.text_projection(text, mask)

  def __call__(self, signal: jax.Array | None = None, text: jax.Array | None = None,
               text_mask: jax.Array | None = None) -> jax.Array:
    """Condition tokens by routing mode (see module docstring)."""
    cfg = self.config
    k, c = cfg.num_signal_tokens, cfg.width
    if cfg.routing in ("embedding", "superlink", "hybrid"):
      if signal is None:
        raise ValueError(f"routing {cfg.routing!r} needs signal tokens [batch, {k}, {c}]")
      check_signal(signal, k, c)
    if cfg.routing in ("text", "hybrid"):
      if text is None:
        raise ValueError(f"routing {cfg.routing!r} needs a text_embedding [batch, "
                         f"{cfg.text_dim}] or [batch, tokens, {cfg.text_dim}]")
      t = self.text(text, text_mask)
      return t if cfg.routing == "text" else jnp.concatenate([signal.astype(t.dtype), t], 1)
    return signal


def check_signal(signal: jax.Array, k: int | None, width: int, name: str = "condition") -> None:
  """Signal tokens must be `[B, K, width]` floats (K fixed when given)."""
  if signal.ndim != 3 or signal.shape[-1] != width or (k is not None and signal.shape[1] != k):
    raise ValueError(f"{name} (signal prompt tokens) must be [batch, {k if k else 'K'}, "
                     f"{width}], got shape {tuple(signal.shape)}")
  if not jnp.issubdtype(signal.dtype, jnp.floating):
    raise TypeError(f"{name} must be a float array, got dtype {signal.dtype}")
