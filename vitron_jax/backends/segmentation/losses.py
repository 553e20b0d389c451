"""Mask losses: sigmoid BCE + dice on masks, MSE of the IoU head against the achieved IoU.

Shapes: logits and targets `[..., H, W]` (targets in {0, 1}); per-mask losses reduce H, W.
`sam_mask_loss` takes the decoder's `[B, P, M, h, w]` logits and `[B, P, M]` IoU predictions,
upsamples the logits to the target size, and with M > 1 keeps the best of the M masks per
prompt (SAM's ambiguity-aware training); the IoU head is regressed on all M. `weights` `[B]`
weigh the images (e.g. 0 for the padding rows of a VITRON batch's segmentation group): every
term and metric is the weighted mean over images.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def bce_per_mask(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Mean sigmoid BCE over the last two axes: `[..., H, W] -> [...]`."""
  return optax.sigmoid_binary_cross_entropy(logits, targets).mean(axis=(-2, -1))


def dice_per_mask(logits: jax.Array, targets: jax.Array, smooth: float = 1.0) -> jax.Array:
  """`1 - (2|p t| + s) / (|p| + |t| + s)` on sigmoid probabilities: `[..., H, W] -> [...]`."""
  p = jax.nn.sigmoid(logits)
  inter = (p * targets).sum(axis=(-2, -1))
  return 1.0 - (2.0 * inter + smooth) / (p.sum(axis=(-2, -1)) + targets.sum(axis=(-2, -1))
                                         + smooth)


def mask_iou(pred: jax.Array, targets: jax.Array) -> jax.Array:
  """IoU of binary masks `[..., H, W] -> [...]`; two empty masks count as IoU 1."""
  p, t = pred.astype(bool), targets.astype(bool)
  inter = (p & t).sum(axis=(-2, -1)).astype(jnp.float32)
  union = (p | t).sum(axis=(-2, -1)).astype(jnp.float32)
  return jnp.where(union > 0, inter / jnp.maximum(union, 1.0), 1.0)


def sam_mask_loss(low_res_logits: jax.Array, iou_pred: jax.Array, targets: jax.Array, *,
                  bce_weight: float = 1.0, dice_weight: float = 1.0, iou_weight: float = 1.0,
                  threshold: float = 0.0, weights: jax.Array | None = None
                  ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Scalar loss and metrics.

  low_res_logits `[B, P, M, h, w]`, iou_pred `[B, P, M]`, targets `[B, P, S, S]` (or `[B, S,
  S]` with P = 1) in the model frame; weights `[B]` (default: all 1).
  """
  b, p, m = low_res_logits.shape[:3]
  if targets.ndim == 3:
    targets = targets[:, None]
  if targets.shape[:2] != (b, p):
    raise ValueError(f"target masks {tuple(targets.shape)} do not match predictions for "
                     f"{b} images x {p} prompts")
  s = targets.shape[-2:]
  logits = jax.image.resize(low_res_logits.astype(jnp.float32), (b, p, m) + s, "linear",
                            antialias=False)
  t = jnp.broadcast_to(targets[:, :, None].astype(jnp.float32), logits.shape)
  bce = bce_per_mask(logits, t)
  dice = dice_per_mask(logits, t)
  per = bce_weight * bce + dice_weight * dice  # [B, P, M]
  best = jnp.argmin(per, axis=-1)
  take = lambda x: jnp.take_along_axis(x, best[..., None], axis=-1)[..., 0]
  achieved = jax.lax.stop_gradient(mask_iou(logits > threshold, t))
  if weights is None:
    weights = jnp.ones((b,), jnp.float32)
  if tuple(weights.shape) != (b,):
    raise ValueError(f"mask loss weights must be [{b}] (one per image), got "
                     f"{tuple(weights.shape)}")
  w = weights.astype(jnp.float32)
  total = jnp.maximum(w.sum(), 1e-6)
  mean = lambda x: (x.reshape(b, -1).mean(1) * w).sum() / total  # weighted over images
  iou_mse = mean(jnp.square(iou_pred.astype(jnp.float32) - achieved))
  loss = mean(take(per)) + iou_weight * iou_mse
  metrics = {"loss": loss, "bce": mean(take(bce)), "dice": mean(take(dice)),
             "iou_mse": iou_mse, "mask_iou": mean(take(achieved))}
  return loss, metrics
