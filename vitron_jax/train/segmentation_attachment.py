"""The image segmenter inside the VITRON step (`segment_image`; `train.vitron_backends`).

Pretrained on PixelWorld by the `pixelworld_segmenter` stage (`train.segmenter_task`) and
frozen here. With `model.segmenter` in the config, the VITRON step runs frontend -> LLM ->
hybrid head -> projector -> frozen segmenter -> mask loss in one jit, for the rows of the batch
that invoke segmentation:

* every example carries `segment_image/{pixel_values, boxes, masks, command_ids, valid}`
  (zeros and valid 0 for rows that do not segment; `SegmentationAttachment.example`), and the
  first `task.backend_rows.segment_image` (default 8) valid rows are gathered in jit
  (`train.backend_rows`);
* the condition is what the routing mode builds: the projected signal tokens ("embedding",
  "superlink"), the segmenter's native text condition ("text"), or both ("hybrid");
* the mask loss is the segmenter stage's: the object's mask from its box + the condition and
  from the condition alone (`segmenter_loss`), so the signal tokens must locate the object.

Evaluation (`SegmentationAttachment.score`): for every `ref_seg` sample the free-running answer's
invocation is parsed and the segmenter is run as chat runs it, on the box the LLM wrote and the
condition built from the hidden states at the decoded query slots (plus, `text_mask_iou`, from
that condition alone); row `ref_seg_masks` scores the mask IoU against the exact mask. An
answer with no valid segmentation invocation scores 0. Chance: uniformly random boxes filled
in as masks (`eval.boxes.mask_chance`, the same boxes as `ref_box`'s chance).
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np

from vitron_jax.eval.boxes import mask_chance
from vitron_jax.models.objective import BackendHook
from vitron_jax.models.vitron import Vitron
from vitron_jax.protocol import invocation as I
from vitron_jax.train.backend_rows import RowFields
from vitron_jax.train.segmenter_task import (MODULE, SegmentEncoder, Segmenter, mask_iou_np,
                                             segmenter_loss)

EVAL_ROW = "ref_seg_masks"  # the table row of the masks the segmenter made from the answers

SEG_FIELDS = ("pixel_values", "boxes", "masks", "command_ids")


class SegmentationAttachment(RowFields):
  """The frozen segmenter inside the VITRON step (see the module docstring)."""

  module, target, keys = MODULE, "mask", SEG_FIELDS
  subtask, eval_row = "ref_seg", EVAL_ROW  # the samples it scores, and their table row

  def __init__(self, fields: Any, image_size: int, tokenizer: Any, head: Any, rows: int = 8):
    self.segmenter = Segmenter(fields, image_size, tokenizer)
    self._attach("segmenter", head, self.segmenter.backend.condition_shape, rows)
    self.encoder = SegmentEncoder(self.segmenter, image_size)
    self.runner = self.segmenter.backend  # the backend that makes the masks
    self.hook = BackendHook(self.module, self._loss, self.segmenter.condition)
    self._run = None  # the jitted mask maker of `masks`, built on first use
    s, lc = self.segmenter.config.sam.image_size, self.segmenter.text_len
    self._spec = {"pixel_values": ((s, s, 3), np.float32), "boxes": ((1, 4), np.float32),
                  "masks": ((s, s), np.float32), "command_ids": ((lc,), np.int32),
                  "valid": ((), np.float32)}

  def init_boxed(self, rng: jax.Array):
    return self.segmenter.init_boxed(rng)

  def _fields(self, sample):
    return self.encoder(sample)

  def _loss(self, params, batch, condition, rng):
    del rng
    return segmenter_loss(self.segmenter, params, batch, condition)

  # -- evaluation ------------------------------------------------------------------------
  def _prompts(self, sample, answer: str, module_index: int, signal, uses_signals: bool
               ) -> tuple[dict[str, np.ndarray], bool, bool]:
    """One answer -> the segmenter's inputs, whether its box is usable, whether its condition
    is (an answer without a valid segmentation invocation has neither; "text" routing needs
    no signal tokens)."""
    media = self._media(sample)
    h, w = media.shape[-3:-1]
    inv = I.find_invocation(answer)
    ok = bool(inv) and inv.module == self.module
    cmd = np.full((self.segmenter.text_len,), int(self.segmenter.tokenizer.pad_token_id),
                  np.int32)
    if ok:
      try:
        cmd = self.segmenter.command_ids(inv.command)
      except ValueError:
        ok = False
    box_ok = ok and bool(inv.boxes)
    box = np.asarray(I.denormalize_box(inv.boxes[0], w, h) if box_ok else (0, 0, w, h),
                     np.float32)
    inp = self.runner.preprocess(media[None], boxes=box.reshape(1, 1, 4))
    hq, hv, mid = signal
    sig_ok = ok and (not uses_signals or (int(mid) == module_index and bool(np.any(hv))))
    return ({"pixel_values": np.asarray(inp["pixel_values"][0], np.float32),
             "boxes": np.asarray(inp["boxes"][0], np.float32), "command_ids": cmd,
             "h_q": np.asarray(hq), "h_valid": np.asarray(hv, bool),
             "module_ids": np.int32(module_index)}, box_ok and sig_ok, sig_ok)

  def _media(self, sample) -> np.ndarray:
    """What the backend segments: the sample's one image `[H, W, 3]`."""
    return np.asarray(sample["images"][0])

  def _masks_fn(self, model: Vitron):
    head = model.config.head

    def run(model_params, backend_params, b):
      native = self.segmenter.condition(backend_params, b["command_ids"])
      if head.uses_signals:
        cond = model.apply({"params": model_params}, self.module, b["h_q"], b["module_ids"],
                           b["h_valid"], native, method=Vitron.signals_to_conditions)
      else:
        cond = native
      backend = self.runner
      with_box = backend.run(backend_params, {"pixel_values": b["pixel_values"],
                                              "boxes": b["boxes"]}, cond)["masks"]
      alone = backend.run(backend_params, {"pixel_values": b["pixel_values"]}, cond)["masks"]
      return self._one_object(with_box), self._one_object(alone)
    return jax.jit(run)

  @staticmethod
  def _one_object(masks):
    """The image backend's masks `[B, P, H, W]` of the one prompted object -> `[B, H, W]`."""
    return masks[:, 0]

  def masks(self, model: Vitron, model_params, backend_params, samples, answers, signals
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What the segmenter makes of answers to one-image samples: masks `[n, H, W]` from the
    answer's box + condition, masks from the condition alone, and per answer whether its box
    and its signals were usable (see `signals` in `score`)."""
    head = model.config.head
    mi = head.index(self.module)
    prompts = [self._prompts(s, a, mi, g, head.uses_signals)
               for s, a, g in zip(samples, answers, signals)]
    batch = {k: np.stack([p[0][k] for p in prompts]) for k in prompts[0][0]}
    if self._run is None:
      self._run = self._masks_fn(model)
    with_box, alone = (np.asarray(m) for m in self._run(model_params, backend_params, batch))
    return (with_box, alone, np.asarray([p[1] for p in prompts]),
            np.asarray([p[2] for p in prompts]))

  def chat_files(self, model: Vitron, model_params, backend_params, sample, answer: str,
                 signal, base: str) -> tuple[list[str], str]:
    """Chat: the mask of this turn's image as `{base}_mask.png` and the image with the mask
    tinted as `{base}_overlay.png`; returns (files, note)."""
    m = self.module
    if not self._has_media(sample):
      return [], f"{m} needs exactly one {self.what} in the conversation"
    with_box, alone, box_ok, sig_ok = self.masks(model, model_params, backend_params, [sample],
                                                 [answer], [signal])
    if not (box_ok[0] or sig_ok[0]):
      return [], f"{m} not run: the invocation has no usable box and no signal embeddings"
    files = self._write(sample, with_box[0] if box_ok[0] else alone[0], base)
    how = "box and signals" if box_ok[0] else "signals alone (the invocation has no box)"
    return files, f"ran {m} (built in; {how})"

  what = "image"  # what it segments, for messages

  def _has_media(self, sample) -> bool:
    return len(sample.get("images") or []) == 1

  def _write(self, sample, mask: np.ndarray, base: str) -> list[str]:
    from vitron_jax.eval.pictures import overlay  # pylint: disable=import-outside-toplevel
    import PIL.Image  # pylint: disable=import-outside-toplevel
    PIL.Image.fromarray(mask.astype(np.uint8) * 255).save(base + "_mask.png")
    overlay(sample["images"][0], masks=[mask]).save(base + "_overlay.png")
    return [base + "_mask.png", base + "_overlay.png"]

  def _row(self, sample, with_box, alone, box_ok: bool, sig_ok: bool
           ) -> tuple[dict[str, float], dict[str, float]]:
    """One sample's (scores, chance): the mask IoU from box + condition and from the condition
    alone (0 where unusable), beside random boxes filled in."""
    truth = np.asarray(sample["targets"]["mask"], bool)
    iou = float(mask_iou_np(with_box, truth)) if box_ok else 0.0
    iou_alone = float(mask_iou_np(alone, truth)) if sig_ok else 0.0
    return {"mask_iou": iou, "text_mask_iou": iou_alone}, {"mask_iou": mask_chance(truth)}

  def _picture(self, sample, mask: np.ndarray):
    from vitron_jax.eval.pictures import overlay  # pylint: disable=import-outside-toplevel
    return overlay(sample["images"][0], masks=[mask])

  def score(self, model: Vitron, model_params, backend_params, samples, answers, signals
            ) -> tuple[list[tuple[str, dict[str, float], dict[str, float]]], dict[int, Any]]:
    """`(eval_row, scores, chance)` per sample of `subtask` (see the module docstring), and per
    sample index whose answer was segmented a picture of the mask tinted on it;
    `signals[i]` = (hidden states at the query slots [K, D], their validity [K], module index)
    of answer i's first invocation."""
    idx = [i for i, s in enumerate(samples) if s["subtask"] == self.subtask]
    if not idx:
      return [], {}
    with_box, alone, box_ok, sig_ok = self.masks(
        model, model_params, backend_params, [samples[i] for i in idx],
        [answers[i] for i in idx], [signals[i] for i in idx])
    rows, made = [], {}
    for j, i in enumerate(idx):
      scores, chance = self._row(samples[i], with_box[j], alone[j], box_ok[j], sig_ok[j])
      rows.append((self.eval_row, scores, chance))
      if box_ok[j] or sig_ok[j]:
        made[i] = self._picture(samples[i], with_box[j] if box_ok[j] else alone[j])
    return rows, made
