"""The diffusion backends of the contract in `vitron_jax.backends.base` and their registration.

Module names (the invocation's module token) -> backend:
  gen_image   text (+ optional phrases/boxes, GLIGEN) -> image        `GenImageBackend`
  edit_image  image + mask (+ phrases/boxes) + text -> edited image   `EditImageBackend`
  gen_video   text -> video (ZeroScope UNet3D)                         `GenVideoBackend`
  img2video   image + text -> video (I2VGen-XL)                        `Img2VideoBackend`
  edit_video  video + text -> edited video (noise to `strength`)       `EditVideoBackend`

    backend = REGISTRY.create("generate_image", models, DiffusionBackendConfig(height=256, width=256))
    cond = backend.native_condition(params, token_ids)           # [B, 77, D] text-encoder states
    loss, metrics = backend.loss(params, batch, cond, rng)         # denoising MSE (jit-able)
    out = backend.run(params, inputs, cond, rng)                   # {"images" | "videos", ...}

`condition` is `[B, *condition_shape]`: the text encoder's states (`native_condition`) or the
VITRON hybrid head's projected signal tokens. The unconditional context for guidance is the
text encoder on the empty prompt (`config.uncond_ids`, default `[bos, eos, eos, ...]`, the
SD-1.x tokenizer's padding), or `inputs["uncond_condition"]`.

Batches (images/videos float in [0, 1], channels-last; see each class):
  loss: "images" | "latents" (gen_image, edit_image: the target), "videos" | "latents";
        edit_image also "source_images" (default: "images") and "masks";
        grounding: "boxes" [B, N, 4], "phrase_ids" [B, N, L] or "phrase_embeddings" [B, N, D],
        "phrase_mask" [B, N] (default all ones); img2video optionally "fps" [B]; any backend
        optionally "row_weights" [B] (weighted mean over examples; 0 = padding row); image
        backends optionally "pixel_weights" [B, H, W] (weights of the squared errors).
  run:  gen_image: grounding keys; edit_image: "images", "masks" (+ grounding);
        img2video: "images"; edit_video: "videos"; all optionally "noise",
        "uncond_condition", "guidance_scale".
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp

from vitron_jax.backends.base import REGISTRY, Backend
from vitron_jax.backends.diffusion import pipelines as P
from vitron_jax.backends.diffusion import schedulers as S
from vitron_jax.backends.diffusion.gligen import GligenInputs
from vitron_jax.backends.diffusion.i2vgen import image_latents_for_frames


@dataclasses.dataclass(frozen=True)
class DiffusionBackendConfig:
  """Static sampling / training options of a diffusion backend."""
  num_inference_steps: int = 50
  guidance_scale: float = 7.5          # <= 1 turns classifier-free guidance off
  height: int = 512
  width: int = 512
  num_frames: int = 16                 # gen_video, img2video
  strength: float = 0.6                # edit_video
  fps: int = 16                        # img2video
  gligen_beta: float = 0.3             # fraction of steps with grounding on
  clip_skip: int | None = None         # I2VGen-XL's pipeline uses 1
  min_snr_gamma: float | None = None   # Min-SNR-gamma loss weighting (None: plain MSE)
  condition_dropout: float = 0.0       # training: P(condition -> unconditional context)
  uncond_ids: tuple[int, ...] | None = None
  condition_tokens: int | None = None  # default: the text encoder's max_position_embeddings

  def __post_init__(self):
    if self.num_inference_steps < 1:
      raise ValueError(f"num_inference_steps must be >= 1, got {self.num_inference_steps}")
    if not 0.0 <= self.condition_dropout <= 1.0:
      raise ValueError(f"condition_dropout must be in [0, 1], got {self.condition_dropout}")
    if self.min_snr_gamma is not None and self.min_snr_gamma <= 0:
      raise ValueError(f"min_snr_gamma must be positive, got {self.min_snr_gamma}")
    if not 0.0 < self.strength <= 1.0:
      raise ValueError(f"strength must be in (0, 1], got {self.strength}")


def denoising_loss_at(eps_fn, params, schedule, x0: jax.Array, condition: jax.Array,
                      t: jax.Array, noise: jax.Array, *, extras: Mapping[str, Any] | None = None,
                      concat_latents: jax.Array | None = None,
                      min_snr_gamma: float | None = None,
                      row_weights: jax.Array | None = None,
                      element_weights: jax.Array | None = None):
  """Denoising loss at given timesteps `t` `[B]` and `noise` (shaped like `x0`).

  MSE between the model output on `q_sample(x0, noise, t)` and the schedule's training target
  (noise / velocity / x0), averaged per example, optionally Min-SNR-gamma weighted, then over
  the batch (with `row_weights` `[B]`: their weighted mean, so padding rows of weight 0 count
  for nothing). `element_weights` (shaped like `x0`) weigh the squared errors within an example
  (normalised by their mean, so the loss keeps its scale). Returns `(loss, {"loss", "mse"})`.
  """
  noisy = S.q_sample(schedule, x0, noise, t)
  x_in = noisy if concat_latents is None else jnp.concatenate(
      [noisy, concat_latents.astype(noisy.dtype)], axis=-1)
  pred = eps_fn(params, x_in, t, condition, **(extras or {}))
  target = S.training_target(schedule, x0, noise, t)
  err = jnp.square(pred.astype(jnp.float32) - target.astype(jnp.float32))
  if element_weights is not None:
    ew = jnp.asarray(element_weights, jnp.float32)
    if ew.shape != err.shape:
      raise ValueError(f"element_weights must be shaped like the latents {err.shape}, got "
                       f"{tuple(ew.shape)}")
    ew = ew / jnp.maximum(ew.reshape(ew.shape[0], -1).mean(1), 1e-6).reshape(
        (-1,) + (1,) * (ew.ndim - 1))
    err = err * ew
  mse = err.reshape(err.shape[0], -1).mean(axis=1)
  w = jnp.ones_like(mse) if min_snr_gamma is None else S.min_snr_weight(schedule, t,
                                                                         min_snr_gamma)
  if row_weights is None:
    loss, mean_mse = jnp.mean(w * mse), jnp.mean(mse)
  else:
    rw = jnp.asarray(row_weights, jnp.float32)
    if rw.shape != mse.shape:
      raise ValueError(f"row_weights must be [{mse.shape[0]}] (one per example), got "
                       f"{tuple(rw.shape)}")
    total = jnp.maximum(rw.sum(), 1e-6)
    loss, mean_mse = (w * mse * rw).sum() / total, (mse * rw).sum() / total
  return loss, {"loss": loss, "mse": mean_mse}


def denoising_loss(eps_fn, params, schedule, x0, condition, rng, **kw):
  """`denoising_loss_at` with t ~ U{0..T-1} and standard normal noise drawn from `rng`."""
  k_t, k_n = jax.random.split(rng)
  t = jax.random.randint(k_t, (x0.shape[0],), 0, schedule.alphas_cumprod.shape[0])
  noise = jax.random.normal(k_n, x0.shape, x0.dtype)
  return denoising_loss_at(eps_fn, params, schedule, x0, condition, t, noise, **kw)


def _need(batch: Mapping, key: str, module: str, what: str) -> jax.Array:
  if key not in batch:
    raise ValueError(f"{module} needs {what} batch[{key!r}] (got keys {sorted(batch)})")
  return batch[key]


class DiffusionBackend(Backend):
  """Shared machinery; subclasses define the inputs of `loss` and the pipeline of `run`."""
  module = ""
  video = False

  def __init__(self, models: P.DiffusionModels, config: DiffusionBackendConfig | None = None):
    self.models = models
    self.config = config or DiffusionBackendConfig()
    self.schedule = S.noise_schedule(models.scheduler)

  # -- contract ---------------------------------------------------------------------------
  @property
  def condition_shape(self) -> tuple[int, int]:
    n = self.config.condition_tokens
    if n is None:
      if self.models.text_encoder is None:
        raise ValueError(f"{self.module}: set config.condition_tokens (no text encoder)")
      n = self.models.text_encoder.config.max_position_embeddings
    return (n, self.models.unet.config.cross_attention_dim)

  def native_condition(self, params, tokens: jax.Array) -> jax.Array:
    want = self.condition_shape[0]
    if tokens.ndim != 2 or tokens.shape[1] != want:
      raise ValueError(f"{self.module}: tokens must be [batch, {want}] ids (padded to the text "
                       f"encoder's length), got {tuple(tokens.shape)}")
    return P.encode_prompt(self.models, params, tokens, self.config.clip_skip)

  def loss(self, params, batch, condition, rng):
    b = self._check_condition(condition)
    k_drop, k_in, k_loss = jax.random.split(rng, 3)
    x0, extras, concat = self._training_inputs(params, batch, k_in)
    if x0.shape[0] != b:
      raise ValueError(f"{self.module}: batch has {x0.shape[0]} examples, condition has {b}")
    if self.config.condition_dropout > 0:
      drop = jax.random.bernoulli(k_drop, self.config.condition_dropout, (b,))
      condition = jnp.where(drop[:, None, None], self.uncond_condition(params, b), condition)
    return denoising_loss(P._unet_eps(self.models), params, self.schedule, x0, condition, k_loss,
                          extras=extras, concat_latents=concat,
                          min_snr_gamma=self.config.min_snr_gamma,
                          row_weights=batch.get("row_weights"),
                          element_weights=self._pixel_weights(batch, x0))

  def run(self, params, inputs, condition, rng):
    b = self._check_condition(condition)
    cfg = self.config
    g = inputs.get("guidance_scale", cfg.guidance_scale)
    uncond = None
    if not isinstance(g, (int, float)) or g > 1.0:
      uncond = inputs.get("uncond_condition")
      uncond = self.uncond_condition(params, b) if uncond is None else uncond
    k_noise, k_run = jax.random.split(rng)
    noise = inputs.get("noise")
    if noise is None:
      noise = self._make_noise(inputs, b, k_noise)
    return self._run(params, inputs, condition, uncond, noise, g, k_run)

  def _make_noise(self, inputs, batch: int, rng) -> jax.Array:
    """Initial latent noise; its size comes from the input image/video where there is one."""
    cfg = self.config
    frames = cfg.num_frames if self.video else None
    h, w = cfg.height, cfg.width
    for key in ("images", "videos"):
      if key in inputs:
        x = inputs[key]
        h, w = x.shape[-3], x.shape[-2]
        if key == "videos":
          frames = x.shape[1]
    return P.latent_noise(self.models, rng, batch, h, w, frames)

  # -- helpers ------------------------------------------------------------------------------
  def _pixel_weights(self, batch, x0) -> jax.Array | None:
    """`batch["pixel_weights"]` `[B, H, W]` (images) or `[B, T, H, W]` (videos; e.g. objects
    weighted above the background) -> weights on the latents: per latent cell, the mean of its
    pixels' (in pixel space, each pixel's own weight on its colour channels)."""
    if "pixel_weights" not in batch:
      return None
    w = jnp.asarray(batch["pixel_weights"], jnp.float32)
    f = self.models.vae_factor
    lead, (h, wd) = x0.shape[:-3], x0.shape[-3:-1]
    if w.shape != lead + (h * f, wd * f):
      what = "[B, T, H, W]: the videos'" if self.video else "[B, H, W]: the images'"
      raise ValueError(f"{self.module}: pixel_weights must be {list(lead + (h * f, wd * f))} "
                       f"({what} size), got {tuple(w.shape)}")
    flat = w.reshape((-1, h * f, wd * f))
    if self.models.vae is None:  # pixel space: each latent channel is one pixel's colour
      out = P.space_to_depth(jnp.repeat(flat[..., None], 3, axis=-1), f)
    else:
      cell = flat.reshape(-1, h, f, wd, f).mean(axis=(2, 4))
      out = jnp.broadcast_to(cell[..., None], cell.shape + x0.shape[-1:])
    return out.reshape(x0.shape)

  def uncond_condition(self, params, batch: int) -> jax.Array:
    """`[B, L, D]` unconditional context: the text encoder on the empty prompt."""
    n = self.condition_shape[0]
    ids = self.config.uncond_ids
    if ids is None:
      tc = self.models.text_encoder.config
      ids = (tc.bos_token_id,) + (tc.eos_token_id,) * (n - 1)
    if len(ids) != n:
      raise ValueError(f"config.uncond_ids has {len(ids)} ids, expected {n}")
    tokens = jnp.broadcast_to(jnp.asarray(ids, jnp.int32), (batch, n))
    return P.encode_prompt(self.models, params, tokens, self.config.clip_skip)

  def _check_condition(self, condition) -> int:
    want = self.condition_shape
    if condition.ndim != 3 or tuple(condition.shape[1:]) != want:
      raise ValueError(f"{self.module}: condition must be [batch, {want[0]}, {want[1]}] "
                       f"(condition_shape), got {tuple(condition.shape)}")
    return condition.shape[0]

  def _latents(self, params, batch, rng, key: str) -> jax.Array:
    if "latents" in batch:
      return batch["latents"]
    x = _need(batch, key, self.module, "the training target (or 'latents')")
    if self.video:
      P.check_unit_images(x, f"batch[{key!r}]", ndim=5)
      flat = P.encode_images(self.models, params, x.reshape((-1,) + x.shape[2:]), rng)
      return flat.reshape(x.shape[:2] + flat.shape[1:])
    P.check_unit_images(x, f"batch[{key!r}]")
    return P.encode_images(self.models, params, x, rng)

  def _grounding(self, params, data: Mapping, batch: int) -> GligenInputs | None:
    if "boxes" not in data:
      return None
    boxes = data["boxes"]
    if "phrase_embeddings" in data:
      emb = data["phrase_embeddings"]
    else:
      emb = P.encode_phrases(self.models, params, _need(
          data, "phrase_ids", self.module, "phrase token ids [B, N, L] with the boxes:"))
    mask = data.get("phrase_mask", jnp.ones(boxes.shape[:2], jnp.float32))
    return GligenInputs(boxes, emb, mask)

  def _training_grounding(self, params, batch, b) -> dict:
    if not self.models.is_gligen:
      if "boxes" in batch and not self.models.grounding_layout:
        raise ValueError(f"{self.module}: batch has 'boxes' but the UNet is neither a GLIGEN "
                         "UNet nor takes a grounding layout")
      return {}
    g = self._grounding(params, batch, b)
    if g is None:  # no phrases: every slot is padding
      d = self.models.unet.config.cross_attention_dim
      g = GligenInputs(jnp.zeros((b, 0, 4)), jnp.zeros((b, 0, d)), jnp.zeros((b, 0)))
    return {"gligen": P.pad_grounding(self.models, g)}

  def _layout(self, params, batch, x0, extras) -> jax.Array | None:
    """The grounding layout channels of a training batch (None without a layout UNet); a
    GLIGEN UNet's padded grounding in `extras` is reused."""
    if not self.models.grounding_layout:
      return None
    g = extras.get("gligen")
    return self.models.layout(self._grounding(params, batch, x0.shape[0]) if g is None else g,
                              x0)

  def _training_inputs(self, params, batch, rng):
    raise NotImplementedError

  def _run(self, params, inputs, condition, uncond, noise, guidance, rng):
    raise NotImplementedError


class GenImageBackend(DiffusionBackend):
  """Text (+ phrases and boxes with a GLIGEN UNet; with `models.grounding_layout` also drawn
  as input channels) -> image."""
  module = "generate_image"

  def _training_inputs(self, params, batch, rng):
    x0 = self._latents(params, batch, rng, "images")
    extras = self._training_grounding(params, batch, x0.shape[0])
    return x0, extras, self._layout(params, batch, x0, extras)

  def _run(self, params, inputs, condition, uncond, noise, guidance, rng):
    c = self.config
    return P.text_to_image(self.models, params, condition, uncond, noise=noise,
                           num_inference_steps=c.num_inference_steps, guidance_scale=guidance,
                           grounding=self._grounding(params, inputs, condition.shape[0]),
                           gligen_beta=c.gligen_beta, rng=rng)


class EditImageBackend(DiffusionBackend):
  """Image + mask (1 = repaint) + text (+ phrases and boxes) -> edited image (inpainting)."""
  module = "edit_image"

  def _training_inputs(self, params, batch, rng):
    k_t, k_s = jax.random.split(rng)
    x0 = self._latents(params, batch, k_t, "images")
    extras = self._training_grounding(params, batch, x0.shape[0])
    m = self.models
    layout = self._layout(params, batch, x0, extras)
    if P.inpaint_input_channels(m, self.module) == m.latent_channels:
      return x0, extras, layout
    source = batch.get("source_images", batch.get("images"))
    if source is None:
      raise ValueError("edit_image needs batch['source_images'] (or 'images') with 'latents'")
    P.check_unit_images(source, "batch['source_images']")
    masks = P._check_masks(_need(batch, "masks", self.module, "the edit region"), source)
    if m.is_gligen:
      edit = P._latent_mask(masks, m.vae_factor)
      known = P.encode_images(m, params, source, k_s)
      concat = jnp.concatenate([known * (1 - edit), 1 - edit], axis=-1)
    else:
      concat = P.inpaint_channels(m, params, source, masks, k_s)
    if layout is not None:
      concat = jnp.concatenate([concat, layout], axis=-1)
    return x0, extras, concat

  def _run(self, params, inputs, condition, uncond, noise, guidance, rng):
    c = self.config
    return P.inpaint_image(self.models, params, condition, uncond,
                           images=_need(inputs, "images", self.module, "the image to edit"),
                           masks=_need(inputs, "masks", self.module, "the edit region"),
                           noise=noise, rng=rng, num_inference_steps=c.num_inference_steps,
                           guidance_scale=guidance,
                           grounding=self._grounding(params, inputs, condition.shape[0]),
                           gligen_beta=c.gligen_beta)


class GenVideoBackend(DiffusionBackend):
  """Text -> video (UNet3D)."""
  module = "generate_video"
  video = True

  def _training_inputs(self, params, batch, rng):
    return self._latents(params, batch, rng, "videos"), {}, None

  def _run(self, params, inputs, condition, uncond, noise, guidance, rng):
    return P.text_to_video(self.models, params, condition, uncond, noise=noise,
                           num_inference_steps=self.config.num_inference_steps,
                           guidance_scale=guidance, rng=rng)


class EditVideoBackend(GenVideoBackend):
  """Video + text -> edited video: noise the video's latents to `strength`, then denoise."""
  module = "edit_video"

  def _run(self, params, inputs, condition, uncond, noise, guidance, rng):
    videos = _need(inputs, "videos", self.module, "the video to edit")
    return P.video_to_video(self.models, params, condition, uncond, videos=videos, noise=noise,
                            rng=rng, strength=self.config.strength,
                            num_inference_steps=self.config.num_inference_steps,
                            guidance_scale=guidance)


class Img2VideoBackend(DiffusionBackend):
  """First frame + text -> video (I2VGen-XL: image latents, CLIP image embedding, fps)."""
  module = "image_to_video"
  video = True

  def _training_inputs(self, params, batch, rng):
    videos = _need(batch, "videos", self.module, "the training videos")
    x0 = self._latents(params, batch, rng, "videos")
    b, t = x0.shape[:2]
    fps = jnp.broadcast_to(jnp.asarray(batch.get("fps", self.config.fps), jnp.float32), (b,))
    extras = {"fps": fps, "image_latents": image_latents_for_frames(x0[:, 0], t),
              "image_embeddings": P.image_embeds(self.models, params, videos[:, 0])}
    return x0, extras, None

  def _run(self, params, inputs, condition, uncond, noise, guidance, rng):
    return P.image_to_video(self.models, params, condition, uncond,
                            images=_need(inputs, "images", self.module, "the first frame"),
                            noise=noise, fps=self.config.fps, rng=rng,
                            num_inference_steps=self.config.num_inference_steps,
                            guidance_scale=guidance)


BACKENDS = {cls.module: cls for cls in (GenImageBackend, EditImageBackend, GenVideoBackend,
                                        Img2VideoBackend, EditVideoBackend)}
for _name, _cls in BACKENDS.items():
  if _name not in REGISTRY:
    REGISTRY.register(_name, _cls)
