"""Task "pixelworld_segmenter": pretraining of VITRON's image segmentation backend on PixelWorld.

No pretrained SAM exists for PixelWorld, so the backend (`backends.segmentation`, a SAM-style
model) learns promptable segmentation the way SAM does, before VITRON drives it with signal
tokens: from PixelWorld `ref_seg` samples, each object's exact visible mask is the target
(BCE + dice + the IoU head's MSE, `SegmentImageBackend.loss`) of two prompts: its box
(model-frame pixels) with the command's text condition, and the text condition alone
(referring segmentation from "the large blue object"). The text condition is the backend's
*native* condition (`native_condition`: its own `CommandEncoder` on the command's token ids
through the text projection), which VITRON's "text" / "hybrid" routing combine with the
LLM's signal tokens. Parameters live under the path a VITRON run keeps them
(`backends/segment_image/{sam,prompts,text_encoder}`), so the main run takes them by path from
this stage's checkpoint.

Config: `model.segmenter` (SamConfig.tiny fields: image_size, patch_size, hidden, width,
layers, window; num_signal_tokens, text_dim, text_len); `task.tokenizer` ("pixelworld", the
ids VITRON uses); `data.pixelworld` (image_size, max_objects, seed); `eval.num_samples`.
Evaluation (held-out split): mask IoU from box + text and from text alone, beside the IoU of
the box itself filled in as the mask (what a segmenter must beat to add anything over its
prompt).

Tracking (`task.track`, on in the full job, whose VITRON step segments videos too): every
batch row also carries a PixelWorld `video_seg` clip (an independent stream,
`PairedPixelWorldSource`) under `track/`, and the same SAM learns to follow the object through
it the way `SegmentVideoBackend` tracks (teacher-forced: frame 0 from its box and the text
condition, frame t > 0 from frame t-1's true mask as the dense prompt and the condition); the
two losses add. Evaluation then adds `tracking_iou` (held-out clips tracked from the first
frame's box and the text, mean over frames of the mask IoU) beside `box_track_iou` (the first
box held still as every frame's mask).
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vitron_jax.backends.segmentation import (SamConfig, SegmentationConfig,
                                              SegmentImageBackend, SegmentVideoBackend)
from vitron_jax.backends.segmentation.text_encoder import CommandEncoder
from vitron_jax.data import pipeline
from vitron_jax.data import pixelworld_tokenizer as PT
from vitron_jax.data.pixelworld import PixelWorld, WorldConfig
from vitron_jax.data.pixelworld.sample import box_mask
from vitron_jax.data.sources import pixelworld_stage_data
from vitron_jax.nn.partitioning import replicate_like
from vitron_jax.protocol import invocation as I
from vitron_jax.train.task import register_task

SEG_TASK = "ref_seg"
TRACK_TASK = "video_seg"
MODULE = "segment_image"
SAM_FIELDS = ("patch_size", "hidden", "width", "layers", "window")


TEXT_FIELDS = ("num_signal_tokens", "text_dim", "text_len")


def segmentation_config(fields: Any, image_size: int) -> SegmentationConfig:
  """The backend's config from `model.segmenter`-style fields (SamConfig.tiny arguments)."""
  f = dict(fields or {})
  known = SAM_FIELDS + TEXT_FIELDS + ("image_size",)
  unknown = sorted(set(f) - set(known))
  if unknown:
    raise ValueError(f"segmenter config: unknown fields {unknown}; expected {sorted(known)}")
  if int(f.get("image_size", image_size)) != image_size:
    raise ValueError(f"segmenter image_size {f['image_size']} must match the PixelWorld "
                     f"image_size {image_size}")
  sam = SamConfig.tiny(image_size=image_size, **{k: int(f[k]) for k in SAM_FIELDS if k in f})
  return SegmentationConfig(sam=sam, num_signal_tokens=int(f.get("num_signal_tokens", 4)),
                            text_dim=int(f.get("text_dim", 64)))


class Segmenter:
  """The segmentation backend with its own command encoder, as VITRON runs it on PixelWorld:
  `backend` (a `SegmentImageBackend` whose `native_condition` takes command token ids),
  `init_boxed(rng)`, and `command_ids(text)` (the command's ids, padded to `text_len`)."""

  def __init__(self, fields: Any, image_size: int, tokenizer: Any):
    self.config = segmentation_config(fields, image_size)
    self.text_len = int(dict(fields or {}).get("text_len", 16))
    self.tokenizer = tokenizer
    self.encoder = CommandEncoder(len(tokenizer), self.config.text_dim, self.text_len,
                                  int(tokenizer.pad_token_id))
    text_encoder = lambda p, ids: self.encoder.apply({"params": p}, ids)
    self.backend = SegmentImageBackend(self.config, text_encoder=text_encoder)
    # the same SAM and parameters, tracking one object through a clip
    self.video_backend = SegmentVideoBackend(self.config, text_encoder=text_encoder)

  def init_boxed(self, rng: jax.Array):
    r1, r2 = jax.random.split(rng)
    params = self.backend.init_boxed(r1)
    params["text_encoder"] = self.encoder.init(
        r2, jnp.zeros((1, self.text_len), jnp.int32))["params"]
    return params

  def command_ids(self, text: str, what: str = "command") -> np.ndarray:
    ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids or len(ids) > self.text_len:
      raise ValueError(f"{what} {text!r} has {len(ids)} tokens; the segmenter's text encoder "
                       f"takes 1 to text_len={self.text_len}")
    out = np.full((self.text_len,), int(self.tokenizer.pad_token_id), np.int32)
    out[:len(ids)] = ids
    return out

  def condition(self, params, command_ids: jax.Array) -> jax.Array:
    """The native condition `[B, K, C]` of commands `[B, text_len]`."""
    return self.backend.native_condition(params, command_ids)


def command_of(sample: Any) -> str:
  """The command text of a sample's expected invocation (PixelWorld ref_seg answers)."""
  inv = I.find_invocation(sample["conversations"][-1]["value"])
  if not inv:
    raise pipeline.BadSampleError(pipeline.sample_id_of(sample), "no invocation",
                                  f"the expected answer holds no valid invocation ({inv})")
  return inv.command


class SegmentEncoder:
  """A PixelWorld ref_seg sample -> {"pixel_values", "boxes" [1, 4], "masks", "command_ids"}
  (model frame); a sample that does not fit is a `BadSampleError` naming why."""

  def __init__(self, segmenter: Segmenter, image_size: int):
    self.segmenter, self.image_size = segmenter, image_size

  def __call__(self, sample):
    sid = pipeline.sample_id_of(sample)
    images, targets = sample.get("images") or [], sample.get("targets") or {}
    if len(images) != 1 or "mask" not in targets or "boxes" not in targets:
      raise pipeline.BadSampleError(sid, "no segmentation target",
                                    "need one image, targets['mask'] and targets['boxes']")
    if np.shape(images[0]) != (self.image_size, self.image_size, 3):
      raise pipeline.BadSampleError(sid, "wrong image size",
                                    f"need one {self.image_size}px RGB image")
    try:
      ids = self.segmenter.command_ids(command_of(sample))
    except ValueError as e:
      raise pipeline.BadSampleError(sid, "command does not fit", str(e)) from e
    box = np.asarray(targets["boxes"], np.float32).reshape(1, 1, 4)
    inp = self.segmenter.backend.preprocess(np.asarray(images[0])[None], boxes=box,
                                            target_masks=np.asarray(targets["mask"])[None])
    return {"pixel_values": np.asarray(inp["pixel_values"][0], np.float32),
            "boxes": np.asarray(inp["boxes"][0], np.float32),
            "masks": np.asarray(inp["masks"][0], np.float32), "command_ids": ids}


class TrackEncoder:
  """A PixelWorld video_seg sample -> {"pixel_values" [T, S, S, 3], "boxes" [1, 4] (frame 0's),
  "masks" [T, S, S], "command_ids"} (model frame). Tracking starts from frame 0, so a clip
  whose object first appears later is a `BadSampleError`."""

  def __init__(self, segmenter: Segmenter, image_size: int, num_frames: int):
    self.segmenter, self.image_size, self.num_frames = segmenter, image_size, num_frames

  def __call__(self, sample):
    sid = pipeline.sample_id_of(sample)
    video, targets = sample.get("video"), sample.get("targets") or {}
    s, t = self.image_size, self.num_frames
    if video is None or not {"masks", "boxes", "time_span"} <= set(targets):
      raise pipeline.BadSampleError(sid, "no tracking target", "need a video and targets "
                                    "['masks'], ['boxes'], ['time_span']")
    if np.shape(video) != (t, s, s, 3):
      raise pipeline.BadSampleError(sid, "wrong video shape", f"need {t} frames of {s}px RGB, "
                                    f"got {np.shape(video)}")
    if int(targets["time_span"][0]) != 0:
      raise pipeline.BadSampleError(sid, "object absent from frame 0", "tracking starts from "
                                    f"frame 0; the time span is {targets['time_span']}")
    try:
      ids = self.segmenter.command_ids(command_of(sample))
    except ValueError as e:
      raise pipeline.BadSampleError(sid, "command does not fit", str(e)) from e
    box = np.asarray(targets["boxes"], np.float32)[0].reshape(1, 1, 4)
    inp = self.segmenter.video_backend.preprocess(
        np.asarray(video)[None], boxes=box, target_masks=np.asarray(targets["masks"])[None])
    return {"pixel_values": np.asarray(inp["pixel_values"][0], np.float32),
            "boxes": np.asarray(inp["boxes"][0], np.float32),
            "masks": np.asarray(inp["masks"][0], np.float32), "command_ids": ids}


def track_loss(segmenter: Segmenter, params, batch):
  """The teacher-forced tracking loss of `batch` (TrackEncoder fields) with its text
  condition; metrics `track/{name}`."""
  b = dict(batch)
  cond = segmenter.condition(params, b.pop("command_ids"))
  loss, m = segmenter.video_backend.loss(params, b, cond)
  return loss, {f"track/{k}": v for k, v in m.items()}


TRACK = "track/"  # the prefix of a stage batch's tracking fields


class StageEncoder:
  """A ref_seg sample (carrying a paired video_seg sample under "video_seg") -> the
  SegmentEncoder fields plus the TrackEncoder fields under `track/`."""

  def __init__(self, image: SegmentEncoder, track: TrackEncoder):
    self.image, self.track = image, track

  def __call__(self, sample):
    out = self.image(sample)
    out.update({TRACK + k: v for k, v in self.track(sample[TRACK_TASK]).items()})
    return out


def segmenter_loss(segmenter: Segmenter, params, batch, condition: jax.Array,
                   prompts: Sequence[str] = ("box", "text")):
  """Mean of the mask losses from each prompt: "box" (the box and `condition`), "text"
  (`condition` alone); the image is embedded once. Metrics `{prompt}/{name}`."""
  backend = segmenter.backend
  batch = dict(batch)
  batch["image_embeddings"] = backend.image_embeddings(params, batch)
  total, metrics = 0.0, {}
  for p in prompts:
    b = batch if p == "box" else {k: v for k, v in batch.items() if k != "boxes"}
    loss, m = backend.loss(params, b, condition)
    total = total + loss / len(prompts)
    metrics.update({f"{p}/{k}": v for k, v in m.items()})
  return total, metrics


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
    self.world_config = WorldConfig.from_config(config.data)
    self.world_seed = int((config.data.get("pixelworld") or {}).get("seed", 0))
    size = self.world_config.image_size
    self.segmenter = Segmenter(config.model.get("segmenter"), size,
                               PT.load(config.task.get("tokenizer", "pixelworld")))
    self.backend = self.segmenter.backend
    self.encoder = SegmentEncoder(self.segmenter, size)
    self.track = bool(config.task.get("track", False))
    self.track_encoder = TrackEncoder(self.segmenter, size, self.world_config.num_frames)
    self._run = self._track_run = None

  def init(self, rng):
    return {"backends": {MODULE: self.segmenter.init_boxed(rng)}}

  def batch_spec(self):
    s = self.segmenter.config.sam.image_size
    spec = {"pixel_values": ((s, s, 3), np.float32), "boxes": ((1, 4), np.float32),
            "masks": ((s, s), np.float32),
            "command_ids": ((self.segmenter.text_len,), np.int32)}
    if self.track:
      t = self.world_config.num_frames
      spec.update({TRACK + "pixel_values": ((t, s, s, 3), np.float32),
                   TRACK + "boxes": ((1, 4), np.float32),
                   TRACK + "masks": ((t, s, s), np.float32),
                   TRACK + "command_ids": ((self.segmenter.text_len,), np.int32)})
    return spec

  def loss(self, params, batch, rng):
    del rng
    p = params["backends"][MODULE]
    image = {k: v for k, v in batch.items() if not k.startswith(TRACK)}
    loss, metrics = segmenter_loss(self.segmenter, p, image,
                                   self.segmenter.condition(p, image["command_ids"]))
    if self.track:
      tl, tm = track_loss(self.segmenter, p, {k[len(TRACK):]: v for k, v in batch.items()
                                              if k.startswith(TRACK)})
      loss = loss + tl
      metrics.update(tm)
    metrics["weight"] = jnp.float32(batch["masks"].shape[0])
    return loss, metrics

  def make_data(self, global_batch, process_index, process_count):
    encoder = StageEncoder(self.encoder, self.track_encoder) if self.track else self.encoder
    return pixelworld_stage_data(self.cfg.data, self.world_config, self.world_seed, SEG_TASK,
                                 encoder, global_batch=global_batch,
                                 process_index=process_index, process_count=process_count,
                                 paired=TRACK_TASK if self.track else None)

  def components(self):
    return {f"backend_{MODULE}": rf"^backends/{MODULE}/"}

  def evaluate(self, params, step, workdir=None):
    """Held-out mask IoU from box + text and from text alone, beside the box-as-mask IoU."""
    del step, workdir
    n = int(self.cfg.get("eval", {}).get("num_samples", 64))
    samples = self._heldout(SEG_TASK, n)
    batch = _prompt_batch(self.encoder, samples)
    if self._run is None:
      def run(p, b):
        p = p["backends"][MODULE]
        cond = self.segmenter.condition(p, b["command_ids"])
        text_only = {"pixel_values": b["pixel_values"]}
        return (self.backend.run(p, b, cond)["masks"],
                self.backend.run(p, text_only, cond)["masks"])
      self._run = jax.jit(run)
    box_masks, text_masks = (np.asarray(m)[:, 0] for m in
                             self._run(params, replicate_like(params, batch)))
    truth = np.stack([np.asarray(s["targets"]["mask"], bool) for s in samples])
    boxes = np.stack([box_mask(np.asarray(s["targets"]["boxes"])[0], truth.shape[1:])
                      for s in samples])
    out = {"mask_iou": float(mask_iou_np(box_masks, truth).mean()),
           "text_mask_iou": float(mask_iou_np(text_masks, truth).mean()),
           "box_as_mask_iou": float(mask_iou_np(boxes, truth).mean())}
    if self.track:
      out.update(self._evaluate_tracking(params, n))
    return out

  def _heldout(self, task: str, n: int) -> list[dict]:
    world = PixelWorld(self.world_config, split="heldout", seed=self.world_seed)
    return [world.sample(i, task=task) for i in range(n)]

  def _evaluate_tracking(self, params, n: int) -> dict[str, float]:
    """Held-out clips tracked from frame 0's box and the text: mean over clips of the mean
    over frames of the mask IoU, beside frame 0's box held still; clips whose object is absent
    from frame 0 are left out and counted (`tracking_left_out`)."""
    samples = self._heldout(TRACK_TASK, n)
    kept = [s for s in samples if int(s["targets"]["time_span"][0]) == 0]
    if not kept:
      raise ValueError(f"tracking evaluation: none of the {n} held-out video_seg clips shows "
                       "its object in frame 0")
    batch = _prompt_batch(self.track_encoder, kept)
    if self._track_run is None:
      def run(p, b):
        p = p["backends"][MODULE]
        cond = self.segmenter.condition(p, b["command_ids"])
        return self.segmenter.video_backend.run(
            p, {"pixel_values": b["pixel_values"], "boxes": b["boxes"]}, cond)["masks"]
      self._track_run = jax.jit(run)
    pred = np.asarray(self._track_run(params, replicate_like(params, batch)))
    truth = np.stack([np.asarray(s["targets"]["masks"], bool) for s in kept])
    still = np.stack([np.broadcast_to(box_mask(np.asarray(s["targets"]["boxes"])[0],
                                               truth.shape[2:]), truth.shape[1:])
                      for s in kept])
    return {"tracking_iou": float(mask_iou_np(pred, truth).mean()),
            "box_track_iou": float(mask_iou_np(still, truth).mean()),
            "tracking_left_out": float(len(samples) - len(kept))}


@register_task("pixelworld_segmenter")
def build(config: Any) -> PixelWorldSegmenterTask:
  return PixelWorldSegmenterTask(config)


def _prompt_batch(encoder, samples) -> dict[str, np.ndarray]:
  """The prompt fields of `encoder`'s rows for `samples`, stacked (evaluation batches)."""
  rows = [encoder(s) for s in samples]
  return {k: np.stack([r[k] for r in rows]) for k in ("pixel_values", "boxes", "command_ids")}
