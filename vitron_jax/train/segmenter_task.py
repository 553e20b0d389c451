"""Task "pixelworld_segmenter": pretraining of VITRON's image segmentation backend on PixelWorld.

No pretrained SAM exists for PixelWorld, so the backend (`backends.segmentation`, a SAM-style
model) learns promptable segmentation the way SAM does, before VITRON drives it with signal
tokens: from PixelWorld `ref_seg` samples, each object's box (model-frame pixels) is the prompt
and its exact visible mask the target (BCE + dice + the IoU head's MSE, `SegmentImageBackend.
loss`). Parameters live under the path a VITRON run keeps them (`backends/segment_image/`), so
the main run takes them by path from this stage's checkpoint.

Config: `model.segmenter` (SamConfig.tiny fields: image_size, patch_size, hidden, width,
layers, window; num_signal_tokens); `data.pixelworld` (image_size, max_objects, seed);
`eval.num_samples`.
Evaluation (held-out split): mask IoU of the box-prompted masks beside the IoU of the box
itself filled in as the mask (what a segmenter must beat to add anything over its prompt).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vitron_jax.backends.segmentation import SamConfig, SegmentationConfig, SegmentImageBackend
from vitron_jax.data import pipeline
from vitron_jax.data.pixelworld import PixelWorld, WorldConfig
from vitron_jax.data.pixelworld.sample import box_mask
from vitron_jax.data.sources import pixelworld_dataset
from vitron_jax.nn.partitioning import replicate_like
from vitron_jax.train.task import register_task

SEG_TASK = "ref_seg"
MODULE = "segment_image"
SAM_FIELDS = ("patch_size", "hidden", "width", "layers", "window")


def segmentation_config(fields: Any, image_size: int) -> SegmentationConfig:
  """The backend's config from `model.segmenter`-style fields (SamConfig.tiny arguments)."""
  f = dict(fields or {})
  unknown = sorted(set(f) - set(SAM_FIELDS) - {"num_signal_tokens", "image_size"})
  if unknown:
    raise ValueError(f"segmenter config: unknown fields {unknown}; expected "
                     f"{sorted(SAM_FIELDS + ('num_signal_tokens', 'image_size'))}")
  if int(f.get("image_size", image_size)) != image_size:
    raise ValueError(f"segmenter image_size {f['image_size']} must match the PixelWorld "
                     f"image_size {image_size}")
  sam = SamConfig.tiny(image_size=image_size, **{k: int(f[k]) for k in SAM_FIELDS if k in f})
  return SegmentationConfig(sam=sam, num_signal_tokens=int(f.get("num_signal_tokens", 4)))


class SegmentEncoder:
  """A PixelWorld ref_seg sample -> {"pixel_values", "boxes" [1, 4], "masks"} (model frame)."""

  def __init__(self, backend: SegmentImageBackend, image_size: int):
    self.backend, self.image_size = backend, image_size

  def __call__(self, sample):
    sid = pipeline.sample_id_of(sample)
    images, targets = sample.get("images") or [], sample.get("targets") or {}
    if len(images) != 1 or "mask" not in targets or "boxes" not in targets:
      raise pipeline.BadSampleError(sid, "no segmentation target",
                                    "need one image, targets['mask'] and targets['boxes']")
    if np.shape(images[0]) != (self.image_size, self.image_size, 3):
      raise pipeline.BadSampleError(sid, "wrong image size",
                                    f"need one {self.image_size}px RGB image")
    box = np.asarray(targets["boxes"], np.float32).reshape(1, 1, 4)
    inp = self.backend.preprocess(np.asarray(images[0])[None], boxes=box,
                                  target_masks=np.asarray(targets["mask"])[None])
    return {"pixel_values": np.asarray(inp["pixel_values"][0], np.float32),
            "boxes": np.asarray(inp["boxes"][0], np.float32),
            "masks": np.asarray(inp["masks"][0], np.float32)}


def mask_iou_np(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
  """IoU of boolean masks `[..., H, W]` (empty vs empty = 1)."""
  pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
  inter = (pred & truth).sum((-2, -1))
  union = (pred | truth).sum((-2, -1))
  return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


class PixelWorldSegmenterTask:
  """See the module docstring."""

  name = "pixelworld_segmenter"

  def __init__(self, config: Any):
    self.cfg = config
    pw = config.data.get("pixelworld") or {}
    self.world_config = WorldConfig(image_size=int(pw.get("image_size", 64)),
                                    num_frames=int(pw.get("num_frames", 8)),
                                    max_objects=int(pw.get("max_objects", 4)))
    self.world_seed = int(pw.get("seed", 0))
    size = self.world_config.image_size
    self.seg_config = segmentation_config(config.model.get("segmenter"), size)
    self.backend = SegmentImageBackend(self.seg_config)
    self.encoder = SegmentEncoder(self.backend, size)
    self._run = None

  def init(self, rng):
    return {"backends": {MODULE: self.backend.init_boxed(rng)}}

  def batch_spec(self):
    s = self.seg_config.sam.image_size
    return {"pixel_values": ((s, s, 3), np.float32), "boxes": ((1, 4), np.float32),
            "masks": ((s, s), np.float32)}

  def loss(self, params, batch, rng):
    loss, metrics = self.backend.loss(params["backends"][MODULE], batch, None, rng)
    metrics = dict(metrics)
    metrics["weight"] = jnp.float32(batch["masks"].shape[0])
    return loss, metrics

  def make_data(self, global_batch, process_index, process_count):
    d = self.cfg.data
    src = pixelworld_dataset(self.world_config, split="train", seed=self.world_seed,
                             tasks=(SEG_TASK,))
    return pipeline.make_pipeline(
        [src], global_batch=global_batch, process_index=process_index,
        process_count=process_count, shuffle=False, transforms=[self.encoder],
        num_workers=int(d.get("num_workers", 0)), strict=bool(d.get("strict", False)),
        max_bad_fraction=float(d.get("max_bad_fraction", 0.05)))

  def components(self):
    return {f"backend_{MODULE}": rf"^backends/{MODULE}/"}

  def evaluate(self, params, step, workdir=None):
    """Held-out mask IoU of box-prompted segmentation, beside the box-as-mask IoU."""
    del step, workdir
    n = int(self.cfg.get("eval", {}).get("num_samples", 64))
    world = PixelWorld(self.world_config, split="heldout", seed=self.world_seed)
    samples = [world.sample(i, task=SEG_TASK) for i in range(n)]
    rows = [self.encoder(s) for s in samples]
    batch = {k: np.stack([r[k] for r in rows]) for k in ("pixel_values", "boxes")}
    if self._run is None:
      self._run = jax.jit(lambda p, b: self.backend.run(p["backends"][MODULE], b, None)["masks"])
    masks = np.asarray(self._run(params, replicate_like(params, batch)))[:, 0]
    truth = np.stack([np.asarray(s["targets"]["mask"], bool) for s in samples])
    boxes = np.stack([box_mask(np.asarray(s["targets"]["boxes"])[0], truth.shape[1:])
                      for s in samples])
    return {"mask_iou": float(mask_iou_np(masks, truth).mean()),
            "box_as_mask_iou": float(mask_iou_np(boxes, truth).mean())}


@register_task("pixelworld_segmenter")
def build(config: Any) -> PixelWorldSegmenterTask:
  return PixelWorldSegmenterTask(config)
