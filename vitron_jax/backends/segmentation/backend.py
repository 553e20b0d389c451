"""The segmentation backends of VITRON (DESIGN.md §4): `segment_image` and `segment_video`
(also registered as `seg_image` / `seg_video`, the module tokens' names).

Parameters: `{"sam": <SamModel params>, "prompts": <SignalPrompts params>}`; the condition is
`[B, K, C]` sparse prompt tokens (`condition_shape`), or None for purely interactive use.

Inputs (dicts of arrays, built outside jit by `preprocess`; sizes ride along as the static
`image_sizes`):
* image: `pixel_values [B, S, S, 3]` or `image_embeddings [B, E, E, C]`; optional `points
  [B, P, N, 2]` + `point_labels [B, P, N]`, `boxes [B, P, 4]` (model-frame pixels), `mask_prompt
  [B, 4E, 4E]`; for `loss` the targets `masks [B, S, S]` or `[B, P, S, S]` (model frame).
* video: `pixel_values [B, T, S, S, 3]` (or `image_embeddings [B, T, E, E, C]`); optional
  first-frame `mask_prompt`, `points`, `boxes`; for `loss` the targets `masks [B, T, S, S]`.

`run` returns masks at input resolution: image `masks [B, P, H, W]` (bool), `mask_logits`,
`scores [B, P]`, `boxes [B, P, 4]` (x1, y1, x2, y2, exclusive ends, input pixels), `present
[B, P]`, `low_res_masks`; video the same with a `T` axis instead of `P` plus `redetected [B, T]`.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vitron_jax.backends.base import REGISTRY, Backend, Batch, Params
from vitron_jax.backends.segmentation import processing as proc
from vitron_jax.backends.segmentation.config import SegmentationConfig
from vitron_jax.backends.segmentation.losses import sam_mask_loss
from vitron_jax.backends.segmentation.sam import SamModel
from vitron_jax.backends.segmentation.signal_prompts import SignalPrompts, check_signal
from vitron_jax.backends.segmentation.tracking import binary_prompt, select_best, track

TextEncoder = Callable[[Any, jax.Array], jax.Array]


class SegmentImageBackend(Backend):
  """SAM-style promptable segmentation whose prompts include the hybrid head's signal tokens."""
  module = "segment_image"

  def __init__(self, config: SegmentationConfig | None = None,
               text_encoder: TextEncoder | None = None):
    self.config = config or SegmentationConfig()
    self.sam = SamModel(self.config.sam)
    self.prompts = SignalPrompts(self.config)
    self.text_encoder = text_encoder

  # -- parameters --------------------------------------------------------------------------
  def init_boxed(self, rng: jax.Array) -> Params:
    """Parameters with logical-axis boxes (for `partitioning.sharded_init`)."""
    cfg = self.config
    r1, r2 = jax.random.split(rng)
    s = cfg.sam.image_size
    sam = self.sam.init(r1, jnp.zeros((1, s, s, cfg.sam.vision.num_channels)),
                        method=SamModel.init_all)["params"]
    prompts = self.prompts.init(r2, jnp.zeros((1, cfg.text_dim)),
                                method=SignalPrompts.text)["params"]
    return {"sam": sam, "prompts": prompts}

  def init(self, rng: jax.Array) -> Params:
    return nn.meta.unbox(self.init_boxed(rng))

  # -- condition ---------------------------------------------------------------------------
  @property
  def condition_shape(self) -> tuple[int, int]:
    return (self.config.num_condition_tokens, self.config.width)

  def native_condition(self, params: Params, tokens: jax.Array,
                       mask: jax.Array | None = None) -> jax.Array:
    """`[B, K, C]` from the command's text: a float embedding `[B, D]`/`[B, L, D]`, or token
    ids `[B, L]` when the backend was built with a `text_encoder(params, ids)`."""
    if jnp.issubdtype(tokens.dtype, jnp.integer):
      if self.text_encoder is None:
        raise ValueError("native_condition got token ids but this backend has no text_encoder; "
                         "pass a text embedding [batch, D] or [batch, tokens, D] instead, or "
                         "build the backend with text_encoder=")
      if "text_encoder" not in params:
        raise KeyError("params['text_encoder'] is needed to encode token ids")
      tokens = self.text_encoder(params["text_encoder"], tokens)
    return self.prompts.apply({"params": params["prompts"]}, tokens, mask,
                              method=SignalPrompts.text)

  def make_condition(self, params: Params, signal: jax.Array | None = None,
                     text_embedding: jax.Array | None = None,
                     text_mask: jax.Array | None = None) -> jax.Array:
    """The condition for the configured routing mode (signal, text or both)."""
    return self.prompts.apply({"params": params["prompts"]}, signal, text_embedding, text_mask)

  def _check_condition(self, condition: jax.Array | None, batch: int) -> None:
    if condition is None:
      return
    check_signal(condition, None, self.config.width)
    if condition.shape[0] != batch:
      raise ValueError(f"condition batch {condition.shape[0]} does not match the inputs' "
                       f"batch {batch}")

  # -- helpers -----------------------------------------------------------------------------
  def _apply(self, params: Params, method, *args, **kwargs):
    return self.sam.apply({"params": params["sam"]}, *args, method=method, **kwargs)

  def image_embeddings(self, params: Params, inputs: Batch) -> jax.Array:
    if "image_embeddings" in inputs:
      return inputs["image_embeddings"]
    if "pixel_values" not in inputs:
      raise KeyError("inputs need 'pixel_values' [B, S, S, 3] or 'image_embeddings'")
    return self._apply(params, SamModel.embed_image, inputs["pixel_values"])

  def _decode(self, params: Params, inputs: Batch, condition: jax.Array | None):
    emb = self.image_embeddings(params, inputs)
    self._check_condition(condition, emb.shape[0])
    points, boxes, mask_prompt = (inputs.get("points"), inputs.get("boxes"),
                                  inputs.get("mask_prompt"))
    if condition is None and points is None and boxes is None and mask_prompt is None:
      raise ValueError("segmentation needs a prompt: condition tokens, points, boxes or a "
                       "mask_prompt")
    return self._apply(params, SamModel.decode, emb, points, inputs.get("point_labels"), boxes,
                       mask_prompt, condition, self.config.multimask_output)

  # -- contract ----------------------------------------------------------------------------
  def loss(self, params: Params, batch: Batch, condition: jax.Array | None,
           rng: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """BCE + dice on the masks (model frame) + MSE of the IoU head; `batch["row_weights"]`
    `[B]` (optional) weighs the images."""
    del rng  # deterministic
    masks, iou = self._decode(params, batch, condition)
    cfg = self.config
    return sam_mask_loss(masks, iou, batch["masks"], bce_weight=cfg.bce_weight,
                         dice_weight=cfg.dice_weight, iou_weight=cfg.iou_weight,
                         threshold=cfg.mask_threshold, weights=batch.get("row_weights"))

  def run(self, params: Params, inputs: Batch, condition: jax.Array | None,
          rng: jax.Array | None = None) -> dict[str, jax.Array]:
    del rng
    masks, iou = self._decode(params, inputs, condition)
    low, score = select_best(masks, iou)
    return self._outputs(low, score, inputs)

  def _outputs(self, low: jax.Array, score: jax.Array, inputs: Batch) -> dict[str, jax.Array]:
    cfg = self.config
    s = cfg.sam.image_size
    sizes = inputs.get("image_sizes") or proc.ImageSizes((s, s), (s, s), s)
    logits = proc.postprocess_masks(low, sizes)
    masks = logits > cfg.mask_threshold
    boxes, present = proc.masks_to_boxes(masks)
    return {"masks": masks, "mask_logits": logits, "scores": score, "boxes": boxes,
            "present": present, "low_res_masks": low}

  # -- outside jit -------------------------------------------------------------------------
  def preprocess(self, images, points=None, point_labels=None, boxes=None, mask=None,
                 mask_prompt=None, target_masks=None) -> dict[str, Any]:
    """Validated model inputs from images `[B, H, W, 3]` and prompts in input pixels.

    `mask` is a binary mask `[B, H, W]` at input resolution (turned into a mask prompt);
    `mask_prompt` is already low-res logits `[B, 4E, 4E]`; `target_masks` `[B, (P,) H, W]`
    become the loss targets `masks`.
    """
    cfg = self.config
    pixels, sizes = proc.preprocess_images(images, cfg.sam.image_size)
    return self._prompts(pixels, sizes, pixels.shape[0], points, point_labels, boxes, mask,
                         mask_prompt, target_masks)

  def _prompts(self, pixels, sizes, batch, points, point_labels, boxes, mask, mask_prompt,
               target_masks) -> dict[str, Any]:
    cfg = self.config
    out: dict[str, Any] = {"pixel_values": jnp.asarray(pixels), "image_sizes": sizes}
    for name, x in (("points", points), ("boxes", boxes), ("mask", mask),
                    ("mask_prompt", mask_prompt)):
      if x is not None and np.shape(x)[0] != batch:
        raise ValueError(f"{name} has batch {np.shape(x)[0]}, but the images have {batch}")
    if points is not None:
      pts, lab = proc.preprocess_points(points, sizes, point_labels)
      out["points"], out["point_labels"] = jnp.asarray(pts), jnp.asarray(lab)
    if boxes is not None:
      out["boxes"] = jnp.asarray(proc.preprocess_boxes(boxes, sizes))
    if mask is not None and mask_prompt is not None:
      raise ValueError("give either mask (input resolution) or mask_prompt (low-res logits)")
    if mask is not None:
      out["mask_prompt"] = jnp.asarray(proc.mask_to_prompt(mask, sizes, cfg.sam,
                                                           cfg.mask_prompt_logit, "mask"))
    if mask_prompt is not None:
      out["mask_prompt"] = jnp.asarray(proc.check_mask_prompt(mask_prompt, cfg.sam, batch))
    if target_masks is not None:
      out["masks"] = jnp.asarray(proc.preprocess_masks(target_masks, sizes, "target_masks"))
    return out


class SegmentVideoBackend(SegmentImageBackend):
  """Segment and track one object per video: previous mask as dense prompt, signal prompts on
  every frame, re-detection from the signal prompts when the mask vanishes."""
  module = "segment_video"

  def _video_embeddings(self, params: Params, inputs: Batch) -> jax.Array:
    src = inputs.get("image_embeddings", inputs.get("pixel_values"))
    if src is None:
      raise KeyError("inputs need 'pixel_values' [B, T, S, S, 3] or 'image_embeddings'")
    if src.ndim != 5 or src.shape[1] == 0:
      raise ValueError(f"video must be [batch, frames, ...] with at least one frame, got "
                       f"shape {tuple(src.shape)}")
    if "image_embeddings" in inputs:
      return src
    b, t = src.shape[:2]
    flat = self._apply(params, SamModel.embed_image, src.reshape((b * t,) + src.shape[2:]))
    return flat.reshape((b, t) + flat.shape[1:])

  def loss(self, params: Params, batch: Batch, condition: jax.Array | None,
           rng: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Teacher-forced (default): frame t > 0 is prompted with frame t-1's ground-truth mask
    (binarised low-res logits) plus the signal tokens; frame 0 with its given prompts and the
    signal tokens (left out when it has no prompt at all). `batch["row_weights"]` `[B]` (0 =
    padding row) weighs every frame of a clip."""
    del rng
    cfg = self.config
    emb = self._video_embeddings(params, batch)
    b, t = emb.shape[:2]
    self._check_condition(condition, b)
    targets = batch["masks"]
    if targets.shape[:2] != (b, t):
      raise ValueError(f"video target masks must be [{b}, {t}, S, S], got "
                       f"{tuple(targets.shape)}")
    lr = cfg.sam.low_res_size
    f = cfg.sam.image_size // lr
    pooled = targets.reshape(b, t, lr, f, lr, f).mean(axis=(3, 5))
    prompts = binary_prompt(pooled - 0.5, 0.0, cfg.mask_prompt_logit,
                            cfg.prompt_dilation)  # [B, T, lr, lr]
    weights = batch.get("row_weights")
    losses, metrics = [], []
    if t > 1:
      rep = lambda x: None if x is None else jnp.repeat(x, t - 1, axis=0)
      flat_emb = emb[:, 1:].reshape((b * (t - 1),) + emb.shape[2:])
      flat_prompt = prompts[:, :-1].reshape(b * (t - 1), lr, lr)
      masks, iou = self._apply(params, SamModel.decode, flat_emb, None, None, None,
                               flat_prompt, rep(condition), cfg.multimask_output)
      later = targets[:, 1:].reshape((b * (t - 1),) + targets.shape[2:])
      l, m = sam_mask_loss(masks, iou, later, bce_weight=cfg.bce_weight,
                           dice_weight=cfg.dice_weight, iou_weight=cfg.iou_weight,
                           threshold=cfg.mask_threshold, weights=rep(weights))
      losses.append((l, t - 1))
      metrics.append((m, t - 1))
    first = {k: batch[k] for k in ("points", "point_labels", "boxes", "mask_prompt",
                                   "row_weights") if batch.get(k) is not None}
    if "mask_prompt" in first and cfg.prompt_dilation > 0:  # as `track` prompts frame 0
      first["mask_prompt"] = binary_prompt(first["mask_prompt"], cfg.mask_threshold,
                                           cfg.mask_prompt_logit, cfg.prompt_dilation)
    if condition is not None or set(first) - {"row_weights"}:
      first.update(image_embeddings=emb[:, 0], masks=targets[:, 0])
      l, m = SegmentImageBackend.loss(self, params, first, condition)
      losses.append((l, 1))
      metrics.append((m, 1))
    if not losses:
      raise ValueError("video loss needs at least two frames or a first-frame prompt")
    n = sum(w for _, w in losses)
    loss = sum(l * w for l, w in losses) / n
    out = {k: sum(m[k] * w for m, w in metrics) / n for k in metrics[0][0]}
    return loss, out

  def run(self, params: Params, inputs: Batch, condition: jax.Array | None,
          rng: jax.Array | None = None) -> dict[str, jax.Array]:
    del rng
    cfg = self.config
    emb = self._video_embeddings(params, inputs)
    self._check_condition(condition, emb.shape[0])
    res = track(self.sam, params["sam"], None, image_embeddings=emb,
                first_mask_prompt=inputs.get("mask_prompt"), points=inputs.get("points"),
                labels=inputs.get("point_labels"), boxes=inputs.get("boxes"), signal=condition,
                multimask_output=cfg.multimask_output, threshold=cfg.mask_threshold,
                prompt_logit=cfg.mask_prompt_logit, prompt_dilation=cfg.prompt_dilation)
    out = self._outputs(res["low_res_masks"], res["scores"], inputs)
    out["redetected"] = res["redetected"]
    return out

  def preprocess(self, video, points=None, point_labels=None, boxes=None, mask=None,
                 mask_prompt=None, target_masks=None) -> dict[str, Any]:
    """Validated inputs from a video `[B, T, H, W, 3]` and first-frame prompts in input pixels
    (`mask` `[B, H, W]` is the first frame's mask); `target_masks` `[B, T, H, W]`."""
    cfg = self.config
    pixels, sizes = proc.preprocess_video(video, cfg.sam.image_size)
    return self._prompts(pixels, sizes, pixels.shape[0], points, point_labels, boxes, mask,
                         mask_prompt, target_masks)


# Protocol module names (base.BUILTIN_BACKENDS imports this file for them).
for _name, _cls in (("segment_image", SegmentImageBackend),
                    ("segment_video", SegmentVideoBackend)):
  if _name not in REGISTRY:
    REGISTRY.register(_name, _cls)
