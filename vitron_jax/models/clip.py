"""CLIP vision and text towers (transformers' `CLIPVisionModel[WithProjection]` and
`CLIPTextModel[WithProjection]`) in Flax linen.

Parameter trees mirror the HF names of the tower (the part under `vision_model.` /
`text_model.`), plus the optional projection:

  vision: embeddings/{class_embedding, patch_embedding/kernel, position_embedding/embedding},
          pre_layrnorm, encoder/layers_{i}/..., post_layernorm, [visual_projection/kernel]
  text:   embeddings/{token_embedding/embedding, position_embedding/embedding},
          encoder/layers_{i}/..., final_layer_norm, [text_projection/kernel]

Images are channels-last floats `[B, H, W, C]` (already normalised with the CLIP mean/std).
With `interpolate_pos_encoding=True` any size that is a multiple of the patch size works: the
patch position embeddings are resized with PyTorch's bicubic rule (A = -0.75,
align_corners=False, no antialias; `vitron_jax.nn.interpolate`), exactly as HF does, and the
class-token position is kept.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vitron_jax.models.clip_config import CLIPTextConfig, CLIPVisionConfig
from vitron_jax.models.clip_encoder import ACT_AXES, CLIPEncoder
from vitron_jax.nn.checks import check_images, check_token_ids
from vitron_jax.nn.interpolate import resize_bicubic_torch
from vitron_jax.nn.layers import Dense, Embed, default_kernel_init
from vitron_jax.nn.norms import LayerNorm
from vitron_jax.nn.patch_embed import PatchEmbed


@flax.struct.dataclass
class CLIPVisionOutput:
  """last_hidden_state `[B, 1+N, D]`; pooler_output `[B, D]` (post-layernormed CLS);
  hidden_states: `num_layers + 1` arrays `[B, 1+N, D]` (embeddings after pre_layrnorm, then
  each layer) when asked; image_embeds `[B, projection_dim]` with the projection."""
  last_hidden_state: jax.Array
  pooler_output: jax.Array
  hidden_states: Optional[tuple[jax.Array, ...]] = None
  image_embeds: Optional[jax.Array] = None


@flax.struct.dataclass
class CLIPTextOutput:
  """last_hidden_state `[B, L, D]` (after final_layer_norm); pooler_output `[B, D]` (EOS
  token); hidden_states: `num_layers + 1` arrays `[B, L, D]` (embeddings, then each layer,
  the last one before final_layer_norm) when asked; text_embeds `[B, projection_dim]`."""
  last_hidden_state: jax.Array
  pooler_output: jax.Array
  hidden_states: Optional[tuple[jax.Array, ...]] = None
  text_embeds: Optional[jax.Array] = None


class LearnedTable(nn.Module):
  """A learned `[num, features]` table (position embeddings), stored as `embedding`."""
  num: int
  features: int
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self) -> jax.Array:
    return self.param("embedding",
                      nn.with_logical_partitioning(default_kernel_init, (None, "embed")),
                      (self.num, self.features), self.param_dtype)


class CLIPVisionEmbeddings(nn.Module):
  """`[B, H, W, C]` -> `[B, 1 + (H/p)(W/p), D]`: CLS + patch embeddings + positions."""
  config: CLIPVisionConfig
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, pixel_values: jax.Array, interpolate_pos_encoding: bool = False):
    c = self.config
    if interpolate_pos_encoding:
      check_images(pixel_values, channels=c.num_channels, multiple_of=c.patch_size,
                   name="pixel_values")
    else:
      check_images(pixel_values, channels=c.num_channels, size=c.image_size,
                   name="pixel_values (interpolate_pos_encoding=False)")
    b, h, w, _ = pixel_values.shape
    patches = PatchEmbed(c.hidden_size, c.patch_size, use_bias=False, dtype=self.dtype,
                         param_dtype=self.param_dtype, name="patch_embedding")(pixel_values)
    gh, gw = h // c.patch_size, w // c.patch_size
    patches = patches.reshape(b, gh * gw, c.hidden_size)
    cls = self.param("class_embedding",
                     nn.with_logical_partitioning(nn.initializers.normal(c.hidden_size ** -0.5),
                                                  ("embed",)),
                     (c.hidden_size,), self.param_dtype)
    cls = jnp.broadcast_to(cls.astype(self.dtype), (b, 1, c.hidden_size))
    x = jnp.concatenate([cls, patches], axis=1)
    pos = LearnedTable(c.num_positions, c.hidden_size, self.param_dtype,
                       name="position_embedding")()
    if interpolate_pos_encoding:
      pos = interpolate_position_embedding(pos, (gh, gw))
    return x + pos.astype(self.dtype)[None]


def interpolate_position_embedding(pos: jax.Array, grid: tuple[int, int]) -> jax.Array:
  """`[1 + g*g, D]` -> `[1 + gh*gw, D]` as HF's `interpolate_pos_encoding` (torch bicubic).

  Like HF, the table is returned unchanged when the grid has as many patches as the table and
  the image is square.
  """
  n, d = pos.shape
  g = int(round((n - 1) ** 0.5))
  if g * g != n - 1:
    raise ValueError(f"position embedding table of {n} rows is not 1 + a square grid")
  gh, gw = grid
  if gh * gw == n - 1 and gh == gw:
    return pos
  patch = resize_bicubic_torch(pos[1:].reshape(g, g, d), (gh, gw)).reshape(gh * gw, d)
  return jnp.concatenate([pos[:1], patch], axis=0)


def layer_index(select_layer: int, num_layers: int) -> int:
  idx = select_layer + num_layers + 1 if select_layer < 0 else select_layer
  if not 0 <= idx <= num_layers:
    raise ValueError(f"select_layer must be in [-{num_layers + 1}, {num_layers}] (0 = "
                     f"embeddings, {num_layers} = last layer), got {select_layer}")
  return idx


class CLIPVisionModel(nn.Module):
  """CLIP ViT (HF `CLIPVisionModel`, or `...WithProjection` when `with_projection`)."""
  config: CLIPVisionConfig
  with_projection: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def setup(self):
    c, kw = self.config, dict(dtype=self.dtype, param_dtype=self.param_dtype)
    self.embeddings = CLIPVisionEmbeddings(c, **kw)
    self.pre_layrnorm = LayerNorm(eps=c.layer_norm_eps, **kw)
    self.encoder = CLIPEncoder(c, **kw)
    self.post_layernorm = LayerNorm(eps=c.layer_norm_eps, **kw)
    if self.with_projection:
      self.visual_projection = Dense(c.projection_dim, axes=("embed", None), use_bias=False,
                                     **kw)

  def _embed(self, pixel_values, interpolate_pos_encoding):
    x = self.embeddings(pixel_values, interpolate_pos_encoding)
    return nn.with_logical_constraint(self.pre_layrnorm(x), ACT_AXES)

  def __call__(self, pixel_values: jax.Array, *, interpolate_pos_encoding: bool = False,
               output_hidden_states: bool = True) -> CLIPVisionOutput:
    """`pixel_values` `[B, H, W, C]` -> `CLIPVisionOutput` (shapes in its docstring)."""
    x = self._embed(pixel_values, interpolate_pos_encoding)
    last, hidden = self.encoder(x)
    pooled = self.post_layernorm(last[:, 0])
    embeds = self.visual_projection(pooled) if self.with_projection else None
    return CLIPVisionOutput(last_hidden_state=last, pooler_output=pooled,
                            hidden_states=hidden if output_hidden_states else None,
                            image_embeds=embeds)

  def features(self, pixel_values: jax.Array, select_layer: int | Sequence[int] = -2, *,
               with_cls: bool = False, interpolate_pos_encoding: bool = False):
    """Hidden states of chosen layer(s), as LLaVA-style frontends use them.

    `select_layer` indexes `hidden_states` (0 = embeddings after pre_layrnorm, -1 = last
    layer, -2 = penultimate). Only the layers up to the deepest one asked for are run.
    Returns `[B, N, D]` patch tokens (`[B, 1 + N, D]` with `with_cls`), or a tuple of them
    when `select_layer` is a sequence.
    """
    n = self.config.num_hidden_layers
    many = not isinstance(select_layer, (int, np.integer))
    idx = [layer_index(int(s), n) for s in (select_layer if many else [select_layer])]
    if not idx:
      raise ValueError("select_layer must name at least one layer")
    x = self._embed(pixel_values, interpolate_pos_encoding)
    _, hidden = self.encoder(x, num_layers=max(idx))
    out = tuple(hidden[i] if with_cls else hidden[i][:, 1:] for i in idx)
    return out if many else out[0]


class CLIPTextEmbeddings(nn.Module):
  """`[B, L]` ids (+ optional `[B, L]` positions) -> `[B, L, D]` token + position embeddings."""
  config: CLIPTextConfig
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, input_ids: jax.Array, position_ids: jax.Array | None = None):
    c = self.config
    tok = Embed(c.vocab_size, c.hidden_size, dtype=self.dtype, param_dtype=self.param_dtype,
                name="token_embedding")(input_ids)
    table = LearnedTable(c.max_position_embeddings, c.hidden_size, self.param_dtype,
                         name="position_embedding")()
    if position_ids is None:
      pos = table[None, : input_ids.shape[1]]
    else:
      pos = jnp.take(table, position_ids, axis=0)
    return tok + pos.astype(self.dtype)


def eos_positions(input_ids: jax.Array, config: CLIPTextConfig) -> jax.Array:
  """`[B]` pooled positions with HF's rule (argmax of ids if eos_token_id == 2, else the first
  eos). Concrete ids without any eos (new rule) raise instead of silently pooling token 0."""
  if config.legacy_eos:
    return jnp.argmax(input_ids, axis=-1)
  is_eos = input_ids == config.eos_token_id
  if not isinstance(is_eos, jax.core.Tracer):
    rows = np.flatnonzero(~np.asarray(is_eos).any(-1))
    if rows.size:
      raise ValueError(f"input_ids rows {rows.tolist()[:10]} contain no eos_token_id "
                       f"{config.eos_token_id}; the pooled output is taken at the first EOS "
                       "token, so every sequence must contain one")
  return jnp.argmax(is_eos.astype(jnp.int32), axis=-1)


class CLIPTextModel(nn.Module):
  """CLIP text transformer (HF `CLIPTextModel`, or `...WithProjection` when `with_projection`)."""
  config: CLIPTextConfig
  with_projection: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None,
               position_ids: jax.Array | None = None, *,
               output_hidden_states: bool = True) -> CLIPTextOutput:
    """`input_ids` `[B, L]` ints; `attention_mask` `[B, L]` (1 = token, 0 = padding)."""
    c, kw = self.config, dict(dtype=self.dtype, param_dtype=self.param_dtype)
    if input_ids.ndim != 2:
      raise ValueError(f"input_ids must be [batch, length], got shape {tuple(input_ids.shape)}")
    b, l = input_ids.shape
    if l > c.max_position_embeddings:
      raise ValueError(f"input_ids length {l} exceeds max_position_embeddings "
                       f"{c.max_position_embeddings}")
    check_token_ids(input_ids, c.vocab_size, name="input_ids")
    mask = None
    if attention_mask is not None:
      if tuple(attention_mask.shape) != (b, l):
        raise ValueError(f"attention_mask must have the shape of input_ids {(b, l)}, got "
                         f"{tuple(attention_mask.shape)}")
      mask = jnp.asarray(attention_mask).astype(bool)[:, None, None, :]
    if position_ids is not None:
      check_token_ids(position_ids, c.max_position_embeddings, name="position_ids")
    x = CLIPTextEmbeddings(c, name="embeddings", **kw)(input_ids, position_ids)
    x = nn.with_logical_constraint(x, ACT_AXES)
    last, hidden = CLIPEncoder(c, name="encoder", **kw)(x, mask=mask, is_causal=True)
    last = LayerNorm(eps=c.layer_norm_eps, name="final_layer_norm", **kw)(last)
    pooled = last[jnp.arange(b), eos_positions(input_ids, c)]
    embeds = None
    if self.with_projection:
      embeds = Dense(c.projection_dim, axes=("embed", None), use_bias=False,
                     name="text_projection", **kw)(pooled)
    return CLIPTextOutput(last_hidden_state=last, pooler_output=pooled,
                          hidden_states=hidden if output_hidden_states else None,
                          text_embeds=embeds)
