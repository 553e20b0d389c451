"""VITRON's image generation backend at PixelWorld size: a GLIGEN-grounded pixel-space UNet
with its own CLIP text encoder (`train.pixel_diffusion`), and the inputs it takes from an
invocation.

`Generator(fields, image_size, tokenizer)` builds the `GenImageBackend` (module
`generate_image`) from `model.generator`-style fields: those of `pixel_diffusion.COMMON`, plus

* `phrase_len`, `max_phrases` (grounded phrases, GLIGEN's `max_objs`), `gligen_beta` (the
  fraction of the sampling steps with grounding on);
* `gate_init`: the initial value of GLIGEN's gates (`alpha_attn`, `alpha_dense`; the layer adds
  `tanh(alpha) *` its output). GLIGEN starts them at 0 so that a pretrained UNet is untouched
  while the new layers learn; trained from scratch, closed gates stay closed (the layers behind
  them get no gradient): |alpha| < 0.03 after 8000 steps, and no object landed in its box
  (BUILD_NOTES.md). 1.0 opens them to tanh(1) = 0.76;
* `layout`: the boxes and their phrase embeddings are also drawn on the grid and appended to
  the UNet's input (`backends.diffusion.layout`; `in_channels = 3 p^2 + text_width + p^2`).

The UNet predicts the clean image by default (`prediction="sample"`): with epsilon prediction
the short PixelWorld stages left the small noise levels unlearned and sampling ended in noise
(BUILD_NOTES.md). `object_weight`: the pixels inside the objects' boxes weigh this much above
the background's (objects are 5-10% of a PixelWorld image, and the noisy / striped backgrounds
otherwise dominate the loss).

Grounding (GLIGEN): an invocation with boxes names one phrase per box, in order
(`phrases_of(command, n)`); without boxes the phrase slots are empty (mask 0).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vitron_jax.backends.diffusion.backend import GenImageBackend
from vitron_jax.backends.diffusion.gligen import GligenInputs
from vitron_jax.data.pixelworld.sample import box_mask
from vitron_jax.train.pixel_diffusion import COMMON, PixelDiffusion

MODULE = "generate_image"

DEFAULTS: dict[str, Any] = {**COMMON, "phrase_len": 6, "max_phrases": 4, "gligen_beta": 1.0,
                            "gate_init": 1.0, "layout": True}


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


class Generator(PixelDiffusion):
  """See the module docstring."""

  module, what, DEFAULTS, backend_cls = MODULE, "generator", DEFAULTS, GenImageBackend

  def __init__(self, fields: Any, image_size: int, tokenizer: Any, *, training: bool = True):
    super().__init__(fields, image_size, tokenizer, training=training)
    self.phrase_len = int(self.fields["phrase_len"])
    self.max_phrases = int(self.fields["max_phrases"])

  def _unet_fields(self, latent_channels: int) -> dict[str, Any]:
    return {"in_channels": latent_channels + self._layout_channels(), "attention_type": "gated",
            "gligen_max_objs": int(self.fields["max_phrases"])}

  def _backend_fields(self) -> dict[str, Any]:
    return {"gligen_beta": float(self.fields["gligen_beta"])}

  # -- parameters ----------------------------------------------------------------------------
  def _unet_inputs(self) -> dict[str, Any]:
    k, d = self.max_phrases, self.models.unet.config.cross_attention_dim
    return {"gligen": GligenInputs(jnp.zeros((1, k, 4)), jnp.zeros((1, k, d)),
                                   jnp.zeros((1, k)))}

  def _unet_params(self, params):
    gate = float(self.fields["gate_init"])

    def open_gate(path, x):
      name = jax.tree_util.keystr(path)
      return jnp.full_like(x, gate) if "alpha_attn" in name or "alpha_dense" in name else x
    return jax.tree_util.tree_map_with_path(open_gate, params)

  # -- inputs ------------------------------------------------------------------------------
  def spec(self) -> dict[str, tuple[tuple[int, ...], Any]]:
    s, k = self.image_size, self.max_phrases
    return {"images": ((s, s, 3), np.float32), "command_ids": ((self.text_len,), np.int32),
            "phrase_ids": ((k, self.phrase_len), np.int32), "boxes": ((k, 4), np.float32),
            "phrase_mask": ((k,), np.float32), "pixel_weights": ((s, s), np.float32)}

  def inputs(self, command: str, boxes: Sequence[Sequence[float]] = ()) -> dict[str, np.ndarray]:
    """An invocation's command and normalised boxes -> {"command_ids", "phrase_ids" [P, Lp],
    "boxes" [P, 4], "phrase_mask" [P]} (raises ValueError for what the generator cannot take).
    """
    k = self.max_phrases
    pid = np.full((k, self.phrase_len), self.eot, np.int32)
    bx, pm = self._box_slots(boxes, k, "the generator grounds at most max_phrases")
    if boxes:
      for j, p in enumerate(phrases_of(command, len(boxes))):
        pid[j] = self._ids(p, self.phrase_len, "phrase")
    return {"command_ids": self.command_ids(command), "phrase_ids": pid, "boxes": bx,
            "phrase_mask": pm}

  def example(self, sample: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A text_to_image sample -> the target image (float [0, 1]) and the expected
    invocation's inputs."""
    inv, image = self._expected(sample)
    out = self.inputs(inv.command, inv.boxes)
    out["images"] = image
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
