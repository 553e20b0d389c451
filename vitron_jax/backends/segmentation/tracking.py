"""Segment and track one object per video through a clip with the SAM decoder plus memory.

Frame 0 is segmented from its prompts (a first-frame mask prompt, points, boxes and/or the
signal tokens). On every later frame the previous frame's mask (binarised, optionally dilated
by `prompt_dilation` low-res cells so that it covers where the object can have moved, as
`+-prompt_logit` low-resolution logits; with dilation the first-frame mask prompt is treated
the same way) is the dense prompt and the signal tokens are applied again; when the previous
mask is empty (the object vanished) the dense prompt falls back to the learned no-mask
embedding, so the frame is re-detected from the signal prompts alone.

Pure and jit-able: frames are encoded in one batch and the recurrence is a `lax.scan`.

Shapes: pixels `[B, T, S, S, 3]`, first-frame mask prompt `[B, 4E, 4E]`, points `[B, 1, N, 2]`,
boxes `[B, 1, 4]`, signal tokens `[B, K, C]` -> low-res logits `[B, T, 4E, 4E]` of the best
mask, scores `[B, T]`, redetected `[B, T]` (True where the frame was re-detected from the
signal prompts), and every decoded mask `all_masks [B, T, M, 4E, 4E]` with `all_iou [B, T, M]`
(the recurrence itself carries no gradient: the carried mask is binarised).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from vitron_jax.backends.segmentation.sam import SamModel


def select_best(masks: jax.Array, iou: jax.Array) -> tuple[jax.Array, jax.Array]:
  """`[B, P, M, h, w]`, `[B, P, M]` -> the highest-scoring mask `[B, P, h, w]` and score."""
  best = jnp.argmax(iou, axis=-1)
  m = jnp.take_along_axis(masks, best[..., None, None, None], axis=2)[:, :, 0]
  s = jnp.take_along_axis(iou, best[..., None], axis=2)[..., 0]
  return m, s


def dilate(mask: jax.Array, radius: int) -> jax.Array:
  """Binary dilation of `[..., h, w]` masks with a `(2r+1)^2` square."""
  if radius <= 0:
    return mask
  k = 2 * radius + 1
  lead = (1,) * (mask.ndim - 2)
  return jax.lax.reduce_window(mask, False, jax.lax.bitwise_or, lead + (k, k), lead + (1, 1),
                               "SAME")


def binary_prompt(low_res: jax.Array, threshold: float, logit: float,
                  dilation: int = 0) -> jax.Array:
  """Low-res logits -> binarised prompt logits (`+logit` inside the mask, dilated by
  `dilation` cells, `-logit` outside)."""
  return jnp.where(dilate(low_res > threshold, dilation), logit, -logit).astype(jnp.float32)


def track(sam: SamModel, params: Any, pixels: jax.Array, *,
          first_mask_prompt: jax.Array | None = None, points: jax.Array | None = None,
          labels: jax.Array | None = None, boxes: jax.Array | None = None,
          signal: jax.Array | None = None, multimask_output: bool = False,
          threshold: float = 0.0, prompt_logit: float = 10.0, prompt_dilation: int = 0,
          image_embeddings: jax.Array | None = None) -> dict[str, jax.Array]:
  """Track through `pixels` `[B, T, S, S, 3]` (or precomputed `image_embeddings`
  `[B, T, E, E, C]`); see the module docstring for the prompts and outputs."""
  src = pixels if image_embeddings is None else image_embeddings
  if src.ndim != 5:
    raise ValueError(f"video must be [batch, frames, height, width, channels], got shape "
                     f"{tuple(src.shape)}")
  b, t = src.shape[:2]
  if t == 0:
    raise ValueError(f"video has no frames (shape {tuple(src.shape)}); at least one frame is "
                     "needed")
  for name, x in (("points", points), ("boxes", boxes)):
    if x is not None and (x.ndim < 2 or x.shape[1] != 1):
      raise ValueError(f"{name} for tracking must prompt one object per video ([batch, 1, "
                       f"...]), got shape {tuple(x.shape)}")
  if first_mask_prompt is None and points is None and boxes is None and signal is None:
    raise ValueError("tracking needs a first-frame prompt: a mask prompt, points, boxes or "
                     "signal tokens")

  apply = lambda method, *a, **k: sam.apply({"params": params}, *a, method=method, **k)
  if image_embeddings is None:
    flat = apply(SamModel.embed_image, pixels.reshape((b * t,) + pixels.shape[2:]))
    image_embeddings = flat.reshape((b, t) + flat.shape[1:])

  if first_mask_prompt is not None and prompt_dilation > 0:
    # The first mask is prompted like every later one: binarised and dilated.
    first_mask_prompt = binary_prompt(first_mask_prompt, threshold, prompt_logit,
                                      prompt_dilation)
  masks0, iou0 = apply(SamModel.decode, image_embeddings[:, 0], points, labels, boxes,
                       first_mask_prompt, signal, multimask_output)
  masks0, iou0 = masks0[:, 0], iou0[:, 0]  # one object: [B, M, h, w], [B, M]
  no_mask = apply(SamModel.encode_dense, None, b)

  def best(masks, iou):
    low, score = select_best(masks[:, None], iou[:, None])
    return low[:, 0], score[:, 0]

  def step(prev, emb):
    prev = jax.lax.stop_gradient(prev)
    vanished = ~(prev > threshold).any(axis=(-2, -1))  # [B]
    dense = apply(SamModel.encode_dense,
                  binary_prompt(prev, threshold, prompt_logit, prompt_dilation), b)
    dense = jnp.where(vanished[:, None, None, None], no_mask, dense)
    masks, iou = apply(SamModel.decode_dense, emb, dense, None, None, None, signal,
                       multimask_output)
    masks, iou = masks[:, 0], iou[:, 0]
    return best(masks, iou)[0], (masks, iou, vanished)

  low0 = best(masks0, iou0)[0]
  if t > 1:
    _, (masks, iou, vanished) = jax.lax.scan(step, low0,
                                             jnp.moveaxis(image_embeddings[:, 1:], 1, 0))
    masks = jnp.concatenate([masks0[:, None], jnp.moveaxis(masks, 0, 1)], axis=1)
    iou = jnp.concatenate([iou0[:, None], jnp.moveaxis(iou, 0, 1)], axis=1)
    redetected = jnp.concatenate([jnp.zeros((b, 1), bool), jnp.moveaxis(vanished, 0, 1)],
                                 axis=1)
  else:
    masks, iou, redetected = masks0[:, None], iou0[:, None], jnp.zeros((b, 1), bool)
  lows, scores = select_best(masks, iou)
  return {"low_res_masks": lows, "scores": scores, "redetected": redetected,
          "all_masks": masks, "all_iou": iou}
