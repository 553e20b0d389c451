"""A pixel-space diffusion backend inside the VITRON step (the shared half of the image
generator's and the image editor's attachments; `train.vitron_backends`).

Pretrained on PixelWorld by its stage (`train.pixel_diffusion_task`) and frozen here. The VITRON
step runs frontend -> LLM -> hybrid head -> projector -> frozen UNet -> denoising loss in one
jit, for the rows that invoke the backend:

* every example carries `<module>/{<the backend's example fields>, valid}` (the target image,
  its loss weights and the expected invocation's inputs; zeros and valid 0 for rows that do
  not invoke it), and the first `task.backend_rows.<module>` (default 8) valid rows are
  gathered in jit (`train.backend_rows`);
* the condition is what the routing mode builds from the signal tokens and the backend's
  native text condition (the command through its CLIP text encoder), and the loss is the
  stage's denoising MSE on the target image, padding rows weighted out.

Evaluation (`score`): for every sample of the subclass's `subtask` the free-running answer's
invocation is parsed, its inputs go to the backend with the condition built from the hidden
states at the decoded query slots, exactly as chat runs it, and row `eval_row` scores the
image (`_scores`). An answer with no usable invocation scores 0 (`_failed`).
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np

from vitron_jax.data import pipeline
from vitron_jax.models.objective import BackendHook
from vitron_jax.models.vitron import Vitron
from vitron_jax.protocol import invocation as I
from vitron_jax.train.backend_rows import RowFields
from vitron_jax.train.pixel_diffusion_task import TARGET_FIELDS, to_uint8


class PixelDiffusionAttachment(RowFields):
  """See the module docstring. Subclasses set `maker` (the `PixelDiffusion` class), `field`
  (`model.<field>`), `target`, `subtask`, `eval_row`, `needs` (what the invocation uses, for
  chat's note), and define `_invocation_inputs(inv, sample)`, `_placeholder(sample)` and
  `_scores(image, sample)`; `_picture` and `_failed` have defaults."""

  maker: Any = None
  field = subtask = eval_row = needs = ""

  def __init__(self, fields: Any, image_size: int, tokenizer: Any, head: Any, rows: int = 8):
    self.backend = self.maker(fields, image_size, tokenizer, training=False)
    self.module = self.backend.module
    self._attach(self.field, head, self.backend.backend.condition_shape, rows)
    self.hook = BackendHook(self.module, self._loss, self.backend.condition)
    self._spec = {**self.backend.spec(), "valid": ((), np.float32)}
    self.keys = tuple(k for k in self._spec if k != "valid")
    self._run = None  # the jitted image maker of `images`, built on first use

  def init_boxed(self, rng: jax.Array):
    return self.backend.init(rng)

  def _fields(self, sample):
    try:
      return self.backend.example(sample)
    except ValueError as e:
      raise pipeline.BadSampleError(pipeline.sample_id_of(sample),
                                    f"{self.module} inputs do not fit", str(e)) from e

  def _loss(self, params, batch, condition, rng):
    return self.backend.backend.loss(params, self.backend.backend_batch(batch), condition, rng)

  # -- evaluation ------------------------------------------------------------------------
  def _invocation_inputs(self, inv: I.Invocation, sample: Any) -> dict[str, np.ndarray]:
    """The backend's run inputs of a parsed invocation (ValueError: it does not fit)."""
    raise NotImplementedError

  def _placeholder(self, sample: Any) -> dict[str, np.ndarray]:
    """Run inputs of a row whose answer is not usable (its image scores 0)."""
    raise NotImplementedError

  def _inputs(self, sample: Any, answer: str, module_index: int, signal, uses_signals: bool
              ) -> tuple[dict[str, np.ndarray], bool]:
    """One answer -> the backend's inputs and whether they are usable (a valid invocation of
    the module whose inputs the backend takes, with its signals when the routing needs
    them)."""
    inv = I.find_invocation(answer)
    ok = bool(inv) and inv.module == self.module
    out = None
    if ok:
      try:
        out = self._invocation_inputs(inv, sample)
      except ValueError:
        ok = False
    if out is None:
      out = self._placeholder(sample)
    hq, hv, mid = signal
    ok = ok and (not uses_signals or (int(mid) == module_index and bool(np.any(hv))))
    out.update({"h_q": np.asarray(hq), "h_valid": np.asarray(hv, bool),
                "module_ids": np.int32(module_index)})
    return out, ok

  def _images_fn(self, model: Vitron):
    head, b, m = model.config.head, self.backend, self.module

    def run(model_params, backend_params, x, rng):
      native = b.condition(backend_params, x["command_ids"])
      if head.uses_signals:
        cond = model.apply({"params": model_params}, m, x["h_q"], x["module_ids"],
                           x["h_valid"], native, method=Vitron.signals_to_conditions)
      else:
        cond = native
      return b.sample_images(backend_params, x, cond, rng)
    return jax.jit(run)

  def images(self, model: Vitron, model_params, backend_params, samples, answers, signals,
             seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images `[n, H, W, 3]` the backend makes of the answers to `samples`, and per
    answer whether its invocation was usable (see `score`)."""
    head = model.config.head
    mi = head.index(self.module)
    rows = [self._inputs(s, a, mi, g, head.uses_signals)
            for s, a, g in zip(samples, answers, signals)]
    batch = {k: np.stack([r[0][k] for r in rows]) for k in rows[0][0]
             if k not in TARGET_FIELDS}
    if self._run is None:
      self._run = self._images_fn(model)
    out = self._run(model_params, backend_params, batch, jax.random.key(seed))
    return to_uint8(out), np.asarray([r[1] for r in rows])

  def chat_files(self, model: Vitron, model_params, backend_params, sample, answer: str,
                 signal, base: str) -> tuple[list[str], str]:
    """Chat: the image made as `{base}.png`; returns (files, note)."""
    images, ok = self.images(model, model_params, backend_params, [sample], [answer], [signal])
    if not ok[0]:
      return [], (f"{self.module} not run: the invocation's inputs do not fit the backend "
                  f"({self.needs}), or it has no signal embeddings")
    import PIL.Image  # pylint: disable=import-outside-toplevel
    PIL.Image.fromarray(images[0]).save(base + ".png")
    return [base + ".png"], f"ran {self.module} (built in; {self.needs} and signals)"

  # -- grounding by the segmenter (`train.phrase_grounding`) -------------------------------
  grounds = False  # whether its invocations name objects of the image the segmenter may find

  def grounded_phrases(self, inv: I.Invocation) -> list[str]:
    """The phrases of `inv` naming objects of the conversation's image whose boxes the
    segmenter may find (subclasses with `grounds`)."""
    del inv
    return []

  def with_grounded(self, inv: I.Invocation, found: Sequence[Any]) -> I.Invocation:
    """`inv` with the boxes of `grounded_phrases(inv)` replaced by those `found` (a normalised
    box, or None to keep the LLM's, per phrase)."""
    raise NotImplementedError(f"{self.module} grounds no phrases")

  def _scores(self, image: np.ndarray, sample: Any) -> tuple[dict, dict]:
    raise NotImplementedError

  def _picture(self, image: np.ndarray, sample: Any, answer: str) -> Any:
    """The report's picture: the image made, with the answer's boxes outlined."""
    del sample
    from vitron_jax.eval.pictures import overlay  # pylint: disable=import-outside-toplevel
    s = self.backend.image_size
    return overlay(image, boxes=[I.denormalize_box(b, s, s)
                                 for b in I.find_invocation(answer).boxes])

  def score(self, model: Vitron, model_params, backend_params, samples, answers, signals
            ) -> tuple[list[tuple[str, dict[str, float], dict[str, float]]], dict[int, Any]]:
    """`(eval_row, scores, chance)` per `subtask` sample (module docstring), and per sample
    index whose answer was usable a picture of what the backend made (`_picture`)."""
    idx = [i for i, s in enumerate(samples) if s["subtask"] == self.subtask]
    if not idx:
      return [], {}
    images, ok = self.images(model, model_params, backend_params, [samples[i] for i in idx],
                             [answers[i] for i in idx], [signals[i] for i in idx])
    rows, made = [], {}
    for j, i in enumerate(idx):
      scores, chance = self._scores(images[j], samples[i])
      if not ok[j]:
        scores = self._failed(scores, chance)
      else:
        made[i] = self._picture(images[j], samples[i], answers[i])
      rows.append((self.eval_row, scores, chance))
    return rows, made

  def _failed(self, scores: dict[str, float], chance: dict[str, float]) -> dict[str, float]:
    """The scores of an answer whose invocation was not usable: nothing made, nothing right."""
    del chance
    return {k: 0.0 for k in scores}
