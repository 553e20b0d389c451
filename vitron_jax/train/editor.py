"""VITRON's image editing backend at PixelWorld size: an inpainting UNet in pixel space with its
own CLIP text encoder (`train.pixel_diffusion`), and the inputs it takes from an invocation.

`Editor(fields, image_size, tokenizer)` builds the `EditImageBackend` (module `edit_image`)
from `model.editor` fields (`pixel_diffusion.COMMON`). The UNet is Stable Diffusion
inpainting's: its input is the noisy image, the repaint mask and the masked source image
(`in_channels = 2c + 1`), so it sees what it must keep; with `source_channels` (default) the
whole source image follows (InstructPix2Pix's channels, `3c + 1`), so it also sees what it
repaints: a recolour keeps the object's shape, a move finds the object it moves (the masked
image hides both; `pipelines.inpaint_channels`). With `layout` (default) the
command's pooled text embedding is also drawn in the invocation's boxes and appended to the
input (`backends.diffusion.layout`, as the generator draws its phrases; up to `max_boxes`
boxes), so what to draw where is a local input, not only cross-attention.

The region to repaint is where the invocation points: the union of its boxes, grown by 1 px
(`edit_region`). PixelWorld's edit invocations box every object the edit touches (recolour,
remove: the object; add: where it goes; move: where it was and where it goes), so the changed
pixels always lie inside (checked in tests/test_editor.py). The edited image is the source
outside that region, exactly: the UNet repaints whole `pixel_patch` cells, and the pixels of
a cell outside the region are put back (`sample_images`). An edit invocation without a box is
refused: nothing says where to edit.

Training (stage task `pixelworld_editor`, `train.editor_task`): the denoising loss on the
edited image (the sample's target), conditioned on the command's text states, the region's
pixels weighted `object_weight` above the rest.
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vitron_jax.backends.diffusion.backend import EditImageBackend
from vitron_jax.eval.pixels import region_mask
from vitron_jax.protocol import invocation as I
from vitron_jax.train.pixel_diffusion import COMMON, PixelDiffusion

MODULE = "edit_image"

DEFAULTS: dict[str, Any] = {**COMMON, "layout": True, "max_boxes": 4, "source_channels": True}


#: PixelWorld's edit commands that name an object of the source image, by operation; the
#: object's phrase is "the [size] [colour] shape|object|one"
_EDITED_OBJECT = (("recolour", re.compile(r"^make (the (?:\w+ )*?\w+) \w+$")),
                  ("remove", re.compile(r"^remove (the (?:\w+ )*\w+)$")),
                  ("move", re.compile(r"^move (the (?:\w+ )*?\w+)(?: to .+)?$")))


def edited_object(command: str) -> tuple[str, str] | None:
  """(operation, the phrase naming the source image's object it changes) of a PixelWorld edit
  command, or None (an "add", or a command outside the grammar): "make the red circle blue" ->
  ("recolour", "the red circle"); "remove X" -> ("remove", X); "move X [to the top left]" ->
  ("move", X). The object's box is the invocation's first (a move's second is where it goes)."""
  text = " ".join(str(command).split())
  for op, pattern in _EDITED_OBJECT:
    m = pattern.match(text)
    if m:
      return op, m.group(1)
  return None


def edit_region(boxes: Sequence[Sequence[float]], size: int) -> np.ndarray:
  """bool `[size, size]`: the union of normalised boxes, each grown by 1 px."""
  if not boxes:
    raise ValueError("the edit invocation has no box: the editor repaints the boxes it names")
  m = np.zeros((size, size), bool)
  for b in boxes:
    px = np.asarray(I.denormalize_box(b, size, size), np.float64)
    m |= region_mask(px + np.array([-1.0, -1.0, 1.0, 1.0]), size, size)
  return m


class Editor(PixelDiffusion):
  """See the module docstring."""

  module, what, DEFAULTS, backend_cls = MODULE, "editor", DEFAULTS, EditImageBackend

  def __init__(self, fields: Any, image_size: int, tokenizer: Any, *, training: bool = True):
    super().__init__(fields, image_size, tokenizer, training=training)
    self.max_boxes = int(self.fields["max_boxes"])

  def _unet_fields(self, latent_channels: int) -> dict[str, Any]:
    sources = 2 if self.fields["source_channels"] else 1  # masked (and whole) source
    return {"in_channels": (1 + sources) * latent_channels + 1 + self._layout_channels()}

  @property
  def concat_description(self) -> str:
    """What the UNet's channels after the noisy latents hold (the export's `editor.json`)."""
    out = "the repaint mask (one channel), the masked source's latents"
    return out + (", the whole source's latents" if self.fields["source_channels"] else "")

  # -- inputs ------------------------------------------------------------------------------
  def spec(self) -> dict[str, tuple[tuple[int, ...], Any]]:
    s, k = self.image_size, self.max_boxes
    return {"images": ((s, s, 3), np.float32), "source_images": ((s, s, 3), np.float32),
            "masks": ((s, s), np.float32), "command_ids": ((self.text_len,), np.int32),
            "boxes": ((k, 4), np.float32), "phrase_ids": ((k, self.text_len), np.int32),
            "phrase_mask": ((k,), np.float32), "pixel_weights": ((s, s), np.float32)}

  def inputs(self, command: str, boxes: Sequence[Sequence[float]], source: Any
             ) -> dict[str, np.ndarray]:
    """An invocation's command and normalised boxes, and the image to edit (uint8 `[H, W, 3]`)
    -> {"command_ids", "source_images" float [H, W, 3] in [0, 1], "masks" float [H, W], and
    the layout's "boxes" [K, 4], "phrase_ids" [K, text_len] (the command, once per box) and
    "phrase_mask" [K]} (raises ValueError for what the editor cannot take)."""
    s, k = self.image_size, self.max_boxes
    src = np.asarray(source)
    if src.shape != (s, s, 3) or src.dtype != np.uint8:
      raise ValueError(f"the image to edit must be uint8 ({s}, {s}, 3), got {src.dtype} "
                       f"{src.shape}")
    masks = edit_region(boxes, s).astype(np.float32)
    bx, pm = self._box_slots(boxes, k, "the editor takes at most max_boxes")
    ids = self.command_ids(command)
    return {"command_ids": ids, "source_images": src.astype(np.float32) / 255.0,
            "masks": masks, "boxes": bx, "phrase_ids": np.tile(ids, (k, 1)), "phrase_mask": pm}

  def example(self, sample: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """An image_edit sample -> the edited image (float [0, 1]), the expected invocation's
    inputs and the loss weights of the pixels."""
    inv, image = self._expected(sample)
    out = self.inputs(inv.command, inv.boxes, sample["targets"]["source_image"])
    out["images"] = image
    out["pixel_weights"] = np.where(out["masks"] > 0, np.float32(self.fields["object_weight"]),
                                    np.float32(1.0))
    return out

  # -- the backend's batch -----------------------------------------------------------------
  @staticmethod
  def backend_batch(batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """Example fields -> the backend's loss inputs ("images": the target) or, without a
    target, its run inputs ("images": the image to edit)."""
    out = {k: batch[k] for k in ("masks", "boxes", "phrase_ids", "phrase_mask")}
    if "images" in batch:
      out.update(images=batch["images"], source_images=batch["source_images"])
    else:
      out["images"] = batch["source_images"]
    for k in ("row_weights", "pixel_weights"):
      if k in batch:
        out[k] = batch[k]
    return out

  def sample_images(self, params, batch: Mapping[str, jax.Array], condition: jax.Array,
                    rng: jax.Array) -> jax.Array:
    """Edited images `[B, H, W, 3]` in [0, 1]: repainted inside the region, the source's
    pixels outside it (jit-able)."""
    made = super().sample_images(params, {k: v for k, v in batch.items() if k != "images"},
                                 condition, rng)
    repaint = jnp.asarray(batch["masks"])[..., None] > 0
    return jnp.where(repaint, made, jnp.asarray(batch["source_images"]))
