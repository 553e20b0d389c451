"""SAM pre- and post-processing.

Outside jit (numpy, concrete values, every check with a message naming the input):
* `preprocess_images(images [B, H, W, 3], image_size)` resizes the longest side to
  `image_size`, normalises with the ImageNet mean/std and zero-pads bottom/right to a square;
* `preprocess_video(frames [B, T, H, W, 3], image_size)` does the same per frame;
* `preprocess_points / preprocess_boxes` map pixel coordinates of the original image into the
  model frame after checking they lie inside the image; `check_mask_prompt` checks low-res
  mask logits; `mask_to_prompt` turns a binary mask at input resolution into such logits;
  `preprocess_masks` brings ground-truth masks into the model frame (for losses).

Inside jit (static sizes carried by `ImageSizes`, a leafless pytree):
* `postprocess_masks(low_res [..., 4E, 4E], sizes)` -> logits at input resolution `[..., H, W]`;
* `masks_to_boxes(masks [..., H, W]) -> (boxes [..., 4] as x1, y1, x2, y2 (x2, y2 exclusive),
  present [...])`.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from vitron_jax.backends.segmentation.config import SamConfig

IMAGE_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGE_STD = np.array([0.229, 0.224, 0.225], np.float32)


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class ImageSizes:
  """Static sizes: `original` (H, W) of the input, `resized` (h, w) inside the `model` square."""
  original: tuple[int, int]
  resized: tuple[int, int]
  model: int


def resized_shape(height: int, width: int, image_size: int) -> tuple[int, int]:
  """Longest side to `image_size`, aspect kept (SAM's `ResizeLongestSide`)."""
  scale = image_size / max(height, width)
  return int(height * scale + 0.5), int(width * scale + 0.5)


def _as_unit_float(images, name: str) -> np.ndarray:
  a = np.asarray(images)
  if a.dtype == np.uint8:
    return a.astype(np.float32) / 255.0
  if not np.issubdtype(a.dtype, np.floating):
    raise TypeError(f"{name} must be uint8 in [0, 255] or float in [0, 1], got dtype {a.dtype}")
  if a.size and not np.all(np.isfinite(a)):
    raise ValueError(f"{name} contains NaN or infinite values")
  if a.size and (a.min() < 0.0 or a.max() > 1.0):
    raise ValueError(f"{name} float values must lie in [0, 1] (uint8 for [0, 255]); got range "
                     f"[{a.min():.3g}, {a.max():.3g}]")
  return a.astype(np.float32)


def _resize_pad(x: np.ndarray, resized: tuple[int, int], image_size: int) -> np.ndarray:
  """`[N, H, W, C]` -> bilinear to `resized`, zero-pad to `[N, S, S, C]`."""
  n, _, _, c = x.shape
  y = np.asarray(jax.image.resize(jnp.asarray(x), (n,) + resized + (c,), "linear"))
  out = np.zeros((n, image_size, image_size, c), np.float32)
  out[:, :resized[0], :resized[1]] = y
  return out


def preprocess_images(images, image_size: int, name: str = "images"
                      ) -> tuple[np.ndarray, ImageSizes]:
  """`[B, H, W, 3]` (uint8 or float in [0, 1]) -> (`[B, S, S, 3]` pixel_values, sizes)."""
  shape = tuple(np.shape(images))
  if len(shape) != 4 or shape[-1] != 3:
    raise ValueError(f"{name} must be channels-last RGB [batch, height, width, 3], got shape "
                     f"{shape}")
  if 0 in shape[:3]:
    raise ValueError(f"{name} must be non-empty, got shape {shape}")
  x = _as_unit_float(images, name)
  h, w = shape[1:3]
  resized = resized_shape(h, w, image_size)
  x = (x - IMAGE_MEAN) / IMAGE_STD
  pixels = _resize_pad(x, resized, image_size)
  return pixels, ImageSizes((h, w), resized, image_size)


def preprocess_video(frames, image_size: int, name: str = "video"
                     ) -> tuple[np.ndarray, ImageSizes]:
  """`[B, T, H, W, 3]` -> (`[B, T, S, S, 3]`, sizes); a video with no frames is refused."""
  shape = tuple(np.shape(frames))
  if len(shape) != 5 or shape[-1] != 3:
    raise ValueError(f"{name} must be channels-last RGB [batch, frames, height, width, 3], got "
                     f"shape {shape}")
  if shape[1] == 0:
    raise ValueError(f"{name} has no frames (shape {shape}); at least one frame is needed")
  if 0 in shape[:1] + shape[2:4]:
    raise ValueError(f"{name} must be non-empty, got shape {shape}")
  b, t = shape[:2]
  pixels, sizes = preprocess_images(np.reshape(np.asarray(frames), (b * t,) + shape[2:]),
                                    image_size, name)
  return pixels.reshape((b, t) + pixels.shape[1:]), sizes


def _scale_xy(coords: np.ndarray, sizes: ImageSizes) -> np.ndarray:
  (h, w), (rh, rw) = sizes.original, sizes.resized
  return coords * np.array([rw / w, rh / h], np.float32)


def preprocess_points(points, sizes: ImageSizes, labels=None, name: str = "points"
                      ) -> tuple[np.ndarray, np.ndarray]:
  """Pixel (x, y) points `[B, P, N, 2]` of the original image -> model frame, plus labels.

  Labels `[B, P, N]`: 1 foreground, 0 background, -1 not-a-point, -10 padding (default all 1).
  Every non-padding point must lie inside the image: 0 <= x <= W, 0 <= y <= H.
  """
  p = np.asarray(points, np.float32)
  if p.ndim != 4 or p.shape[-1] != 2:
    raise ValueError(f"{name} must be [batch, masks, points, 2] pixel (x, y), got shape "
                     f"{p.shape}")
  if labels is None:
    lab = np.ones(p.shape[:-1], np.int32)
  else:
    lab = np.asarray(labels)
    if lab.shape != p.shape[:-1]:
      raise ValueError(f"{name} labels must have shape {p.shape[:-1]}, got {lab.shape}")
    bad = sorted(set(np.unique(lab).tolist()) - {1, 0, -1, -10})
    if bad:
      raise ValueError(f"{name} labels must be 1, 0, -1 or -10 (padding), got {bad}")
    lab = lab.astype(np.int32)
  h, w = sizes.original
  real = lab != -10
  if not np.all(np.isfinite(p[real])):
    raise ValueError(f"{name} contains NaN or infinite coordinates")
  x, y = p[..., 0], p[..., 1]
  outside = real & ((x < 0) | (x > w) | (y < 0) | (y > h))
  if outside.any():
    idx = tuple(int(i) for i in np.argwhere(outside)[0])
    raise ValueError(f"{name} {idx} = ({x[idx]:.4g}, {y[idx]:.4g}) lies outside the image "
                     f"(width {w}, height {h}); points must satisfy 0 <= x <= {w}, "
                     f"0 <= y <= {h}")
  return _scale_xy(p, sizes), lab


def preprocess_boxes(boxes, sizes: ImageSizes, name: str = "boxes") -> np.ndarray:
  """Pixel boxes `[B, P, 4]` (x1, y1, x2, y2) -> model frame; empty/inverted/outside refused."""
  b = np.asarray(boxes, np.float32)
  if b.ndim != 3 or b.shape[-1] != 4:
    raise ValueError(f"{name} must be [batch, masks, 4] pixel (x1, y1, x2, y2), got shape "
                     f"{b.shape}")
  if not np.all(np.isfinite(b)):
    raise ValueError(f"{name} contains NaN or infinite coordinates")
  x1, y1, x2, y2 = np.moveaxis(b, -1, 0)
  bad = (x2 <= x1) | (y2 <= y1)
  if bad.any():
    idx = tuple(int(i) for i in np.argwhere(bad)[0])
    kind = "inverted" if (x2[idx] < x1[idx] or y2[idx] < y1[idx]) else "empty"
    raise ValueError(f"{name} {idx} = {b[idx].tolist()} is {kind}; expected x1 < x2 and "
                     "y1 < y2")
  h, w = sizes.original
  outside = (x1 < 0) | (y1 < 0) | (x2 > w) | (y2 > h)
  if outside.any():
    idx = tuple(int(i) for i in np.argwhere(outside)[0])
    raise ValueError(f"{name} {idx} = {b[idx].tolist()} extends outside the image (width {w}, "
                     f"height {h})")
  return _scale_xy(b.reshape(b.shape[:-1] + (2, 2)), sizes).reshape(b.shape)


def check_mask_prompt(mask_prompt, config: SamConfig, batch: int | None = None,
                      name: str = "mask_prompt") -> np.ndarray:
  """Low-resolution mask logits `[B, 4E, 4E]` (as the decoder outputs them)."""
  m = np.asarray(mask_prompt, np.float32)
  lr = config.low_res_size
  want = (batch if batch is not None else "B", lr, lr)
  if m.ndim != 3 or m.shape[1:] != (lr, lr) or (batch is not None and m.shape[0] != batch):
    raise ValueError(f"{name} must be low-resolution logits of shape [{want[0]}, {lr}, {lr}] "
                     f"(4x the {config.embedding_size}x{config.embedding_size} embedding grid), "
                     f"got shape {m.shape}; use mask_to_prompt for a mask at image resolution")
  if not np.all(np.isfinite(m)):
    raise ValueError(f"{name} contains NaN or infinite values")
  return m


def preprocess_masks(masks, sizes: ImageSizes, name: str = "masks") -> np.ndarray:
  """Binary masks `[..., H, W]` at input resolution -> `[..., S, S]` float {0, 1} model frame."""
  m = np.asarray(masks)
  h, w = sizes.original
  if m.ndim < 3 or m.shape[-2:] != (h, w):
    raise ValueError(f"{name} must be [..., {h}, {w}] (the input image size), got shape "
                     f"{m.shape}")
  lead = m.shape[:-2]
  flat = m.reshape((-1, h, w, 1)).astype(np.float32)
  out = _resize_pad(flat, sizes.resized, sizes.model)[..., 0] > 0.5
  return out.astype(np.float32).reshape(lead + (sizes.model, sizes.model))


def mask_to_prompt(masks, sizes: ImageSizes, config: SamConfig, logit: float = 10.0,
                   name: str = "masks", dilation: int = 0) -> np.ndarray:
  """Binary masks `[B, H, W]` at input resolution -> low-res prompt logits `[B, 4E, 4E]`
  (`dilation`: grow the mask by that many low-res cells, as tracking does)."""
  m = preprocess_masks(masks, sizes, name)
  lr = config.low_res_size
  f = sizes.model // lr
  pooled = m.reshape(m.shape[:-2] + (lr, f, lr, f)).mean(axis=(-3, -1)) > 0.5
  if dilation > 0:
    k = 2 * dilation + 1
    padded = np.pad(pooled, [(0, 0)] * (pooled.ndim - 2) + [(dilation, dilation)] * 2)
    pooled = np.zeros_like(pooled)
    for dy in range(k):
      for dx in range(k):
        pooled |= padded[..., dy:dy + lr, dx:dx + lr]
  return np.where(pooled, logit, -logit).astype(np.float32)


def upscale_logits(low_res: jax.Array, sizes: ImageSizes) -> jax.Array:
  """`[..., 4E, 4E]` -> `[..., S, S]` logits in the model frame (bilinear)."""
  s = sizes.model
  return jax.image.resize(low_res, low_res.shape[:-2] + (s, s), "linear", antialias=False)


def postprocess_masks(low_res: jax.Array, sizes: ImageSizes) -> jax.Array:
  """`[..., 4E, 4E]` logits -> `[..., H, W]` logits at input resolution (jit-able)."""
  x = upscale_logits(low_res, sizes)
  rh, rw = sizes.resized
  x = x[..., :rh, :rw]
  return jax.image.resize(x, x.shape[:-2] + tuple(sizes.original), "linear", antialias=False)


def masks_to_boxes(masks: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Tight boxes of binary masks `[..., H, W]`: (x1, y1, x2, y2) with exclusive x2/y2, and
  a `present` flag; an empty mask gets the box (0, 0, 0, 0) and present=False."""
  m = masks.astype(bool)
  rows, cols = m.any(axis=-1), m.any(axis=-2)
  h, w = m.shape[-2:]

  def span(v, n):
    first = jnp.argmax(v, axis=-1)
    last = n - jnp.argmax(v[..., ::-1], axis=-1)
    return first, last

  y1, y2 = span(rows, h)
  x1, x2 = span(cols, w)
  present = rows.any(axis=-1)
  boxes = jnp.stack([x1, y1, x2, y2], axis=-1).astype(jnp.float32)
  return jnp.where(present[..., None], boxes, 0.0), present
