"""VITRON's video backends at PixelWorld size: text -> video, image -> video and video editing,
each a pixel-space UNet3D with its own CLIP text encoder (`train.pixel_diffusion`), and the
inputs they take from an invocation.

`VideoGenerator` (`generate_video`, `model.video_generator`), `VideoAnimator`
(`image_to_video`, `model.video_animator`) and `VideoEditor` (`edit_video`,
`model.video_editor`) share `pixel_diffusion.COMMON`'s fields plus `num_frames` (the clip
length; it must be PixelWorld's `num_frames`). The UNet is diffusers' `UNet3DConditionModel`
(ZeroScope's) in pixel space: the first `conv_blocks` blocks `DownBlock3D` / `UpBlock3D`, the
others cross-attending; temporal convolutions and attention mix the frames.

What each conditions on besides the command (appended to the UNet's input at every step, as
InstructPix2Pix conditions on its source image; `ConcatVideoBackend`):

* `generate_video`: nothing (`GenVideoBackend`);
* `image_to_video`: the first frame, repeated on every frame (`FirstFrameVideoBackend`). The
  reference I2VGen-XL (`Img2VideoBackend`) adds a CLIP image encoder and an fps embedding;
  with no pretrained image encoder here, the frame as input channels is what a small model
  trained from scratch can use;
* `edit_video`: the source video, frame by frame (`SourceVideoBackend`). A PixelWorld video
  edit recolours one object named only in the command (the invocation has no box), so the
  model must see the source to keep the rest; SDEdit-style re-noising (`EditVideoBackend`)
  keeps nothing exactly and needs a strong pretrained prior.

Training (stage tasks `pixelworld_video_generator` / `_animator` / `_editor`,
`train.video_diffusion_task`): the denoising loss on the sample's target video, its objects'
pixels weighted `object_weight` above the background.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from vitron_jax.backends.diffusion import pipelines as P
from vitron_jax.backends.diffusion.backend import GenVideoBackend, _need
from vitron_jax.backends.diffusion.unet3d import UNet3DConditionConfig, UNet3DConditionModel
from vitron_jax.data.pixelworld.sample import box_mask
from vitron_jax.protocol import invocation as I
from vitron_jax.train.pixel_diffusion import COMMON, PixelDiffusion

DEFAULTS: dict[str, Any] = {**COMMON, "num_frames": 2}


class ConcatVideoBackend(GenVideoBackend):
  """A text -> video UNet3D whose input also carries conditioning channels
  (`_concat(params, batch, latent_shape)`, shaped like the latents but in channels)."""

  def _concat(self, params, batch, shape) -> jax.Array:
    raise NotImplementedError

  def _training_inputs(self, params, batch, rng):
    x0 = self._latents(params, batch, rng, "videos")
    return x0, {}, self._concat(params, batch, x0.shape)

  def _run(self, params, inputs, condition, uncond, noise, guidance, rng):
    return P.text_to_video(self.models, params, condition, uncond, noise=noise,
                           num_inference_steps=self.config.num_inference_steps,
                           guidance_scale=guidance, rng=rng,
                           concat_latents=self._concat(params, inputs, noise.shape))


class FirstFrameVideoBackend(ConcatVideoBackend):
  """First frame (`batch["source_images"]` `[B, H, W, 3]`) + text -> video."""
  module = "image_to_video"

  def _concat(self, params, batch, shape):
    first = _need(batch, "source_images", self.module, "the first frame")
    P.check_unit_images(first, "batch['source_images']")
    z = P.encode_images(self.models, params, first)
    return jnp.broadcast_to(z[:, None], tuple(shape[:-1]) + z.shape[-1:])


class SourceVideoBackend(ConcatVideoBackend):
  """Source video (`batch["source_videos"]` `[B, T, H, W, 3]`) + text -> edited video."""
  module = "edit_video"

  def _concat(self, params, batch, shape):
    src = _need(batch, "source_videos", self.module, "the video to edit")
    P.check_unit_images(src, "batch['source_videos']", ndim=5)
    z = P.encode_images(self.models, params, src.reshape((-1,) + src.shape[2:]))
    return z.reshape(tuple(src.shape[:2]) + z.shape[1:])


class VideoDiffusion(PixelDiffusion):
  """See the module docstring. Subclasses set `module`, `what`, `backend_cls`, `source` (the
  example field the backend conditions on: "" / "source_images" / "source_videos") and
  `_source_of(sample)`."""

  DEFAULTS = DEFAULTS
  source = ""
  output = "videos"

  def __init__(self, fields: Any, image_size: int, tokenizer: Any, *, training: bool = True):
    self.num_frames = int(dict(fields or {}).get("num_frames", DEFAULTS["num_frames"]))
    if self.num_frames < 1:
      raise ValueError(f"{self.what} num_frames must be >= 1, got {self.num_frames}")
    super().__init__(fields, image_size, tokenizer, training=training)

  def _unet(self, channels, conv_blocks, latent_channels, text_width):
    n, f = len(channels), self.fields
    unet = UNet3DConditionConfig(
        sample_size=self.latent_size, in_channels=latent_channels + self._concat_channels(),
        out_channels=latent_channels, block_out_channels=channels,
        down_block_types=("DownBlock3D",) * conv_blocks + ("CrossAttnDownBlock3D",) * (
            n - conv_blocks),
        up_block_types=("CrossAttnUpBlock3D",) * (n - conv_blocks) + ("UpBlock3D",) * conv_blocks,
        layers_per_block=int(f["layers_per_block"]), norm_num_groups=8,
        cross_attention_dim=text_width, attention_head_dim=int(f["heads"]))
    unet.validate()
    return UNet3DConditionModel(unet)

  def _concat_channels(self) -> int:
    return 3 * int(self.fields["pixel_patch"]) ** 2 if self.source else 0

  def _unet_sample(self) -> jax.Array:
    s = self.latent_size
    return jnp.zeros((1, self.num_frames, s, s, self.models.unet.config.in_channels))

  def _backend_fields(self) -> dict[str, Any]:
    return {"num_frames": self.num_frames}

  # -- inputs ------------------------------------------------------------------------------
  @property
  def video_shape(self) -> tuple[int, int, int, int]:
    """`(T, H, W, 3)`: the clips it makes and takes."""
    return (self.num_frames, self.image_size, self.image_size, 3)

  def spec(self) -> dict[str, tuple[tuple[int, ...], Any]]:
    t, s = self.num_frames, self.image_size
    out = {"videos": (self.video_shape, np.float32),
           "command_ids": ((self.text_len,), np.int32),
           "pixel_weights": ((t, s, s), np.float32)}
    if self.source == "source_images":
      out["source_images"] = ((s, s, 3), np.float32)
    elif self.source == "source_videos":
      out["source_videos"] = (self.video_shape, np.float32)
    return out

  def _unit(self, x: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
    a = np.asarray(x)
    if a.shape != shape or a.dtype != np.uint8:
      raise ValueError(f"{what} must be uint8 {shape}, got {a.dtype} {a.shape}")
    return a.astype(np.float32) / 255.0

  def inputs(self, command: str, source: Any = None) -> dict[str, np.ndarray]:
    """An invocation's command and, for the backends that take one, what it conditions on
    (uint8: the first frame `[H, W, 3]` / the video to edit `[T, H, W, 3]`) -> the run inputs
    (raises ValueError for what the backend cannot take)."""
    out = {"command_ids": self.command_ids(command)}
    if self.source == "source_images":
      s = self.image_size
      out[self.source] = self._unit(source, (s, s, 3), f"{self.module}'s first frame")
    elif self.source == "source_videos":
      out[self.source] = self._unit(source, self.video_shape, f"{self.module}'s video")
    return out

  def _source_of(self, sample: Mapping[str, Any]) -> Any:
    """What a training sample's backend conditions on (uint8), or None."""
    return None

  def _object_pixels(self, sample: Mapping[str, Any]) -> np.ndarray:
    """bool `[T, H, W]`: the pixels the loss weighs `object_weight`: every object's box in
    every frame."""
    m = np.zeros(self.video_shape[:3], bool)
    for o in sample.get("objects") or []:
      for t, b in enumerate(np.asarray(o["boxes"], np.float32).reshape(-1, 4)[:self.num_frames]):
        m[t] |= box_mask(b, m.shape[1:])
    return m

  def example(self, sample: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A training sample -> the target video (float [0, 1]), the expected invocation's
    inputs and the pixels' loss weights."""
    inv = I.find_invocation(sample["conversations"][-1]["value"])
    if not inv or inv.module != self.module:
      raise ValueError(f"sample {sample.get('id')!r}: the expected answer holds no "
                       f"{self.module} invocation ({inv})")
    out = self.inputs(inv.command, self._source_of(sample))
    out["videos"] = self._unit(sample["targets"]["video"], self.video_shape,
                               f"sample {sample.get('id')!r}'s target video")
    out["pixel_weights"] = np.where(self._object_pixels(sample),
                                    np.float32(self.fields["object_weight"]), np.float32(1.0))
    return out

  def backend_batch(self, batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """Example fields -> the backend's loss / run inputs."""
    keys = ("videos", "row_weights", "pixel_weights") + ((self.source,) if self.source else ())
    return {k: batch[k] for k in keys if k in batch}


class VideoGenerator(VideoDiffusion):
  """`generate_video`: text -> video."""
  module, what, backend_cls = "generate_video", "video_generator", GenVideoBackend


class VideoAnimator(VideoDiffusion):
  """`image_to_video`: the conversation's image as the first frame + text -> video."""
  module, what, backend_cls = "image_to_video", "video_animator", FirstFrameVideoBackend
  source = "source_images"

  def _source_of(self, sample):
    return sample["targets"]["source_image"]


class VideoEditor(VideoDiffusion):
  """`edit_video`: the conversation's video + text -> the edited video."""
  module, what, backend_cls = "edit_video", "video_editor", SourceVideoBackend
  source = "source_videos"

  def _source_of(self, sample):
    return sample["targets"]["source_video"]

  def _object_pixels(self, sample):
    m = np.asarray(sample["targets"]["masks"], bool)
    if m.shape != self.video_shape[:3]:
      raise ValueError(f"sample {sample.get('id')!r}: masks {m.shape}, expected "
                       f"{self.video_shape[:3]}")
    return m
