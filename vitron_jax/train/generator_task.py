"""Task "pixelworld_generator": pretraining of VITRON's image generation backend on PixelWorld.

No pretrained Stable Diffusion / GLIGEN exists for PixelWorld, so the backend
(`train.generator.Generator`: a GLIGEN UNet in pixel space with its own CLIP text encoder)
learns text -> image from PixelWorld `text_to_image` samples, the way GLIGEN does: the
denoising loss on the sample's image, conditioned on the command's text states, with the
invocation's boxes and their phrases grounded when the prompt drew regions. The condition is
dropped (replaced by the empty prompt's) with probability `condition_dropout`, for
classifier-free guidance. Parameters live under the path a VITRON run keeps them
(`backends/generate_image/{unet,text_encoder}`), so the main run takes them by path from this
stage's checkpoint.

Config: `model.generator` (see `train.generator`), `task.tokenizer` ("pixelworld"),
`data.pixelworld`, `eval.num_samples`. Evaluation (held-out split): images sampled from the
expected invocations, scored by `eval.generated` (`colour_right`, `inside_box` on grounded
prompts) beside their chance levels.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vitron_jax.data import pipeline
from vitron_jax.data import pixelworld_tokenizer as PT
from vitron_jax.data.pixelworld import PixelWorld, WorldConfig
from vitron_jax.data.sources import pixelworld_stage_data
from vitron_jax.eval.generated import generation_scores
from vitron_jax.nn.partitioning import replicate_like
from vitron_jax.train.generator import MODULE, Generator
from vitron_jax.train.task import register_task

GEN_TASK = "text_to_image"
FIELDS = ("images", "command_ids", "phrase_ids", "boxes", "phrase_mask", "pixel_weights")


def requested(sample: Any) -> tuple[list[str], list[np.ndarray] | None]:
  """The colours a text_to_image prompt asks for (z-order) and, when it drew regions, their
  pixel boxes (None when the prompt has none)."""
  colours = [str(o["colour"]) for o in sample["objects"]]
  boxes = None
  if sample.get("regions"):
    boxes = [np.asarray(b, np.float64) for b in sample["targets"]["boxes"]]
  return colours, boxes


def to_uint8(images: Any) -> np.ndarray:
  return np.clip(np.round(np.asarray(images, np.float32) * 255.0), 0, 255).astype(np.uint8)


class GenerateEncoder:
  """A PixelWorld text_to_image sample -> the generator's example fields."""

  def __init__(self, generator: Generator):
    self.generator = generator

  def __call__(self, sample):
    try:
      return self.generator.example(sample)
    except ValueError as e:
      raise pipeline.BadSampleError(pipeline.sample_id_of(sample), "not a generation sample",
                                    str(e)) from e


class PixelWorldGeneratorTask:
  """See the module docstring."""

  name = "pixelworld_generator"

  def __init__(self, config: Any):
    self.cfg = config
    self.world_config = WorldConfig.from_config(config.data)
    self.world_seed = int((config.data.get("pixelworld") or {}).get("seed", 0))
    self.generator = Generator(config.model.get("generator"), self.world_config.image_size,
                               PT.load(config.task.get("tokenizer", "pixelworld")))
    self.encoder = GenerateEncoder(self.generator)
    self._run = None

  def init(self, rng):
    return {"backends": {MODULE: self.generator.init(rng)}}

  def batch_spec(self):
    g, s = self.generator, self.world_config.image_size
    k = g.max_phrases
    return {"images": ((s, s, 3), np.float32), "command_ids": ((g.text_len,), np.int32),
            "phrase_ids": ((k, g.phrase_len), np.int32), "boxes": ((k, 4), np.float32),
            "phrase_mask": ((k,), np.float32), "pixel_weights": ((s, s), np.float32)}

  def loss(self, params, batch, rng):
    g = self.generator
    p = params["backends"][MODULE]
    loss, metrics = g.backend.loss(p, g.backend_batch(batch),
                                   g.condition(p, batch["command_ids"]), rng)
    metrics = dict(metrics)
    metrics["weight"] = jnp.float32(batch["images"].shape[0])
    return loss, metrics

  def make_data(self, global_batch, process_index, process_count):
    return pixelworld_stage_data(self.cfg.data, self.world_config, self.world_seed, GEN_TASK,
                                 self.encoder, global_batch=global_batch,
                                 process_index=process_index, process_count=process_count)

  def components(self):
    return {f"backend_{MODULE}": rf"^backends/{MODULE}/"}

  def images(self, params, samples, seed: int = 0) -> np.ndarray:
    """uint8 images `[n, H, W, 3]` sampled from each sample's expected invocation."""
    rows = [self.encoder(s) for s in samples]
    batch = {k: np.stack([r[k] for r in rows]) for k in FIELDS
             if k not in ("images", "pixel_weights")}
    if self._run is None:
      g = self.generator

      def run(p, b, rng):
        p = p["backends"][MODULE]
        return g.sample_images(p, b, g.condition(p, b["command_ids"]), rng)
      self._run = jax.jit(run)
    return to_uint8(self._run(params, replicate_like(params, batch), jax.random.key(seed)))

  def evaluate(self, params, step, workdir=None):
    """Held-out colour and box scores of sampled images, beside their chance levels."""
    del step, workdir
    n = int(self.cfg.get("eval", {}).get("num_samples", 64))
    world = PixelWorld(self.world_config, split="heldout", seed=self.world_seed)
    samples = [world.sample(i, task=GEN_TASK) for i in range(n)]
    images = self.images(params, samples)
    acc: dict[str, list[float]] = {}
    for s, im in zip(samples, images):
      scores, chance = generation_scores(im, *requested(s))
      for k, v in scores.items():
        acc.setdefault(k, []).append(v)
        acc.setdefault(f"{k}_chance", []).append(chance[k])
    return {k: float(np.mean(v)) for k, v in acc.items()}


@register_task("pixelworld_generator")
def build(config: Any) -> PixelWorldGeneratorTask:
  return PixelWorldGeneratorTask(config)
