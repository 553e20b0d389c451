"""VITRON's image generation backend at PixelWorld size: a GLIGEN-grounded pixel-space UNet
with its own CLIP text encoder, and the inputs it takes from an invocation.

`Generator(fields, image_size, tokenizer)` builds the `GenImageBackend` (module
`generate_image`) from `model.generator`-style fields:

* `pixel_patch`, `channels` (UNet block widths; the first `conv_blocks` blocks are
  convolutional, the others cross-attend and carry GLIGEN's gated self-attention),
  `layers_per_block`, `heads`;
* `text_width`, `text_layers`, `text_len` (the CLIP text encoder: its width is the UNet's
  cross-attention width, `text_len` its positions, so the condition is `[text_len,
  text_width]`), `phrase_len`, `max_phrases` (grounded phrases, GLIGEN's `max_objs`);
* `steps`, `guidance`, `gligen_beta` (DDIM sampling; classifier-free guidance needs
  `condition_dropout` > 0 in training);
* `object_weight`: the denoising loss weighs the pixels inside the objects' boxes this much
  above the background's (objects are 5-10% of a PixelWorld image, and the noisy / striped
  backgrounds otherwise dominate the loss).
* `prediction` (the UNet's target: "sample", the clean image; "v_prediction"; "epsilon") and
  `min_snr_gamma` (Min-SNR-gamma loss weights; 0: plain MSE).
* `gate_init`: the initial value of GLIGEN's gates (`alpha_attn`, `alpha_dense`; the layer adds
  `tanh(alpha) *` its output). GLIGEN starts them at 0 so that a pretrained UNet is untouched
  while the new layers learn; trained from scratch, closed gates stay closed (the layers behind
  them get no gradient): |alpha| < 0.03 after 8000 steps, and no object landed in its box
  (BUILD_NOTES.md). 1.0 opens them to tanh(1) = 0.76.

Pixel space (`DiffusionModels.vae = None`, `pixel_patch` x `pixel_patch` pixels per UNet
position): PixelWorld images are 32 px of flat colour, so there is nothing for a VAE to
compress and no VAE to pretrain (the PixelWorld configs use 4-px patches: an 8 x 8 grid). The
UNet predicts the clean image (`prediction_type="sample"`; DDPM's linear betas, DDIM
sampling): with epsilon prediction the short PixelWorld stages left the small noise levels
unlearned and sampling ended in noise (BUILD_NOTES.md). The text encoder's vocabulary is
the PixelWorld tokenizer's plus one end-of-text id (the largest, as CLIP's): the CLIP pooler
takes the hidden state at the first end-of-text token, and prompts are padded with it (as
Stable Diffusion's tokenizer pads), so the empty prompt `[bos, eot, ...]` is the
unconditional context.

Grounding (GLIGEN): an invocation with boxes names one phrase per box, in order
(`phrases_of(command, n)`); without boxes the phrase slots are empty (mask 0).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vitron_jax.backends.diffusion import pipelines as P
from vitron_jax.backends.diffusion import schedulers as S
from vitron_jax.backends.diffusion.backend import DiffusionBackendConfig, GenImageBackend
from vitron_jax.backends.diffusion.gligen import GligenInputs
from vitron_jax.backends.diffusion.unet2d import UNet2DConditionConfig, UNet2DConditionModel
from vitron_jax.data.pixelworld.sample import box_mask
from vitron_jax.models.clip import CLIPTextModel
from vitron_jax.models.clip_config import CLIPTextConfig
from vitron_jax.protocol import invocation as I

MODULE = "generate_image"

DEFAULTS: dict[str, Any] = {
    "pixel_patch": 2, "channels": (32, 64, 64), "conv_blocks": 1, "layers_per_block": 1,
    "heads": 4, "text_width": 32, "text_layers": 2, "text_len": 32, "phrase_len": 6,
    "max_phrases": 4,
    "steps": 25, "guidance": 1.5, "gligen_beta": 1.0, "condition_dropout": 0.1,
    "object_weight": 5.0, "prediction": "sample", "min_snr_gamma": 0.0, "gate_init": 1.0,
}



def scheduler(prediction: str) -> S.SchedulerConfig:
  """The training schedule (DDPM's linear betas) sampled with DDIM; `prediction` is the
  UNet's target ("sample": the clean image, "v_prediction", "epsilon")."""
  return S.SchedulerConfig(kind="ddim", beta_schedule="linear", beta_start=1e-4,
                           beta_end=0.02, clip_sample=True, set_alpha_to_one=True,
                           prediction_type=prediction)


def generator_fields(fields: Any) -> dict[str, Any]:
  f = dict(fields or {})
  unknown = sorted(set(f) - set(DEFAULTS) - {"image_size"})
  if unknown:
    raise ValueError(f"generator config: unknown fields {unknown}; expected "
                     f"{sorted(DEFAULTS)}")
  out = {**DEFAULTS, **f}
  out["channels"] = tuple(int(c) for c in out["channels"])
  if len(out["channels"]) < 2:
    raise ValueError(f"generator channels must list at least two blocks, got "
                     f"{out['channels']}")
  return out


def phrases_of(command: str, n: int) -> list[str]:
  """The `n` object phrases of a grounded generation command "p1, p2 and p3 on a grey
  background" (PixelWorld's grammar: phrases never hold commas or "and")."""
  body = command.strip()
  cut = body.rfind(" on ")
  if cut > 0 and body.endswith("background"):
    body = body[:cut]
  parts = [p.strip() for chunk in body.split(", ") for p in chunk.split(" and ")]
  parts = [p for p in parts if p]
  if len(parts) != n:
    raise ValueError(f"command {command!r} names {len(parts)} phrases but the invocation has "
                     f"{n} boxes")
  return parts


class Generator:
  """See the module docstring. `training` False turns condition dropout off (the frozen
  backend inside the VITRON step sees every condition)."""

  def __init__(self, fields: Any, image_size: int, tokenizer: Any, *, training: bool = True):
    f = self.fields = generator_fields(fields)
    if int(f.get("image_size", image_size)) != image_size:
      raise ValueError(f"generator image_size {f['image_size']} must match the PixelWorld "
                       f"image_size {image_size}")
    ch, tw, pp = f["channels"], int(f["text_width"]), int(f["pixel_patch"])
    if image_size % (pp * 2 ** (len(ch) - 1)):
      raise ValueError(f"image_size {image_size} must be divisible by pixel_patch {pp} x "
                       f"2^{len(ch) - 1} (UNet channels {ch})")
    self.latent_size = image_size // pp
    self.image_size, self.tokenizer = image_size, tokenizer
    self.text_len, self.phrase_len = int(f["text_len"]), int(f["phrase_len"])
    self.max_phrases = int(f["max_phrases"])
    self.bos, self.pad = int(tokenizer.bos_token_id), int(tokenizer.pad_token_id)
    self.eot = len(tokenizer)  # one id past the PixelWorld vocabulary
    n, nc = len(ch), int(f["conv_blocks"])
    if not 0 <= nc < n:
      raise ValueError(f"generator conv_blocks must be in [0, {n}) for channels {ch}, got {nc}")
    unet = UNet2DConditionConfig(
        sample_size=self.latent_size, in_channels=3 * pp * pp, out_channels=3 * pp * pp,
        block_out_channels=ch,
        down_block_types=("DownBlock2D",) * nc + ("CrossAttnDownBlock2D",) * (n - nc),
        up_block_types=("CrossAttnUpBlock2D",) * (n - nc) + ("UpBlock2D",) * nc,
        layers_per_block=int(f["layers_per_block"]), norm_num_groups=8,
        cross_attention_dim=tw, attention_head_dim=int(f["heads"]), attention_type="gated",
        gligen_max_objs=self.max_phrases)
    unet.validate()
    text = CLIPTextConfig(vocab_size=self.eot + 1, hidden_size=tw, intermediate_size=4 * tw,
                          num_hidden_layers=int(f["text_layers"]),
                          num_attention_heads=max(1, tw // 8),
                          max_position_embeddings=self.text_len, projection_dim=tw,
                          pad_token_id=self.eot, bos_token_id=self.bos, eos_token_id=self.eot)
    self.models = P.DiffusionModels(unet=UNet2DConditionModel(unet), vae=None,
                                    scheduler=scheduler(str(f["prediction"])),
                                    text_encoder=CLIPTextModel(text), pixel_patch=pp)
    self.backend = GenImageBackend(self.models, DiffusionBackendConfig(
        num_inference_steps=int(f["steps"]), guidance_scale=float(f["guidance"]),
        height=image_size, width=image_size, gligen_beta=float(f["gligen_beta"]),
        condition_dropout=float(f["condition_dropout"]) if training else 0.0,
        min_snr_gamma=float(f["min_snr_gamma"]) or None))

  # -- parameters ----------------------------------------------------------------------------
  def init(self, rng: jax.Array):
    r1, r2 = jax.random.split(rng)
    s, d, k = self.latent_size, self.models.unet.config.cross_attention_dim, self.max_phrases
    c = self.models.latent_channels
    g = GligenInputs(jnp.zeros((1, k, 4)), jnp.zeros((1, k, d)), jnp.zeros((1, k)))
    unet = self.models.unet.init(r1, jnp.zeros((1, s, s, c)), jnp.zeros((1,)),
                                 jnp.zeros((1, self.text_len, d)), gligen=g)["params"]
    gate = float(self.fields["gate_init"])

    def open_gate(path, x):
      name = jax.tree_util.keystr(path)
      return jnp.full_like(x, gate) if "alpha_attn" in name or "alpha_dense" in name else x
    unet = jax.tree_util.tree_map_with_path(open_gate, unet)
    text = self.models.text_encoder.init(
        r2, jnp.full((1, self.text_len), self.eot, jnp.int32))["params"]
    return {"unet": unet, "text_encoder": text}

  # -- inputs ------------------------------------------------------------------------------
  def _ids(self, text: str, length: int, what: str) -> np.ndarray:
    ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids or len(ids) > length - 2:
      raise ValueError(f"{what} {text!r} has {len(ids)} tokens; the generator's text encoder "
                       f"takes 1 to {length - 2} (text_len / phrase_len minus bos and eot)")
    out = np.full((length,), self.eot, np.int32)
    out[0], out[1:1 + len(ids)] = self.bos, ids
    return out

  def command_ids(self, command: str) -> np.ndarray:
    return self._ids(command, self.text_len, "command")

  def condition(self, params, command_ids: jax.Array) -> jax.Array:
    """The native condition `[B, text_len, text_width]` of commands `[B, text_len]`."""
    return self.backend.native_condition(params, command_ids)

  def inputs(self, command: str, boxes: Sequence[Sequence[float]] = ()) -> dict[str, np.ndarray]:
    """An invocation's command and normalised boxes -> {"command_ids", "phrase_ids" [P, Lp],
    "boxes" [P, 4], "phrase_mask" [P]} (raises ValueError for what the generator cannot take).
    """
    k = self.max_phrases
    pid = np.full((k, self.phrase_len), self.eot, np.int32)
    bx, pm = np.zeros((k, 4), np.float32), np.zeros((k,), np.float32)
    if boxes:
      if len(boxes) > k:
        raise ValueError(f"the invocation has {len(boxes)} boxes; the generator grounds at "
                         f"most max_phrases={k}")
      for j, (p, b) in enumerate(zip(phrases_of(command, len(boxes)), boxes)):
        pid[j] = self._ids(p, self.phrase_len, "phrase")
        bx[j], pm[j] = np.clip(np.asarray(b, np.float32), 0.0, 1.0), 1.0
    return {"command_ids": self.command_ids(command), "phrase_ids": pid, "boxes": bx,
            "phrase_mask": pm}

  def example(self, sample: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A text_to_image sample -> the target image (float [0, 1]) and the expected
    invocation's inputs."""
    inv = I.find_invocation(sample["conversations"][-1]["value"])
    if not inv or inv.module != MODULE:
      raise ValueError(f"sample {sample.get('id')!r}: the expected answer holds no "
                       f"{MODULE} invocation ({inv})")
    image = np.asarray(sample["targets"]["image"])
    if image.shape != (self.image_size, self.image_size, 3):
      raise ValueError(f"sample {sample.get('id')!r}: target image {image.shape}, expected "
                       f"({self.image_size}, {self.image_size}, 3)")
    out = self.inputs(inv.command, inv.boxes)
    out["images"] = image.astype(np.float32) / 255.0
    objects = np.zeros(image.shape[:2], bool)
    for b in np.asarray(sample["targets"]["boxes"], np.float32).reshape(-1, 4):
      objects |= box_mask(b, objects.shape)
    out["pixel_weights"] = np.where(objects, np.float32(self.fields["object_weight"]),
                                    np.float32(1.0))
    return out

  # -- the backend's batch -----------------------------------------------------------------
  @staticmethod
  def backend_batch(batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """Example fields -> the backend's loss / run inputs (GLIGEN's names)."""
    out = {"boxes": batch["boxes"], "phrase_ids": batch["phrase_ids"],
           "phrase_mask": batch["phrase_mask"]}
    for k in ("images", "row_weights", "pixel_weights"):
      if k in batch:
        out[k] = batch[k]
    return out

  def sample_images(self, params, batch: Mapping[str, jax.Array], condition: jax.Array,
                    rng: jax.Array) -> jax.Array:
    """uint8-ready images `[B, H, W, 3]` in [0, 1] from conditions (jit-able)."""
    return self.backend.run(params, self.backend_batch(batch), condition, rng)["images"]
