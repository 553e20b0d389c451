"""The image generator inside the VITRON step (`generate_image`; `train.vitron_backends`).

Pretrained on PixelWorld by the `pixelworld_generator` stage (`train.generator_task`) and
frozen here. With `model.generator` in the config, the VITRON step runs frontend -> LLM ->
hybrid head -> projector -> frozen GLIGEN UNet -> denoising loss in one jit, for the rows that
invoke image generation:

* every example carries `generate_image/{images, command_ids, phrase_ids, boxes, phrase_mask,
  pixel_weights, valid}` (the target image, its loss weights and the expected invocation's
  inputs; zeros and valid 0 for rows
  that do not generate), and the first `task.backend_rows.generate_image` (default 8) valid
  rows are gathered in jit (`train.backend_rows`);
* the condition is what the routing mode builds from the signal tokens and the generator's
  native text condition (the command through its CLIP text encoder), and the loss is the
  stage's denoising MSE on the target image (boxes grounded where the invocation has them),
  padding rows weighted out.

Evaluation (`GenerationAttachment.score`): for every `text_to_image` sample the free-running
answer's invocation is parsed, its command and boxes go to the generator with the condition
built from the hidden states at the decoded query slots, exactly as chat runs it, and row
`t2i_images` scores the image against what the user asked (`eval.generated`: `colour_right`
beside its chance, `inside_box` on prompts that drew regions). An answer with no valid
generation invocation scores 0.
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np

from vitron_jax.data import pipeline
from vitron_jax.eval.generated import generation_scores
from vitron_jax.models.objective import BackendHook
from vitron_jax.models.vitron import Vitron
from vitron_jax.protocol import invocation as I
from vitron_jax.train.backend_rows import RowFields
from vitron_jax.train.generator import MODULE, Generator
from vitron_jax.train.generator_task import FIELDS, GEN_TASK, requested, to_uint8

EVAL_ROW = "t2i_images"  # the table row of the images the generator made from the answers


class GenerationAttachment(RowFields):
  """The frozen image generator inside the VITRON step (see the module docstring)."""

  module, target, keys = MODULE, "image", FIELDS

  def __init__(self, fields: Any, image_size: int, tokenizer: Any, head: Any, rows: int = 8):
    self.generator = Generator(fields, image_size, tokenizer, training=False)
    self._attach("generator", head, self.generator.backend.condition_shape, rows)
    self.hook = BackendHook(MODULE, self._loss, self.generator.condition)
    g = self.generator
    s, k = image_size, g.max_phrases
    self._spec = {"images": ((s, s, 3), np.float32), "command_ids": ((g.text_len,), np.int32),
                  "phrase_ids": ((k, g.phrase_len), np.int32), "boxes": ((k, 4), np.float32),
                  "phrase_mask": ((k,), np.float32), "pixel_weights": ((s, s), np.float32),
                  "valid": ((), np.float32)}
    self._run = None  # the jitted image maker of `images`, built on first use

  def init_boxed(self, rng: jax.Array):
    return self.generator.init(rng)

  def _fields(self, sample):
    try:
      return self.generator.example(sample)
    except ValueError as e:
      raise pipeline.BadSampleError(pipeline.sample_id_of(sample),
                                    "generation inputs do not fit", str(e)) from e

  def _loss(self, params, batch, condition, rng):
    return self.generator.backend.loss(params, Generator.backend_batch(batch), condition, rng)

  # -- evaluation ------------------------------------------------------------------------
  def _inputs(self, answer: str, module_index: int, signal, uses_signals: bool
              ) -> tuple[dict[str, np.ndarray], bool]:
    """One answer -> the generator's inputs and whether they are usable (a valid generation
    invocation whose command and boxes the generator takes, with its signals when the
    routing needs them)."""
    g = self.generator
    inv = I.find_invocation(answer)
    ok = bool(inv) and inv.module == MODULE
    out = None
    if ok:
      try:
        out = g.inputs(inv.command, inv.boxes)
      except ValueError:
        ok = False
    if out is None:
      out = g.inputs("a", ())  # a placeholder row; its image scores 0
    hq, hv, mid = signal
    ok = ok and (not uses_signals or (int(mid) == module_index and bool(np.any(hv))))
    out.update({"h_q": np.asarray(hq), "h_valid": np.asarray(hv, bool),
                "module_ids": np.int32(module_index)})
    return out, ok

  def _images_fn(self, model: Vitron):
    head, g = model.config.head, self.generator

    def run(model_params, backend_params, b, rng):
      native = g.condition(backend_params, b["command_ids"])
      if head.uses_signals:
        cond = model.apply({"params": model_params}, MODULE, b["h_q"], b["module_ids"],
                           b["h_valid"], native, method=Vitron.signals_to_conditions)
      else:
        cond = native
      return g.sample_images(backend_params, b, cond, rng)
    return jax.jit(run)

  def images(self, model: Vitron, model_params, backend_params, answers, signals, seed: int = 0
             ) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images `[n, H, W, 3]` the generator makes of the answers, and per answer whether
    its invocation was usable (see `score`)."""
    head = model.config.head
    mi = head.index(MODULE)
    rows = [self._inputs(a, mi, s, head.uses_signals) for a, s in zip(answers, signals)]
    batch = {k: np.stack([r[0][k] for r in rows]) for k in rows[0][0]}
    if self._run is None:
      self._run = self._images_fn(model)
    out = self._run(model_params, backend_params, batch, jax.random.key(seed))
    return to_uint8(out), np.asarray([r[1] for r in rows])

  def chat_files(self, model: Vitron, model_params, backend_params, sample, answer: str,
                 signal, base: str) -> tuple[list[str], str]:
    """Chat: the generated image as `{base}.png`; returns (files, note)."""
    del sample
    images, ok = self.images(model, model_params, backend_params, [answer], [signal])
    if not ok[0]:
      return [], (f"{MODULE} not run: the invocation's command or boxes do not fit the "
                  f"generator, or it has no signal embeddings")
    import PIL.Image  # pylint: disable=import-outside-toplevel
    PIL.Image.fromarray(images[0]).save(base + ".png")
    return [base + ".png"], f"ran {MODULE} (built in; command, boxes and signals)"

  def score(self, model: Vitron, model_params, backend_params, samples, answers, signals
            ) -> tuple[list[tuple[str, dict[str, float], dict[str, float]]], dict[int, Any]]:
    """`(EVAL_ROW, scores, chance)` per `text_to_image` sample (module docstring), and per
    sample index whose answer was usable a picture of the generated image with the answer's
    boxes outlined."""
    idx = [i for i, s in enumerate(samples) if s["subtask"] == GEN_TASK]
    if not idx:
      return [], {}
    images, ok = self.images(model, model_params, backend_params, [answers[i] for i in idx],
                             [signals[i] for i in idx])
    from vitron_jax.eval.pictures import overlay  # pylint: disable=import-outside-toplevel
    rows, made, s = [], {}, self.generator.image_size
    for j, i in enumerate(idx):
      scores, chance = generation_scores(images[j], *requested(samples[i]))
      if not ok[j]:
        scores = {k: 0.0 for k in scores}
      else:
        boxes = [I.denormalize_box(b, s, s) for b in I.find_invocation(answers[i]).boxes]
        made[i] = overlay(images[j], boxes=boxes)
      rows.append((EVAL_ROW, scores, chance))
    return rows, made
