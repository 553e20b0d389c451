"""The segmentation backend's own text encoder: command token ids -> a pooled text embedding.

SEEM (VITRON's segmenter) reads the command with its own language encoder; the hybrid head's
native condition for segmentation is that encoder's output through `TextPromptProjection`
(`SignalPrompts.text`). No pretrained one exists for PixelWorld, so `CommandEncoder` is small
and trained with the backend (`train.segmenter_task`): token embeddings (padding left out), a
learned position table, the masked mean over the command's tokens, and an MLP.

    enc = CommandEncoder(vocab_size=len(tok), dim=64, max_len=16, pad_id=tok.pad_token_id)
    emb = enc.apply({"params": p}, ids)   # [B, L] int -> [B, dim]
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from vitron_jax.nn.layers import Embed
from vitron_jax.nn.mlp import MLP
from vitron_jax.nn.norms import LayerNorm


class CommandEncoder(nn.Module):
  """`[B, L]` token ids -> `[B, dim]` (see the module docstring)."""
  vocab_size: int
  dim: int
  max_len: int
  pad_id: int

  @nn.compact
  def __call__(self, ids: jax.Array) -> jax.Array:
    if ids.ndim != 2 or not jnp.issubdtype(ids.dtype, jnp.integer):
      raise ValueError(f"command token ids must be an int array [batch, tokens], got "
                       f"{ids.dtype} {tuple(ids.shape)}")
    if ids.shape[1] > self.max_len:
      raise ValueError(f"command of {ids.shape[1]} tokens exceeds the text encoder's max_len "
                       f"{self.max_len}")
    x = Embed(self.vocab_size, self.dim, name="token_embedding")(ids)
    pos = self.param("position_embedding", nn.with_logical_partitioning(
        nn.initializers.normal(0.02), (None, "embed")), (self.max_len, self.dim))
    x = x + pos[None, :ids.shape[1]]
    valid = (ids != self.pad_id).astype(x.dtype)[..., None]
    pooled = (x * valid).sum(1) / jnp.maximum(valid.sum(1), 1.0)
    pooled = LayerNorm(eps=1e-6, name="norm")(pooled)
    return pooled + MLP(2 * self.dim, name="mlp")(pooled)
