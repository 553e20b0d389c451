"""What VITRON's pixel-space diffusion backends at PixelWorld size share: the image generator
(`train.generator`) and the image editor (`train.editor`).

`PixelDiffusion(fields, image_size, tokenizer)` checks its `model.<what>` fields against the
subclass's `DEFAULTS` and builds:

* a UNet in pixel space (`DiffusionModels.vae = None`; `pixel_patch` x `pixel_patch` pixels
  per UNet position): `channels` are the block widths, the first `conv_blocks` blocks are
  convolutional, the others cross-attend to the condition (`layers_per_block`, `heads`);
  subclasses add their inputs (`_unet_fields`: GLIGEN grounding, inpainting channels) and,
  with a `layout` field, the grounding drawn as input channels (`_layout_channels`);
* its own CLIP text encoder (`text_width`, `text_layers`, `text_len`): the condition is the
  command's states `[text_len, text_width]`. The vocabulary is the PixelWorld tokenizer's
  plus one end-of-text id (the largest, as CLIP's); prompts are padded with it (as Stable
  Diffusion's tokenizer pads), so the empty prompt `[bos, eot, ...]` is the unconditional
  context;
* the schedule (`prediction`: the UNet's target; DDPM's linear betas, DDIM sampling with
  `steps` and classifier-free `guidance`, which needs `condition_dropout` > 0 in training),
  `min_snr_gamma` (Min-SNR-gamma loss weights; 0: plain MSE) and `object_weight` (how much the
  pixels of the objects weigh in the denoising loss against the rest).

PixelWorld images are 32 px of flat colour: there is nothing for a VAE to compress, and no VAE
to pretrain.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from vitron_jax.backends.diffusion import layout as L
from vitron_jax.backends.diffusion import pipelines as P
from vitron_jax.backends.diffusion import schedulers as S
from vitron_jax.backends.diffusion.backend import DiffusionBackendConfig
from vitron_jax.backends.diffusion.unet2d import UNet2DConditionConfig, UNet2DConditionModel
from vitron_jax.models.clip import CLIPTextModel
from vitron_jax.models.clip_config import CLIPTextConfig
from vitron_jax.protocol import invocation as I

#: the fields every pixel-space backend takes (values: the defaults)
COMMON: dict[str, Any] = {
    "pixel_patch": 2, "channels": (32, 64, 64), "conv_blocks": 1, "layers_per_block": 1,
    "heads": 4, "text_width": 32, "text_layers": 2, "text_len": 32,
    "steps": 25, "guidance": 1.5, "condition_dropout": 0.1,
    "object_weight": 5.0, "prediction": "sample", "min_snr_gamma": 0.0,
}


def scheduler(prediction: str) -> S.SchedulerConfig:
  """The training schedule (DDPM's linear betas) sampled with DDIM; `prediction` is the
  UNet's target ("sample": the clean image, "v_prediction", "epsilon")."""
  return S.SchedulerConfig(kind="ddim", beta_schedule="linear", beta_start=1e-4,
                           beta_end=0.02, clip_sample=True, set_alpha_to_one=True,
                           prediction_type=prediction)


def checked_fields(fields: Any, defaults: Mapping[str, Any], what: str) -> dict[str, Any]:
  """`model.<what>` fields over their defaults; unknown names and fewer than two UNet blocks
  are refused."""
  f = dict(fields or {})
  unknown = sorted(set(f) - set(defaults) - {"image_size"})
  if unknown:
    raise ValueError(f"{what} config: unknown fields {unknown}; expected {sorted(defaults)}")
  out = {**defaults, **f}
  out["channels"] = tuple(int(c) for c in out["channels"])
  if len(out["channels"]) < 2:
    raise ValueError(f"{what} channels must list at least two blocks, got {out['channels']}")
  return out


class PixelDiffusion:
  """See the module docstring. Subclasses set `module`, `what` (the config field), `DEFAULTS`,
  `backend_cls`, `spec()` (their example fields), `example`, `backend_batch`, and may extend
  `_unet_fields`, `_backend_fields`, `_unet_inputs`, `_unet_params`. `training` False turns
  condition dropout off (the frozen backend inside the VITRON step sees every condition)."""

  module = what = ""
  output = "images"  # the key of what the backend's `run` makes
  DEFAULTS: dict[str, Any] = COMMON
  backend_cls: Any = None

  def __init__(self, fields: Any, image_size: int, tokenizer: Any, *, training: bool = True):
    f = self.fields = checked_fields(fields, self.DEFAULTS, self.what)
    if int(f.get("image_size", image_size)) != image_size:
      raise ValueError(f"{self.what} image_size {f['image_size']} must match the PixelWorld "
                       f"image_size {image_size}")
    ch, tw, pp = f["channels"], int(f["text_width"]), int(f["pixel_patch"])
    if image_size % (pp * 2 ** (len(ch) - 1)):
      raise ValueError(f"image_size {image_size} must be divisible by pixel_patch {pp} x "
                       f"2^{len(ch) - 1} ({self.what} UNet channels {ch})")
    self.latent_size = image_size // pp
    self.image_size, self.tokenizer = image_size, tokenizer
    self.text_len = int(f["text_len"])
    self.bos, self.pad = int(tokenizer.bos_token_id), int(tokenizer.pad_token_id)
    self.eot = len(tokenizer)  # one id past the PixelWorld vocabulary
    n, nc = len(ch), int(f["conv_blocks"])
    if not 0 <= nc < n:
      raise ValueError(f"{self.what} conv_blocks must be in [0, {n}) for channels {ch}, got "
                       f"{nc}")
    unet = self._unet(ch, nc, 3 * pp * pp, tw)
    text = CLIPTextConfig(vocab_size=self.eot + 1, hidden_size=tw, intermediate_size=4 * tw,
                          num_hidden_layers=int(f["text_layers"]),
                          num_attention_heads=max(1, tw // 8),
                          max_position_embeddings=self.text_len, projection_dim=tw,
                          pad_token_id=self.eot, bos_token_id=self.bos, eos_token_id=self.eot)
    self.models = P.DiffusionModels(unet=unet, vae=None,
                                    scheduler=scheduler(str(f["prediction"])),
                                    text_encoder=CLIPTextModel(text), pixel_patch=pp,
                                    grounding_layout=self._grounding_layout())
    self.backend = self.backend_cls(self.models, DiffusionBackendConfig(
        num_inference_steps=int(f["steps"]), guidance_scale=float(f["guidance"]),
        height=image_size, width=image_size,
        condition_dropout=float(f["condition_dropout"]) if training else 0.0,
        min_snr_gamma=float(f["min_snr_gamma"]) or None, **self._backend_fields()))

  def _unet(self, channels: tuple[int, ...], conv_blocks: int, latent_channels: int,
            text_width: int) -> Any:
    """The UNet (a 2-D one here; the video backends build a 3-D one): the first
    `conv_blocks` blocks convolutional, the others cross-attending to the condition."""
    n, f = len(channels), self.fields
    unet = UNet2DConditionConfig(
        sample_size=self.latent_size, out_channels=latent_channels, block_out_channels=channels,
        down_block_types=("DownBlock2D",) * conv_blocks + ("CrossAttnDownBlock2D",) * (
            n - conv_blocks),
        up_block_types=("CrossAttnUpBlock2D",) * (n - conv_blocks) + ("UpBlock2D",) * conv_blocks,
        layers_per_block=int(f["layers_per_block"]), norm_num_groups=8,
        cross_attention_dim=text_width, attention_head_dim=int(f["heads"]),
        **self._unet_fields(latent_channels))
    unet.validate()
    return UNet2DConditionModel(unet)

  def _unet_sample(self) -> jax.Array:
    """A zero UNet input of one example (`init`): `[1, s, s, in_channels]`."""
    s = self.latent_size
    return jnp.zeros((1, s, s, self.models.unet.config.in_channels))

  def _unet_fields(self, latent_channels: int) -> dict[str, Any]:
    """The UNet's input channels and any further fields (subclasses)."""
    return {"in_channels": latent_channels}

  def _backend_fields(self) -> dict[str, Any]:
    return {}

  def _grounding_layout(self) -> bool:
    """Whether the UNet takes its grounding as input channels too (`DiffusionModels`): the
    subclass's `layout` field, where it has one."""
    return bool(self.fields.get("layout", False))

  def _layout_channels(self) -> int:
    """The UNet input channels of the layout (0 without one)."""
    if not self._grounding_layout():
      return 0
    return L.layout_channels(self.fields["text_width"], self.fields["pixel_patch"])

  # -- parameters ----------------------------------------------------------------------------
  def _unet_inputs(self) -> dict[str, Any]:
    """Keyword inputs of the UNet's init beyond sample, time and context (subclasses)."""
    return {}

  def _unet_params(self, params):
    """The UNet's initial parameters after `init` (subclasses may set some)."""
    return params

  def init(self, rng: jax.Array):
    r1, r2 = jax.random.split(rng)
    d = self.models.unet.config.cross_attention_dim
    unet = self.models.unet.init(r1, self._unet_sample(), jnp.zeros((1,)),
                                 jnp.zeros((1, self.text_len, d)),
                                 **self._unet_inputs())["params"]
    text = self.models.text_encoder.init(
        r2, jnp.full((1, self.text_len), self.eot, jnp.int32))["params"]
    return {"unet": self._unet_params(unet), "text_encoder": text}

  # -- inputs ------------------------------------------------------------------------------
  def _ids(self, text: str, length: int, what: str) -> np.ndarray:
    ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids or len(ids) > length - 2:
      raise ValueError(f"{what} {text!r} has {len(ids)} tokens; the {self.what}'s text encoder "
                       f"takes 1 to {length - 2} (text_len / phrase_len minus bos and eot)")
    out = np.full((length,), self.eot, np.int32)
    out[0], out[1:1 + len(ids)] = self.bos, ids
    return out

  @staticmethod
  def _box_slots(boxes, k: int, limit: str) -> tuple[np.ndarray, np.ndarray]:
    """An invocation's normalised boxes -> (boxes `[k, 4]` clipped to [0, 1], zero-padded;
    their mask `[k]`); more than `k` is refused (`limit` says which field caps them)."""
    if len(boxes) > k:
      raise ValueError(f"the invocation has {len(boxes)} boxes; {limit}={k}")
    bx, pm = np.zeros((k, 4), np.float32), np.zeros((k,), np.float32)
    if len(boxes):
      bx[:len(boxes)] = np.clip(np.asarray(boxes, np.float32).reshape(-1, 4), 0.0, 1.0)
      pm[:len(boxes)] = 1.0
    return bx, pm

  def command_ids(self, command: str) -> np.ndarray:
    return self._ids(command, self.text_len, "command")

  def condition(self, params, command_ids: jax.Array) -> jax.Array:
    """The native condition `[B, text_len, text_width]` of commands `[B, text_len]`."""
    return self.backend.native_condition(params, command_ids)

  def spec(self) -> dict[str, tuple[tuple[int, ...], Any]]:
    """{example field: (shape, dtype)}; "images" and "pixel_weights" are training's only."""
    raise NotImplementedError

  def example(self, sample: Mapping[str, Any]) -> dict[str, np.ndarray]:
    raise NotImplementedError

  def _expected(self, sample: Mapping[str, Any]) -> tuple[I.Invocation, np.ndarray]:
    """A training sample's expected invocation of this backend and its target image (float
    [0, 1]); ValueError when the answer holds none or the image is not the backend's size."""
    inv = I.find_invocation(sample["conversations"][-1]["value"])
    if not inv or inv.module != self.module:
      raise ValueError(f"sample {sample.get('id')!r}: the expected answer holds no "
                       f"{self.module} invocation ({inv})")
    image = np.asarray(sample["targets"]["image"])
    s = self.image_size
    if image.shape != (s, s, 3):
      raise ValueError(f"sample {sample.get('id')!r}: target image {image.shape}, expected "
                       f"({s}, {s}, 3)")
    return inv, image.astype(np.float32) / 255.0

  @staticmethod
  def backend_batch(batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    raise NotImplementedError

  def sample_images(self, params, batch: Mapping[str, jax.Array], condition: jax.Array,
                    rng: jax.Array) -> jax.Array:
    """Images `[B, H, W, 3]` (videos `[B, T, H, W, 3]` for the video backends, whose
    `output` is "videos") in [0, 1] from conditions (jit-able)."""
    return self.backend.run(params, self.backend_batch(batch), condition, rng)[self.output]
