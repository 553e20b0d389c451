"""Diffusion pipelines: text -> image (optionally GLIGEN-grounded), inpainting / editing,
text -> video, image -> video, video -> video; pure functions of (static models, params).

Conventions (all channels-last):
  images  `[B, H, W, 3]` float in [0, 1] (inputs are validated, outputs are the decoder's
          [-1, 1] mapped to [0, 1] and clipped to that range, as diffusers' postprocess);
  masks   `[B, H, W, 1]` (or `[B, H, W]`) in {0, 1}, 1 = the region to repaint;
  videos  `[B, T, H, W, 3]` in [0, 1];
  latents `[B, h, w, c]` / `[B, T, h, w, c]`, scaled by the VAE's `scaling_factor`;
  condition / uncond_condition `[B, L, D]` context tokens (from the text encoder via
          `encode_prompt`, or from the VITRON hybrid head); passing `uncond_condition` turns on
          classifier-free guidance (one batched UNet call per step);
  params  `{"unet": vars, "vae": vars, "text_encoder": vars, "image_encoder": vars}` where
          each `vars` is a Flax variables dict `{"params": ...}` or a bare parameter tree.

Every pipeline is jit-able as a whole (static: `models`, step counts, `progress=False`), and
returns `{"latents": ..., "images" | "videos": ...}`. With `progress=True` call it outside jit:
the text/VAE parts run as their own jitted calls and the denoising loop in chunks (see
`sampling.py`).

GLIGEN (`grounding=GligenInputs(boxes, phrase_embeddings, phrase_mask)`): phrases are padded to
the UNet's `gligen_max_objs` (as diffusers pads to 30), the unconditional branch sees the
phrase mask zeroed, and grounding is switched off after `int(gligen_beta * N)` steps
(diffusers' `gligen_scheduled_sampling_beta`).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from vitron_jax.backends.diffusion import layout as L
from vitron_jax.backends.diffusion import sampling
from vitron_jax.backends.diffusion import schedulers as S
from vitron_jax.backends.diffusion.gligen import GligenInputs
from vitron_jax.backends.diffusion.i2vgen import image_latents_for_frames
from vitron_jax.backends.diffusion.schedulers import SchedulerConfig
from vitron_jax.nn.norms import LayerNorm


@dataclasses.dataclass(frozen=True)
class DiffusionModels:
  """The static half of a pipeline: Flax modules (config only) and the scheduler config.

  unet: `UNet2DConditionModel` (images), `UNet3DConditionModel` (video) or `I2VGenXLUNet`.
  vae: `AutoencoderKL`, or None for pixel-space diffusion (DDPM / DeepFloyd-IF style: the
  "latents" are the images mapped to [-1, 1], `pixel_patch` x `pixel_patch` pixels stacked
  into one position (space-to-depth, as a DiT patchifies: 3 p^2 channels, factor p; exact and
  parameter-free); `params` has no "vae").
  text_encoder: `CLIPTextModel` (needed by `encode_prompt` only).
  image_encoder: `CLIPVisionModel(with_projection=True)` (image -> video only).
  grounding_layout: the UNet also takes its grounding (boxes and one pooled text embedding
  each, of the UNet's `cross_attention_dim`) as input channels (`layout.layout_map`, appended
  after the latents and any inpainting channels: `in_channels` grows by `layout_channels`);
  a GLIGEN UNet attends to the same grounding, a plain one sees it only there.
  """
  unet: Any
  vae: Any
  scheduler: SchedulerConfig
  text_encoder: Any = None
  image_encoder: Any = None
  pixel_patch: int = 1
  grounding_layout: bool = False

  def __post_init__(self):
    if int(self.pixel_patch) < 1 or (self.vae is not None and self.pixel_patch != 1):
      raise ValueError(f"pixel_patch must be >= 1, and 1 with a VAE; got {self.pixel_patch}")

  @property
  def latent_channels(self) -> int:
    return 3 * self.pixel_patch ** 2 if self.vae is None else self.vae.config.latent_channels

  @property
  def vae_factor(self) -> int:
    return self.pixel_patch if self.vae is None else self.vae.config.downsample_factor

  @property
  def layout_channels(self) -> int:
    """Input channels the grounding layout takes (0 without `grounding_layout`)."""
    if not self.grounding_layout:
      return 0
    return L.layout_channels(self.unet.config.cross_attention_dim, self.vae_factor)

  def layout(self, grounding: GligenInputs | None, latents: jax.Array) -> jax.Array | None:
    """The layout channels for `latents` `[B, h, w, c]` (None without `grounding_layout`;
    zeros without grounding: nothing is drawn)."""
    if not self.grounding_layout:
      return None
    f, b, h, w = self.vae_factor, latents.shape[0], latents.shape[-3], latents.shape[-2]
    if grounding is None:
      return jnp.zeros((b, h, w, self.layout_channels), jnp.float32)
    return L.layout_map(grounding, h * f, w * f, f)

  @property
  def is_gligen(self) -> bool:
    return getattr(self.unet.config, "attention_type", "default") == "gated"

  @property
  def max_objs(self) -> int:
    return getattr(self.unet.config, "gligen_max_objs", 30)


# ---------------------------------------------------------------------------------------------
# Module calls (jitted per static module, so eager/progress mode stays fast; inlined under jit)

def as_variables(params) -> dict:
  """A Flax variables dict from either `{"params": tree}` or a bare parameter tree (the
  converters in this repo return one or the other)."""
  if isinstance(params, Mapping) and "params" in params:
    return params
  return {"params": params}


@functools.partial(jax.jit, static_argnames=("module", "method", "output_hidden_states"))
def _apply(module, variables, *args, method: str | None = None,
           output_hidden_states: bool | None = None, **kwargs):
  fn = getattr(type(module), method) if method else None
  if output_hidden_states is not None:
    kwargs["output_hidden_states"] = output_hidden_states
  return module.apply(as_variables(variables), *args, method=fn, **kwargs)


def encode_prompt(models: DiffusionModels, params, input_ids: jax.Array,
                  clip_skip: int | None = None) -> jax.Array:
  """`[B, L]` token ids -> `[B, L, D]` context: the text encoder's last hidden state, or with
  `clip_skip = k` the hidden state k layers before the last, through the final layer norm
  (diffusers' `clip_skip`; I2VGen-XL's pipeline uses k = 1)."""
  if models.text_encoder is None:
    raise ValueError("encode_prompt needs models.text_encoder")
  if clip_skip is None:
    return _apply(models.text_encoder, params["text_encoder"], input_ids).last_hidden_state
  n = models.text_encoder.config.num_hidden_layers
  if not isinstance(clip_skip, int) or not 0 <= clip_skip < n:
    raise ValueError(f"clip_skip must be an int in [0, {n}), got {clip_skip!r}")
  out = _apply(models.text_encoder, params["text_encoder"], input_ids,
               output_hidden_states=True)
  h = out.hidden_states[-(clip_skip + 1)]
  ln = LayerNorm(eps=models.text_encoder.config.layer_norm_eps)
  return ln.apply({"params": as_variables(params["text_encoder"])["params"]["final_layer_norm"]},
                  h)


def encode_phrases(models: DiffusionModels, params, phrase_ids: jax.Array) -> jax.Array:
  """`[B, N, L]` phrase token ids -> `[B, N, D]` pooled phrase embeddings (GLIGEN)."""
  if phrase_ids.ndim != 3:
    raise ValueError(f"phrase_ids must be [batch, phrases, tokens], got {phrase_ids.shape}")
  b, n, l = phrase_ids.shape
  out = _apply(models.text_encoder, params["text_encoder"], phrase_ids.reshape(b * n, l))
  return out.pooler_output.reshape(b, n, -1)


def encode_images(models: DiffusionModels, params, images: jax.Array,
                  rng: jax.Array | None = None) -> jax.Array:
  """`[B, H, W, 3]` images in [0, 1] -> scaled latents (posterior sample with `rng`, else mode)."""
  check_unit_images(images, "images")
  return _encode_pm1(models, params, images * 2.0 - 1.0, rng)


def space_to_depth(x: jax.Array, p: int) -> jax.Array:
  """`[B, H, W, C]` -> `[B, H/p, W/p, p*p*C]` (each p x p block stacked, row-major)."""
  if p == 1:
    return x
  b, h, w, c = x.shape
  if h % p or w % p:
    raise ValueError(f"images {h}x{w} must be multiples of pixel_patch {p}")
  x = x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h // p, w // p, p * p * c)


def depth_to_space(x: jax.Array, p: int) -> jax.Array:
  """Inverse of `space_to_depth`."""
  if p == 1:
    return x
  b, h, w, c = x.shape
  x = x.reshape(b, h, w, p, p, c // (p * p)).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h * p, w * p, c // (p * p))


def _encode_pm1(models, params, x, rng):
  if models.vae is None:  # pixel space
    return space_to_depth(x.astype(jnp.float32), models.pixel_patch)
  post = _apply(models.vae, params["vae"], x, method="encode")
  z = post.mode() if rng is None else post.sample(rng)
  return models.vae.config.scale(z)


def decode_latents(models: DiffusionModels, params, latents: jax.Array) -> jax.Array:
  """Scaled latents `[B, (T,) h, w, c]` -> images / videos in [0, 1] (clipped)."""
  lead = latents.shape[:-3]
  flat = latents.reshape((-1,) + latents.shape[-3:])
  if models.vae is None:  # pixel space
    x = depth_to_space(flat, models.pixel_patch)
  else:
    x = _apply(models.vae, params["vae"], models.vae.config.unscale(flat), method="decode")
  x = jnp.clip(x.astype(jnp.float32) / 2 + 0.5, 0.0, 1.0)
  return x.reshape(lead + x.shape[1:])


def latent_noise(models: DiffusionModels, rng: jax.Array, batch: int, height: int, width: int,
                 frames: int | None = None) -> jax.Array:
  """Standard normal latents for a `height x width` output (and `frames` frames)."""
  f = models.vae_factor
  if height % f or width % f:
    raise ValueError(f"height and width must be multiples of the VAE factor {f}, got "
                     f"{height}x{width}")
  shape = (batch,) + ((frames,) if frames else ()) + (height // f, width // f,
                                                      models.latent_channels)
  return jax.random.normal(rng, shape, jnp.float32)


def _unet_eps(models: DiffusionModels):
  def eps(params, x, t, condition, **extras):
    return _apply(models.unet, params["unet"], x, t, encoder_hidden_states=condition, **extras)
  return eps


# ---------------------------------------------------------------------------------------------
# Input checks (static facts always; values when concrete)

def _concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)


def check_unit_images(x, name: str, ndim: int = 4, channels: int = 3) -> None:
  layout = "[B, H, W, C]" if ndim == 4 else "[B, T, H, W, C]"
  if x.ndim != ndim or x.shape[-1] != channels:
    raise ValueError(f"{name} must be channels-last {layout} with C={channels}, got shape "
                     f"{tuple(x.shape)}")
  if _concrete(x):
    a = np.asarray(x)
    if a.size and (not np.isfinite(a).all() or a.min() < 0.0 or a.max() > 1.0):
      raise ValueError(f"{name} must be float in [0, 1], got values in [{a.min()}, {a.max()}]")


def _check_masks(masks, images) -> jax.Array:
  if masks.ndim == images.ndim - 1:
    masks = masks[..., None]
  if masks.shape != images.shape[:-1] + (1,):
    raise ValueError(f"masks must be {tuple(images.shape[:-1])} or "
                     f"{tuple(images.shape[:-1]) + (1,)} (1 = region to repaint), got "
                     f"{tuple(masks.shape)}")
  if _concrete(masks):
    m = np.asarray(masks)
    if m.size and not np.all((m == 0) | (m == 1)):
      raise ValueError("masks must be binary (0 = keep, 1 = repaint)")
  return masks.astype(jnp.float32)


def _check_condition(models, condition, uncond_condition) -> int:
  dim = models.unet.config.cross_attention_dim
  if condition.ndim != 3 or condition.shape[-1] != dim:
    raise ValueError(f"condition must be [batch, tokens, {dim}] (the UNet's "
                     f"cross_attention_dim), got {tuple(condition.shape)}")
  if uncond_condition is not None and uncond_condition.shape != condition.shape:
    raise ValueError(f"uncond_condition must have the condition's shape "
                     f"{tuple(condition.shape)}, got {tuple(uncond_condition.shape)}")
  return condition.shape[0]


def _check_noise(models, noise, batch: int, frames: bool) -> None:
  nd = 5 if frames else 4
  if noise.ndim != nd or noise.shape[0] != batch or noise.shape[-1] != models.latent_channels:
    layout = "[B, T, h, w, c]" if frames else "[B, h, w, c]"
    raise ValueError(f"noise must be latents {layout} with B={batch}, c="
                     f"{models.latent_channels}, got shape {tuple(noise.shape)}")


def inpaint_input_channels(models: DiffusionModels, what: str) -> int:
  """The UNet's input channels without the layout's, checked to be an inpainting UNet's: `c`
  (re-imposing only), `2c + 1` (Stable Diffusion / GLIGEN inpainting) or, not GLIGEN, `3c + 1`
  (`inpaint_channels`'s whole source too); ValueError naming `what` otherwise."""
  c, extra = models.latent_channels, models.layout_channels
  c_in = models.unet.config.in_channels - extra
  if c_in not in (c, 2 * c + 1) and (c_in != 3 * c + 1 or models.is_gligen):
    raise ValueError(f"{what} needs a UNet with {c + extra}, {2 * c + 1 + extra} or (not "
                     f"GLIGEN) {3 * c + 1 + extra} input channels (layout: {extra}), got "
                     f"{c_in + extra}")
  return c_in


def inpaint_channels(models: DiffusionModels, params, images: jax.Array, masks: jax.Array,
                     rng: jax.Array | None) -> jax.Array:
  """What a plain inpainting UNet takes after the noisy latents: `[repaint mask, masked-image
  latents]` (Stable Diffusion inpainting's `2c + 1` channels) and, for a UNet with `3c + 1`
  (layout channels aside), the whole image's latents after them. `images` `[B, H, W, 3]` in
  [0, 1], `masks` `[B, H, W, 1]` (1 = repaint)."""
  c = models.latent_channels
  c_in = models.unet.config.in_channels - models.layout_channels
  masked = _encode_pm1(models, params, (images * 2.0 - 1.0) * (1.0 - masks), rng)
  out = [_latent_mask(masks, models.vae_factor), masked]
  if c_in == 3 * c + 1:
    out.append(_encode_pm1(models, params, images * 2.0 - 1.0, rng))
  return jnp.concatenate(out, axis=-1)


def _latent_mask(masks: jax.Array, f: int) -> jax.Array:
  """Pixel masks `[B, H, W, 1]` -> latent grid: a cell is repainted if any of its pixels is."""
  b, h, w, _ = masks.shape
  if h % f or w % f:
    raise ValueError(f"masks height and width must be multiples of the VAE factor {f}, got "
                     f"{h}x{w}")
  return masks.reshape(b, h // f, f, w // f, f, 1).max(axis=(2, 4))


# ---------------------------------------------------------------------------------------------
# GLIGEN grounding

def pad_grounding(models: DiffusionModels, grounding: GligenInputs) -> GligenInputs:
  """Validate boxes/phrases and pad to the UNet's `gligen_max_objs` slots (zeros, mask 0)."""
  if not models.is_gligen:
    raise ValueError("grounding (phrases + boxes) needs a GLIGEN UNet (attention_type='gated'),"
                     f" got attention_type={getattr(models.unet.config, 'attention_type', None)!r}")
  boxes, emb, mask = grounding.boxes, grounding.positive_embeddings, grounding.masks
  if boxes.ndim != 3 or boxes.shape[-1] != 4:
    raise ValueError(f"grounding boxes must be [batch, phrases, 4] (x0, y0, x1, y1 in [0, 1]), "
                     f"got {tuple(boxes.shape)}")
  b, n, _ = boxes.shape
  if n > models.max_objs:
    raise ValueError(f"grounding has {n} phrases; the GLIGEN position net takes at most "
                     f"{models.max_objs}")
  dim = models.unet.config.cross_attention_dim
  if emb.shape != (b, n, dim):
    raise ValueError(f"grounding phrase embeddings must be [{b}, {n}, {dim}] (one pooled text "
                     f"embedding per box), got {tuple(emb.shape)}")
  if mask.shape != (b, n):
    raise ValueError(f"grounding phrase mask must be [{b}, {n}], got {tuple(mask.shape)}")
  if _concrete(boxes):
    a = np.asarray(boxes)
    if a.size and (not np.isfinite(a).all() or a.min() < 0 or a.max() > 1):
      raise ValueError("grounding boxes must be normalised to [0, 1] (x0, y0, x1, y1); got "
                       f"values in [{a.min()}, {a.max()}]")
    if a.size and (np.any(a[..., 2] < a[..., 0]) or np.any(a[..., 3] < a[..., 1])):
      raise ValueError("grounding boxes must be (x0, y0, x1, y1) with x0 <= x1 and y0 <= y1")
  pad = models.max_objs - n
  return GligenInputs(
      boxes=jnp.pad(boxes.astype(jnp.float32), ((0, 0), (0, pad), (0, 0))),
      positive_embeddings=jnp.pad(emb, ((0, 0), (0, pad), (0, 0))),
      masks=jnp.pad(mask.astype(jnp.float32), ((0, 0), (0, pad))))


def _grounding_extras(models, grounding, gligen_beta: float, n: int):
  if grounding is None or not models.is_gligen and models.grounding_layout:
    if models.is_gligen:
      raise ValueError("this GLIGEN UNet needs grounding inputs (phrases + boxes); pass "
                       "grounding=GligenInputs(...) (with zero phrase masks for none)")
    return {}, None, None
  if not 0.0 <= gligen_beta <= 1.0:
    raise ValueError(f"gligen_beta must be in [0, 1], got {gligen_beta}")
  g = pad_grounding(models, grounding)
  uncond = g.replace(masks=jnp.zeros_like(g.masks))
  steps_on = int(gligen_beta * n)

  def extras_fn(i, ex):
    return {"gligen": ex["gligen"].replace(enabled=i < steps_on)}
  return {"gligen": g}, {"gligen": uncond}, extras_fn


def _common(models, params, state, latents, condition, uncond_condition, guidance_scale,
            extras, uncond_extras, extras_fn, rng, progress, **kw):
  return sampling.denoise(
      _unet_eps(models), params, state, latents, condition, uncond_condition=uncond_condition,
      guidance_scale=guidance_scale, extras=extras,
      uncond_extras=uncond_extras if uncond_condition is not None else None, extras_fn=extras_fn,
      rng=rng, progress=progress, **kw)


# ---------------------------------------------------------------------------------------------
# Images

def text_to_image(models: DiffusionModels, params, condition: jax.Array,
                  uncond_condition: jax.Array | None = None, *, noise: jax.Array,
                  num_inference_steps: int = 50, guidance_scale: float = 7.5,
                  grounding: GligenInputs | None = None, gligen_beta: float = 0.3,
                  rng: jax.Array | None = None, progress=False) -> dict[str, jax.Array]:
  """Text (and optionally phrases + boxes) -> images, from standard normal `noise` latents.

  Matches diffusers' `StableDiffusionPipeline` (and `StableDiffusionGLIGENPipeline` with
  `grounding`) given the same noise, context and scheduler. With `models.grounding_layout` the
  grounding's layout is appended to the UNet input at every step, in both guidance branches
  (scheduled sampling switches the gated attention off, not the layout).
  """
  b = _check_condition(models, condition, uncond_condition)
  _check_noise(models, noise, b, frames=False)
  want = models.latent_channels + models.layout_channels
  if models.unet.config.in_channels != want:
    raise ValueError(f"this UNet takes {models.unet.config.in_channels} input channels, text to "
                     f"image {want} (latents + grounding layout); an inpainting UNet: use "
                     "inpaint_image")
  state = S.make_state(models.scheduler, num_inference_steps)
  extras, uncond_extras, extras_fn = _grounding_extras(models, grounding, gligen_beta,
                                                       num_inference_steps)
  layout = models.layout(grounding, noise)
  latents = _common(models, params, state, sampling.initial_latents(state, noise), condition,
                    uncond_condition, guidance_scale, extras, uncond_extras, extras_fn, rng,
                    progress, concat_latents=layout)
  return {"latents": latents, "images": decode_latents(models, params, latents)}


def inpaint_image(models: DiffusionModels, params, condition: jax.Array,
                  uncond_condition: jax.Array | None = None, *, images: jax.Array,
                  masks: jax.Array, noise: jax.Array, rng: jax.Array,
                  num_inference_steps: int = 50, guidance_scale: float = 7.5,
                  grounding: GligenInputs | None = None, gligen_beta: float = 0.3,
                  progress=False) -> dict[str, jax.Array]:
  """Repaint the masked region of `images` following the condition (image editing).

  By UNet input channels c_in (c = latent channels):
    c_in == c:       every step first re-imposes the known region at the step's noise level
                     (fresh noise), as `StableDiffusionGLIGENPipeline`'s inpainting;
    c_in == 2c + 1, GLIGEN UNet: the same, plus `[known * keep, keep]` appended to the input
                     (diffusers' GLIGEN inpainting model);
    c_in == 2c + 1, plain UNet: `[repaint mask, masked-image latents]` appended to the input
                     (`StableDiffusionInpaintPipeline`), no re-imposing;
    c_in == 3c + 1, plain UNet: the same, then the whole image's latents (InstructPix2Pix's
                     source channels), so the UNet also sees what it repaints (a recolour
                     keeps the shape it cannot see in the masked image);
  with `models.grounding_layout` the grounding's layout follows (c_in counts without it).
  A latent cell is repainted when any pixel of it is masked. `rng` drives the VAE posterior
  sample and the re-imposing noise.
  """
  b = _check_condition(models, condition, uncond_condition)
  check_unit_images(images, "images")
  masks = _check_masks(masks, images)
  _check_noise(models, noise, b, frames=False)
  if images.shape[0] != b:
    raise ValueError(f"images batch {images.shape[0]} != condition batch {b}")
  c, c_in = models.latent_channels, inpaint_input_channels(models, "inpainting")
  k_enc, k_sample = jax.random.split(rng)
  state = S.make_state(models.scheduler, num_inference_steps)
  edit = _latent_mask(masks, models.vae_factor)
  keep = 1.0 - edit
  concat = blend = None
  if c_in > c and not models.is_gligen:
    concat = inpaint_channels(models, params, images, masks, k_enc)
  else:
    known = _encode_pm1(models, params, images * 2.0 - 1.0, k_enc)
    if c_in == 2 * c + 1:
      concat = jnp.concatenate([known * keep, keep], axis=-1)

    def blend(i, x, key):
      noisy = S.add_noise_at_index(state, known, jax.random.normal(key, known.shape), i)
      return noisy * keep + x * (1.0 - keep)
  extras, uncond_extras, extras_fn = _grounding_extras(models, grounding, gligen_beta,
                                                       num_inference_steps)
  layout = models.layout(grounding, noise)
  if layout is not None:
    concat = layout if concat is None else jnp.concatenate([concat, layout], axis=-1)
  latents = _common(models, params, state, sampling.initial_latents(state, noise), condition,
                    uncond_condition, guidance_scale, extras, uncond_extras, extras_fn,
                    k_sample, progress, concat_latents=concat, blend=blend)
  return {"latents": latents, "images": decode_latents(models, params, latents)}


# ---------------------------------------------------------------------------------------------
# Videos

def text_to_video(models: DiffusionModels, params, condition: jax.Array,
                  uncond_condition: jax.Array | None = None, *, noise: jax.Array,
                  num_inference_steps: int = 50, guidance_scale: float = 9.0,
                  rng: jax.Array | None = None, progress=False,
                  concat_latents: jax.Array | None = None) -> dict[str, jax.Array]:
  """Text -> video with a UNet3D (ZeroScope), `noise` `[B, T, h, w, c]` (diffusers'
  `TextToVideoSDPipeline`); `concat_latents` `[B, T, h, w, k]`: channels appended to the
  UNet's input at every step (a video backend conditioned on a first frame or a source video,
  `in_channels = c + k`)."""
  b = _check_condition(models, condition, uncond_condition)
  _check_noise(models, noise, b, frames=True)
  if concat_latents is not None and (concat_latents.shape[:-1] != noise.shape[:-1] or
                                     noise.shape[-1] + concat_latents.shape[-1]
                                     != models.unet.config.in_channels):
    raise ValueError(f"concat_latents {tuple(concat_latents.shape)} must match the noise "
                     f"{tuple(noise.shape)} but in channels, which must add up to the UNet's "
                     f"in_channels {models.unet.config.in_channels}")
  state = S.make_state(models.scheduler, num_inference_steps)
  latents = _common(models, params, state, sampling.initial_latents(state, noise), condition,
                    uncond_condition, guidance_scale, {}, None, None, rng, progress,
                    concat_latents=concat_latents)
  return {"latents": latents, "videos": decode_latents(models, params, latents)}


def video_to_video(models: DiffusionModels, params, condition: jax.Array,
                   uncond_condition: jax.Array | None = None, *, videos: jax.Array,
                   noise: jax.Array, rng: jax.Array | None = None, strength: float = 0.6,
                   num_inference_steps: int = 50, guidance_scale: float = 15.0,
                   progress=False) -> dict[str, jax.Array]:
  """Edit `videos` `[B, T, H, W, 3]`: encode, noise to `strength`, denoise with the condition
  (diffusers' `VideoToVideoSDPipeline`). `rng` samples the VAE posterior (mode without)."""
  b = _check_condition(models, condition, uncond_condition)
  check_unit_images(videos, "videos", ndim=5)
  if videos.shape[0] != b:
    raise ValueError(f"videos batch {videos.shape[0]} != condition batch {b}")
  _check_noise(models, noise, b, frames=True)
  start = sampling.start_index_for_strength(num_inference_steps, strength)
  state = S.make_state(models.scheduler, num_inference_steps)
  bt = videos.shape[:2]
  k_enc, k_sample = (None, None) if rng is None else jax.random.split(rng)
  x0 = _encode_pm1(models, params, videos.reshape((-1,) + videos.shape[2:]) * 2.0 - 1.0, k_enc)
  x0 = x0.reshape(bt + x0.shape[1:])
  if x0.shape != noise.shape:
    raise ValueError(f"noise must have the video latents' shape {tuple(x0.shape)}, got "
                     f"{tuple(noise.shape)}")
  latents = S.add_noise_at_index(state, x0, noise, start)
  latents = _common(models, params, state, latents, condition, uncond_condition, guidance_scale,
                    {}, None, None, k_sample, progress, start_index=start)
  return {"latents": latents, "videos": decode_latents(models, params, latents)}


def image_to_video(models: DiffusionModels, params, condition: jax.Array,
                   uncond_condition: jax.Array | None = None, *, images: jax.Array,
                   noise: jax.Array, clip_images: jax.Array | None = None, fps: int = 16,
                   rng: jax.Array | None = None, num_inference_steps: int = 50,
                   guidance_scale: float = 9.0, progress=False) -> dict[str, jax.Array]:
  """First frame `images` `[B, H, W, 3]` -> video (diffusers' `I2VGenXLPipeline`).

  The image conditions the I2VGen-XL UNet three ways: its latents (first frame; the other
  frames carry the constant (i + 1) / (T - 1)), its CLIP image embedding (zeros in the
  unconditional branch) and the target `fps`. `clip_images` is the image at the image
  encoder's resolution (default: `images` resized bilinearly, which is not PIL's exact
  resampling; pass your own for diffusers parity). `rng` samples the VAE posterior.
  """
  b = _check_condition(models, condition, uncond_condition)
  check_unit_images(images, "images")
  _check_noise(models, noise, b, frames=True)
  if models.image_encoder is None:
    raise ValueError("image_to_video needs models.image_encoder (CLIP vision with projection)")
  t = noise.shape[1]
  first = _encode_pm1(models, params, images * 2.0 - 1.0, rng)
  if first.shape[1:] != noise.shape[2:]:
    raise ValueError(f"images give latents {tuple(first.shape[1:])} per frame, but noise has "
                     f"{tuple(noise.shape[2:])}")
  image_latents = image_latents_for_frames(first, t)
  image_embeddings = image_embeds(models, params, images if clip_images is None else clip_images)
  extras = {"fps": jnp.full((b,), fps, jnp.float32), "image_latents": image_latents,
            "image_embeddings": image_embeddings}
  uncond_extras = dict(extras, image_embeddings=jnp.zeros_like(image_embeddings))
  state = S.make_state(models.scheduler, num_inference_steps)
  latents = _common(models, params, state, sampling.initial_latents(state, noise), condition,
                    uncond_condition, guidance_scale, extras, uncond_extras, None, None,
                    progress)
  return {"latents": latents, "videos": decode_latents(models, params, latents)}


_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def image_embeds(models: DiffusionModels, params, images: jax.Array) -> jax.Array:
  """`[B, H, W, 3]` in [0, 1] -> `[B, 1, D]` projected CLIP image embeddings."""
  cfg = models.image_encoder.config
  size = cfg.image_size
  if images.shape[1:3] != (size, size):
    images = jax.image.resize(images, (images.shape[0], size, size, 3), "bilinear")
  x = (images - jnp.asarray(_CLIP_MEAN)) / jnp.asarray(_CLIP_STD)
  out = _apply(models.image_encoder, params["image_encoder"], x)
  return out.image_embeds[:, None, :]
