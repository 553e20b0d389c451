"""The pretraining stage of a pixel-space diffusion backend on PixelWorld (the shared half of
tasks `pixelworld_generator` and `pixelworld_editor`).

No pretrained Stable Diffusion / GLIGEN exists for PixelWorld, so each backend
(`train.pixel_diffusion`) learns from one PixelWorld subtask's samples: the denoising loss on
the sample's target image, conditioned on the expected invocation's command through the
backend's own text encoder (and whatever else the invocation gives it: boxes and phrases,
the image to edit). The condition is dropped (replaced by the empty prompt's) with
probability `condition_dropout`, for classifier-free guidance. Parameters live under the path
a VITRON run keeps them (`backends/<module>/{unet,text_encoder}`), so the main run takes them
by path from the stage's checkpoint.

Config: `model.<field>` (the backend's fields), `task.tokenizer` ("pixelworld"),
`data.pixelworld`, `eval.num_samples`. Evaluation (held-out split): images made from the
expected invocations, scored by the subclass's `scores(image, sample)` beside their chance
levels.
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
from vitron_jax.nn.partitioning import replicate_like

#: example fields only training has (the run inputs are the others)
TARGET_FIELDS = ("images", "videos", "pixel_weights")


def to_uint8(images: Any) -> np.ndarray:
  return np.clip(np.round(np.asarray(images, np.float32) * 255.0), 0, 255).astype(np.uint8)


class StageEncoder:
  """A PixelWorld sample of the stage's subtask -> the backend's example fields."""

  def __init__(self, backend: Any, what: str):
    self.backend, self.what = backend, what

  def __call__(self, sample):
    try:
      return self.backend.example(sample)
    except ValueError as e:
      raise pipeline.BadSampleError(pipeline.sample_id_of(sample), f"not {self.what} sample",
                                    str(e)) from e


class PixelDiffusionTask:
  """See the module docstring. Subclasses set `name`, `subtask` (the PixelWorld subtask),
  `field` (`model.<field>`), `backend_cls`, `what` ("a generation": the bad-sample reason)
  and `scores(image, sample) -> (scores, chance)`."""

  name = subtask = field = what = ""
  backend_cls: Any = None

  def __init__(self, config: Any):
    self.cfg = config
    self.world_config = WorldConfig.from_config(config.data)
    self.world_seed = int((config.data.get("pixelworld") or {}).get("seed", 0))
    self.backend = self.backend_cls(config.model.get(self.field), self.world_config.image_size,
                                    PT.load(config.task.get("tokenizer", "pixelworld")))
    self.module = self.backend.module
    self.encoder = StageEncoder(self.backend, self.what)
    self._run = None

  def scores(self, image: np.ndarray, sample: Any) -> tuple[dict, dict]:
    raise NotImplementedError

  def init(self, rng):
    return {"backends": {self.module: self.backend.init(rng)}}

  def batch_spec(self):
    return self.backend.spec()

  def loss(self, params, batch, rng):
    b = self.backend
    p = params["backends"][self.module]
    loss, metrics = b.backend.loss(p, b.backend_batch(batch), b.condition(p, batch["command_ids"]),
                                   rng)
    metrics = dict(metrics)
    metrics["weight"] = jnp.float32(batch["command_ids"].shape[0])
    return loss, metrics

  def make_data(self, global_batch, process_index, process_count):
    return pixelworld_stage_data(self.cfg.data, self.world_config, self.world_seed,
                                 self.subtask, self.encoder, global_batch=global_batch,
                                 process_index=process_index, process_count=process_count)

  def components(self):
    return {f"backend_{self.module}": rf"^backends/{self.module}/"}

  def images(self, params, samples, seed: int = 0) -> np.ndarray:
    """uint8 images `[n, H, W, 3]` (videos `[n, T, H, W, 3]`) made from each sample's expected
    invocation."""
    rows = [self.encoder(s) for s in samples]
    batch = {k: np.stack([r[k] for r in rows]) for k in self.backend.spec()
             if k not in TARGET_FIELDS}
    if self._run is None:
      b = self.backend

      def run(p, x, rng):
        p = p["backends"][self.module]
        return b.sample_images(p, x, b.condition(p, x["command_ids"]), rng)
      self._run = jax.jit(run)
    return to_uint8(self._run(params, replicate_like(params, batch), jax.random.key(seed)))

  def evaluate(self, params, step, workdir=None):
    """Held-out scores of the images made, beside their chance levels."""
    del step, workdir
    n = int(self.cfg.get("eval", {}).get("num_samples", 64))
    world = PixelWorld(self.world_config, split="heldout", seed=self.world_seed)
    samples = [world.sample(i, task=self.subtask) for i in range(n)]
    acc: dict[str, list[float]] = {}
    for s, im in zip(samples, self.images(params, samples)):
      scores, chance = self.scores(im, s)
      for k, v in scores.items():
        acc.setdefault(k, []).append(v)
        if k in chance:
          acc.setdefault(f"{k}_chance", []).append(chance[k])
    return {k: float(np.mean(v)) for k, v in acc.items()}
