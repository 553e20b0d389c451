"""GLIGEN grounding: box inputs, the text-only position net and gated self-attention.

A GLIGEN UNet (`attention_type="gated"`) takes, besides the text context, up to `max_objs`
grounded phrases: normalised boxes `[B, N, 4]` (x0, y0, x1, y1 in [0, 1]), one phrase
embedding each `[B, N, D]` (the pooled text-encoder output of the phrase; D = the UNet's
`cross_attention_dim`) and a validity mask `[B, N]` (1 = real phrase, 0 = padding). The
position net turns them into grounding tokens `[B, N, D]`, and every transformer block's
`fuser` (gated self-attention) attends over `[visual tokens; grounding tokens]`.

`enabled` (optional scalar) switches the fusers off inside a jitted sampler without
retracing: diffusers' scheduled sampling (`gligen_scheduled_sampling_beta`) turns grounding
off after the first `beta * steps` steps.
"""
from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vitron_jax.backends.diffusion.cross_attention import Attention, FeedForward
from vitron_jax.backends.diffusion.embeddings import fourier_box_embedding
from vitron_jax.nn.layers import Dense
from vitron_jax.nn.norms import LayerNorm

#: diffusers' StableDiffusionGLIGENPipeline pads/truncates phrases to 30.
DEFAULT_MAX_OBJS = 30


@flax.struct.dataclass
class GligenInputs:
  """Grounding inputs of one UNet call (a pytree; passes through `jit`).

  boxes: `[B, N, 4]` (x0, y0, x1, y1) normalised to [0, 1].
  positive_embeddings: `[B, N, D]` phrase embeddings.
  masks: `[B, N]` 1 for real phrases, 0 for padding slots.
  enabled: optional scalar; when false the gated self-attention layers are skipped.
  """
  boxes: jax.Array
  positive_embeddings: jax.Array
  masks: jax.Array
  enabled: jax.Array | None = None


def _concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)


def check_gligen_inputs(g: GligenInputs, batch: int, max_objs: int, positive_len: int) -> None:
  """Shapes always; value ranges when the arrays are concrete (outside jit)."""
  boxes, emb, masks = g.boxes, g.positive_embeddings, g.masks
  if boxes.ndim != 3 or boxes.shape[-1] != 4 or boxes.shape[0] != batch:
    raise ValueError(f"gligen boxes must have shape [batch={batch}, phrases, 4] (x0, y0, x1, y1),"
                     f" got {tuple(boxes.shape)}")
  n = boxes.shape[1]
  if n > max_objs:
    raise ValueError(f"gligen: {n} phrases given, but the position net takes at most "
                     f"max_objs={max_objs}")
  if emb.shape != (batch, n, positive_len):
    raise ValueError(f"gligen positive_embeddings must have shape [{batch}, {n}, {positive_len}]"
                     f" (one phrase embedding per box), got {tuple(emb.shape)}")
  if masks.shape != (batch, n):
    raise ValueError(f"gligen masks must have shape [{batch}, {n}] (one per box), "
                     f"got {tuple(masks.shape)}")
  if _concrete(boxes):
    b = np.asarray(boxes)
    if b.size and (not np.all(np.isfinite(b)) or b.min() < 0.0 or b.max() > 1.0):
      raise ValueError("gligen boxes must be normalised to [0, 1] (x0, y0, x1, y1 as fractions of "
                       f"the image size); got values in [{b.min()}, {b.max()}]")
  if _concrete(masks):
    m = np.asarray(masks)
    if m.size and not np.all((m == 0) | (m == 1)):
      raise ValueError("gligen masks must be 0 or 1 per phrase")


class GLIGENTextBoundingboxProjection(nn.Module):
  """The "text-only" position net: `[B, N, D] x [B, N, 4] -> [B, N, out_dim]`.

  Padding slots (mask 0) use the learned `null_positive_feature` / `null_position_feature`.
  """
  positive_len: int
  out_dim: int
  fourier_freqs: int = 8
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, boxes: jax.Array, masks: jax.Array,
               positive_embeddings: jax.Array) -> jax.Array:
    position_dim = self.fourier_freqs * 2 * 4
    zeros = nn.initializers.zeros
    null_pos = self.param("null_positive_feature",
                          nn.with_logical_partitioning(zeros, (None,)), (self.positive_len,))
    null_xyxy = self.param("null_position_feature",
                           nn.with_logical_partitioning(zeros, (None,)), (position_dim,))
    m = masks.astype(jnp.float32)[..., None]
    xyxy = fourier_box_embedding(self.fourier_freqs, boxes.astype(jnp.float32))
    xyxy = xyxy * m + (1 - m) * null_xyxy[None, None]
    pos = positive_embeddings * m + (1 - m) * null_pos[None, None]
    h = jnp.concatenate([pos, xyxy], axis=-1).astype(self.dtype)
    h = Dense(512, axes=("embed", "mlp"), dtype=self.dtype, name="linears_0")(h)
    h = Dense(512, axes=(None, "mlp"), dtype=self.dtype, name="linears_2")(jax.nn.silu(h))
    return Dense(self.out_dim, axes=("mlp", "embed"), dtype=self.dtype,
                 name="linears_4")(jax.nn.silu(h))


class GatedSelfAttentionDense(nn.Module):
  """`x + tanh(a_attn) * attn(LN([x; linear(objs)]))[:, :n] ; x + tanh(a_dense) * ff(LN(x))`.

  x: `[B, L, query_dim]` visual tokens; objs: `[B, N, context_dim]` grounding tokens.
  """
  query_dim: int
  heads: int
  dim_head: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, objs: jax.Array,
               enabled: jax.Array | None = None) -> jax.Array:
    zeros = nn.initializers.zeros
    alpha_attn = self.param("alpha_attn", nn.with_logical_partitioning(zeros, ()), ())
    alpha_dense = self.param("alpha_dense", nn.with_logical_partitioning(zeros, ()), ())
    n_visual = x.shape[1]
    objs = Dense(self.query_dim, axes=("embed", None), dtype=self.dtype, name="linear")(objs)
    h = LayerNorm(dtype=self.dtype, name="norm1")(jnp.concatenate([x, objs], axis=1))
    attn = Attention(self.heads, self.dim_head, dtype=self.dtype, name="attn")(h)
    y = x + jnp.tanh(alpha_attn) * attn[:, :n_visual]
    ff = FeedForward(activation_fn="geglu", dtype=self.dtype, name="ff")(
        LayerNorm(dtype=self.dtype, name="norm2")(y))
    y = y + jnp.tanh(alpha_dense) * ff
    if enabled is not None:
      y = jnp.where(jnp.asarray(enabled, bool), y, x)
    return y
