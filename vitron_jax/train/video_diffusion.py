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

* `generate_video`: the clip's layout (`LayoutVideoBackend`, with the `layout` field, on by
  default): the invocation's boxes are every object's box in every frame, object-major, and
  each frame's boxes with their phrases' pooled embeddings are drawn as that frame's input
  channels (`backends.diffusion.layout.layout_map`), as the image generator draws its boxes.
  The LLM plans where each object is in each frame (LLM-grounded video diffusion); without
  boxes nothing is drawn. Text alone left the tiny UNet3D drawing blobs of unasked colours
  that did not move the asked way (direction 0.03 against a 0.20 chance; BUILD_NOTES.md);
* `image_to_video`: the first frame, repeated on every frame (`FirstFrameVideoBackend`), and
  with `layout` (on by default) the clip's layout after it as the text -> video one draws it
  (`FirstFrameLayoutVideoBackend`): the LLM finds the image's objects and plans where each
  goes. The reference I2VGen-XL (`Img2VideoBackend`) adds a CLIP image encoder and an fps
  embedding; with no pretrained image encoder here, the frame as input channels is what a
  small model trained from scratch can use. With the frame and text alone the tiny UNet3D
  copied frame 0 and blurred a displaced copy into frame 1 (direction 0.40; BUILD_NOTES.md);
* `edit_video`: the source video, frame by frame (`SourceVideoBackend`). A PixelWorld video
  edit recolours one object named only in the command (the invocation has no box), so the
  model must see the source to keep the rest; SDEdit-style re-noising (`EditVideoBackend`)
  keeps nothing exactly and needs a strong pretrained prior.

Training (stage tasks `pixelworld_video_generator` / `_animator` / `_editor`,
`train.video_diffusion_task`): the denoising loss on the sample's target video, its objects'
pixels weighted `object_weight` above the background.
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vitron_jax.backends.diffusion import layout as L
from vitron_jax.backends.diffusion import pipelines as P
from vitron_jax.backends.diffusion.backend import GenVideoBackend, _need
from vitron_jax.backends.diffusion.gligen import GligenInputs
from vitron_jax.backends.diffusion.unet3d import UNet3DConditionConfig, UNet3DConditionModel
from vitron_jax.data.pixelworld.sample import box_mask
from vitron_jax.protocol import invocation as I
from vitron_jax.train.pixel_diffusion import COMMON, PixelDiffusion

DEFAULTS: dict[str, Any] = {**COMMON, "num_frames": 2}
#: the text -> video backend's further fields: its layout (`LayoutVideoBackend`) and the
#: phrases drawn in it (at most `max_phrases` objects, each phrase `phrase_len` ids with bos
#: and end-of-text)
GENERATOR_DEFAULTS: dict[str, Any] = {**DEFAULTS, "layout": True, "max_phrases": 4,
                                      "phrase_len": 6}

_ITEM_SPLIT = re.compile(r", | and (?=(?:an?|the) )")
_MOTION = re.compile(r" (?:is )?(?:moving|staying|entering)\b.*$")


def video_phrases_of(command: str, n: int) -> list[str]:
  """The `n` object phrases of a text -> video command "p1 moving right, p2 staying still and
  p3 moving up along a curve on a white background" or an image -> video one "the red circle
  is moving right and the blue square is staying still" (PixelWorld's grammar: each item is a
  noun phrase, then its motion: [is] moving / staying / entering ...)."""
  body = command.strip()
  cut = body.rfind(" on ")
  if cut > 0 and body.endswith("background"):
    body = body[:cut]
  parts = [_MOTION.sub("", p).strip() for p in _ITEM_SPLIT.split(body)]
  parts = [p for p in parts if p]
  if len(parts) != n:
    raise ValueError(f"command {command!r} names {len(parts)} objects but the invocation's "
                     f"layout has {n}")
  return parts


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


class LayoutVideoBackend(ConcatVideoBackend):
  """Text + the clip's layout -> video: `batch["boxes"]` `[B, N, T, 4]` (object n's box in
  frame t, normalised), `batch["phrase_ids"]` `[B, N, L]` and `batch["phrase_mask"]` `[B, N]`;
  frame t's input channels are `layout_map` of the boxes of frame t with the phrases' pooled
  embeddings (the image generator's layout, frame by frame)."""

  def _concat(self, params, batch, shape):
    boxes = _need(batch, "boxes", self.module, "the layout's boxes [B, N, T, 4]:")
    ids = _need(batch, "phrase_ids", self.module, "phrase token ids [B, N, L] with the boxes:")
    b, t = shape[0], shape[1]
    if boxes.ndim != 4 or tuple(boxes.shape[:1]) + tuple(boxes.shape[2:]) != (b, t, 4):
      raise ValueError(f"{self.module}: boxes must be [{b}, objects, {t}, 4] (each object's "
                       f"box in each frame), got {tuple(boxes.shape)}")
    mask = batch.get("phrase_mask", jnp.ones(boxes.shape[:2], jnp.float32))
    emb = P.encode_phrases(self.models, params, ids)
    f = self.models.vae_factor
    frames = [L.layout_map(GligenInputs(boxes[:, :, k], emb, mask), shape[2] * f,
                           shape[3] * f, f) for k in range(t)]
    return jnp.stack(frames, axis=1)


class FirstFrameVideoBackend(ConcatVideoBackend):
  """First frame (`batch["source_images"]` `[B, H, W, 3]`) + text -> video."""
  module = "image_to_video"

  def _concat(self, params, batch, shape):
    first = _need(batch, "source_images", self.module, "the first frame")
    P.check_unit_images(first, "batch['source_images']")
    z = P.encode_images(self.models, params, first)
    return jnp.broadcast_to(z[:, None], tuple(shape[:-1]) + z.shape[-1:])


class FirstFrameLayoutVideoBackend(ConcatVideoBackend):
  """First frame + the clip's layout + text -> video: the first frame's channels
  (`FirstFrameVideoBackend`), then the layout's (`LayoutVideoBackend`)."""
  module = "image_to_video"

  def _concat(self, params, batch, shape):
    return jnp.concatenate([FirstFrameVideoBackend._concat(self, params, batch, shape),
                            LayoutVideoBackend._concat(self, params, batch, shape)], axis=-1)


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

  def inputs(self, command: str, source: Any = None,
             boxes: Sequence[Sequence[float]] = ()) -> dict[str, np.ndarray]:
    """An invocation's command, its normalised boxes (the text -> video layout: every
    object's box in every frame, object-major) and, for the backends that take one, what it
    conditions on (uint8: the first frame `[H, W, 3]` / the video to edit `[T, H, W, 3]`) ->
    the run inputs (raises ValueError for what the backend cannot take)."""
    out = {"command_ids": self.command_ids(command)}
    out.update(self._layout_inputs(command, boxes))
    if self.source == "source_images":
      s = self.image_size
      out[self.source] = self._unit(source, (s, s, 3), f"{self.module}'s first frame")
    elif self.source == "source_videos":
      out[self.source] = self._unit(source, self.video_shape, f"{self.module}'s video")
    return out

  def _layout_inputs(self, command: str, boxes: Sequence[Sequence[float]]
                     ) -> dict[str, np.ndarray]:
    """The layout's example fields (none here: only the text -> video backend draws one)."""
    del command
    if len(boxes):
      why = (f"model.{self.what}.layout is False" if "layout" in self.fields
             else "its invocation names no region")
      raise ValueError(f"{self.module} takes no boxes ({why}), got {len(boxes)}")
    return {}

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
    out = self.inputs(inv.command, self._source_of(sample), inv.boxes)
    out["videos"] = self._unit(sample["targets"]["video"], self.video_shape,
                               f"sample {sample.get('id')!r}'s target video")
    out["pixel_weights"] = np.where(self._object_pixels(sample),
                                    np.float32(self.fields["object_weight"]), np.float32(1.0))
    return out

  def backend_batch(self, batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """Example fields -> the backend's loss / run inputs."""
    keys = ("videos", "row_weights", "pixel_weights", "boxes", "phrase_ids",
            "phrase_mask") + ((self.source,) if self.source else ())
    return {k: batch[k] for k in keys if k in batch}

  @property
  def concat_description(self) -> str:
    """What the UNet's channels after the noisy latents hold (the export's `<what>.json`)."""
    return {"": "none", "source_images": "the first frame's latents on every frame",
            "source_videos": "the source video's latents, frame by frame"}[self.source]


class LayoutVideoDiffusion(VideoDiffusion):
  """A video backend that may draw the clip's layout from its invocation's boxes (field
  `layout`): every object's box in every frame, object-major, each frame's boxes with their
  phrases' pooled embeddings as that frame's input channels, after any source channels.
  Subclasses set `plain_cls` / `layout_cls` (the backend without / with the layout)."""
  DEFAULTS = GENERATOR_DEFAULTS
  plain_cls = layout_cls = None

  # read from the checked fields, which `PixelDiffusion.__init__` sets before building
  layout = property(lambda self: bool(self.fields["layout"]))
  max_phrases = property(lambda self: int(self.fields["max_phrases"]))
  phrase_len = property(lambda self: int(self.fields["phrase_len"]))

  @property
  def backend_cls(self):
    return self.layout_cls if self.layout else self.plain_cls

  def _grounding_layout(self) -> bool:
    return False  # the backend draws the layout frame by frame itself (not the 2-D pipeline's)

  def _concat_channels(self) -> int:
    extra = L.layout_channels(self.fields["text_width"], self.fields["pixel_patch"])
    return super()._concat_channels() + (extra if self.layout else 0)

  def spec(self) -> dict[str, tuple[tuple[int, ...], Any]]:
    out = super().spec()
    if self.layout:
      k = self.max_phrases
      out.update(phrase_ids=((k, self.phrase_len), np.int32),
                 boxes=((k, self.num_frames, 4), np.float32), phrase_mask=((k,), np.float32))
    return out

  def _layout_inputs(self, command, boxes):
    if not self.layout:
      return super()._layout_inputs(command, boxes)
    k, t = self.max_phrases, self.num_frames
    if len(boxes) % t:
      raise ValueError(f"{self.module}'s layout needs {t} boxes per object (one a frame), got "
                       f"{len(boxes)}")
    n = len(boxes) // t
    if n > k:
      raise ValueError(f"the layout has {n} objects; model.{self.what} draws at most "
                       f"max_phrases={k}")
    pid = np.full((k, self.phrase_len), self.eot, np.int32)
    for j, p in enumerate(video_phrases_of(command, n) if n else ()):
      pid[j] = self._ids(p, self.phrase_len, "phrase")
    bx, pm = self._box_slots(boxes, k * t, "max_phrases x num_frames")
    return {"phrase_ids": pid, "boxes": bx.reshape(k, t, 4), "phrase_mask": pm[::t].copy()}

  @property
  def concat_description(self) -> str:
    plain = super().concat_description
    if not self.layout:
      return plain
    drawn = ("the clip's layout, frame by frame: per cell the mean over its pixels of the "
             "summed pooled phrase embeddings of the boxes covering the pixel centre in that "
             "frame, then the boxes' union per pixel, space-to-depth")
    return drawn if plain == "none" else f"{plain}, then {drawn}"


class VideoGenerator(LayoutVideoDiffusion):
  """`generate_video`: text (+ the clip's layout, with `layout`) -> video."""
  module, what = "generate_video", "video_generator"
  plain_cls, layout_cls = GenVideoBackend, LayoutVideoBackend


class VideoAnimator(LayoutVideoDiffusion):
  """`image_to_video`: the conversation's image as the first frame + text (+ the clip's
  layout, with `layout`: where each object of the image goes in every frame) -> video."""
  module, what = "image_to_video", "video_animator"
  plain_cls, layout_cls = FirstFrameVideoBackend, FirstFrameLayoutVideoBackend
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
