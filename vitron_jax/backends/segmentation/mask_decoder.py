"""SAM's two-way transformer mask decoder in Flax, with IoU head and multi-mask output.

Names follow transformers' `SamMaskDecoder` (`iou_token`, `mask_tokens`, `transformer/
{layers_i/{self_attn,layer_norm1,cross_attn_token_to_image,layer_norm2,mlp,layer_norm3,
layer_norm4,cross_attn_image_to_token},final_attn_token_to_image,layer_norm_final_attn}`,
`upscale_conv1`, `upscale_conv2`, `upscale_layer_norm`, `output_hypernetworks_mlps_i`,
`iou_prediction_head`).

Shapes: image embeddings and dense prompts `[B, E, E, C]`, image positional encoding
`[E, E, C]`, sparse prompts `[B, P, n, C]` (P masks per image) -> masks `[B, P, M, 4E, 4E]`
(logits) and IoU predictions `[B, P, M]`, with M = num_multimask_outputs or 1.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vitron_jax.backends.segmentation.config import SamMaskDecoderConfig
from vitron_jax.backends.segmentation.layers import ConvTranspose2x2, FeedForward, TokenTable
from vitron_jax.nn.attention import dot_product_attention
from vitron_jax.nn.layers import Dense
from vitron_jax.nn.mlp import MLP
from vitron_jax.nn.norms import LayerNorm


class SamAttention(nn.Module):
  """Attention with an optional down-projected inner width: `[N, Lq, C] x [N, Lk, C]`."""
  config: SamMaskDecoderConfig
  downsample_rate: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    cfg = self.config
    inner = cfg.hidden_size // self.downsample_rate
    heads = cfg.num_attention_heads
    kw = dict(dtype=self.dtype)
    q = Dense(inner, axes=("embed", "heads"), name="q_proj", **kw)(q)
    k = Dense(inner, axes=("embed", "heads"), name="k_proj", **kw)(k)
    v = Dense(inner, axes=("embed", "heads"), name="v_proj", **kw)(v)
    split = lambda x: x.reshape(x.shape[:-1] + (heads, inner // heads))
    out = dot_product_attention(split(q), split(k), split(v))
    out = out.reshape(out.shape[:-2] + (inner,))
    return Dense(cfg.hidden_size, axes=("heads", "embed"), name="out_proj", **kw)(out)


class SamTwoWayAttentionBlock(nn.Module):
  """Token self-attention, token->image, MLP, image->token; post-norm residuals."""
  config: SamMaskDecoderConfig
  skip_first_layer_pe: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, queries, keys, query_pe, key_pe):
    cfg = self.config
    ln = lambda name: LayerNorm(eps=cfg.layer_norm_eps, dtype=self.dtype, name=name)
    rate = cfg.attention_downsample_rate
    self_attn = SamAttention(cfg, 1, dtype=self.dtype, name="self_attn")
    if self.skip_first_layer_pe:
      queries = self_attn(queries, queries, queries)
    else:
      q = queries + query_pe
      queries = queries + self_attn(q, q, queries)
    queries = ln("layer_norm1")(queries)

    q, k = queries + query_pe, keys + key_pe
    queries = queries + SamAttention(cfg, rate, dtype=self.dtype,
                                     name="cross_attn_token_to_image")(q, k, keys)
    queries = ln("layer_norm2")(queries)

    queries = queries + MLP(cfg.mlp_dim, act=cfg.hidden_act, names=("lin1", "lin2"),
                            dtype=self.dtype, name="mlp")(queries)
    queries = ln("layer_norm3")(queries)

    q, k = queries + query_pe, keys + key_pe
    keys = keys + SamAttention(cfg, rate, dtype=self.dtype,
                               name="cross_attn_image_to_token")(k, q, queries)
    keys = ln("layer_norm4")(keys)
    return queries, keys


class SamTwoWayTransformer(nn.Module):
  """`num_hidden_layers` two-way blocks plus a final token->image attention."""
  config: SamMaskDecoderConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens: jax.Array, image: jax.Array, image_pe: jax.Array):
    """tokens `[N, T, C]`, image and image_pe `[N, E*E, C]` -> (tokens, image)."""
    cfg = self.config
    queries, keys = tokens, image
    for i in range(cfg.num_hidden_layers):
      queries, keys = SamTwoWayAttentionBlock(cfg, skip_first_layer_pe=(i == 0),
                                              dtype=self.dtype, name=f"layers_{i}")(
                                                  queries, keys, tokens, image_pe)
    q, k = queries + tokens, keys + image_pe
    queries = queries + SamAttention(cfg, cfg.attention_downsample_rate, dtype=self.dtype,
                                     name="final_attn_token_to_image")(q, k, keys)
    queries = LayerNorm(eps=1e-5, dtype=self.dtype, name="layer_norm_final_attn")(queries)
    return queries, keys


class SamMaskDecoder(nn.Module):
  """Predicts mask logits and IoU scores from image embeddings and prompt embeddings."""
  config: SamMaskDecoderConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, image_embeddings: jax.Array, image_pe: jax.Array,
               sparse: jax.Array | None, dense: jax.Array,
               multimask_output: bool = True) -> tuple[jax.Array, jax.Array]:
    cfg = self.config
    b, e, _, c = image_embeddings.shape
    m = cfg.num_multimask_outputs + 1
    p = sparse.shape[1] if sparse is not None else 1
    out_tokens = jnp.concatenate([TokenTable(1, c, name="iou_token")(),
                                  TokenTable(m, c, name="mask_tokens")()], axis=0)
    out_tokens = jnp.broadcast_to(out_tokens.astype(self.dtype), (b, p, 1 + m, c))
    tokens = out_tokens if sparse is None else jnp.concatenate(
        [out_tokens, sparse.astype(self.dtype)], axis=2)
    n_tok = tokens.shape[2]
    tokens = tokens.reshape(b * p, n_tok, c)

    image = (image_embeddings + dense).astype(self.dtype).reshape(b, 1, e * e, c)
    image = jnp.broadcast_to(image, (b, p, e * e, c)).reshape(b * p, e * e, c)
    pe = jnp.broadcast_to(image_pe.astype(self.dtype).reshape(1, e * e, c), (b * p, e * e, c))

    hs, image = SamTwoWayTransformer(cfg, dtype=self.dtype, name="transformer")(tokens, image, pe)
    iou_out = hs[:, 0]
    mask_out = hs[:, 1:1 + m]

    x = image.reshape(b * p, e, e, c)
    x = ConvTranspose2x2(c // 4, dtype=self.dtype, name="upscale_conv1")(x)
    x = jax.nn.gelu(LayerNorm(eps=1e-6, dtype=self.dtype, name="upscale_layer_norm")(x),
                    approximate=False)
    x = jax.nn.gelu(ConvTranspose2x2(c // 8, dtype=self.dtype, name="upscale_conv2")(x),
                    approximate=False)  # [b*p, 4e, 4e, c/8]
    hyper = jnp.stack([FeedForward(c, c // 8, 3, dtype=self.dtype,
                                   name=f"output_hypernetworks_mlps_{i}")(mask_out[:, i])
                       for i in range(m)], axis=1)  # [b*p, m, c/8]
    masks = jnp.einsum("nmc,nhwc->nmhw", hyper, x)
    iou = FeedForward(cfg.iou_head_hidden_dim, m, cfg.iou_head_depth, dtype=self.dtype,
                      name="iou_prediction_head")(iou_out)
    masks = masks.reshape(b, p, m, 4 * e, 4 * e)
    iou = iou.reshape(b, p, m)
    sl = slice(1, None) if multimask_output else slice(0, 1)
    return masks[:, :, sl], iou[:, :, sl]
