"""The seam between the generic trainer and what it trains: a *task*.

A task bundles a model's initialisation, its loss, the shape of one batch, its data and
(optionally) its evaluation. The trainer (`vitron_jax.train.loop`) knows nothing else about the
model, so VITRON's phases, PixelWorld and the tiny LM of the tests all plug in the same way:

    @register_task("my_task")
    def build(config: ml_collections.ConfigDict) -> Task: ...

and a config selects it with `config.task.name = "my_task"`.

Contract (all pure and jit-able where it says so):

* `init(rng) -> params`: a parameter tree whose leaves may be `nn.LogicallyPartitioned` boxes
  (what `Module.init` returns for annotated params); traced under `jax.eval_shape` and `jit`.
* `loss(params, batch, rng) -> (loss, metrics)`: `loss` a float32 scalar (mean over what
  counts), `metrics` a dict of float32 scalars that must hold ``"weight"``: what the mean was
  taken over (e.g. the number of target tokens). Gradient accumulation averages micro-batches
  weighted by it, so k micro-batches give the gradient of the whole batch. Jit-able.
* `batch_spec() -> {name: (shape_after_batch, dtype)}`: one example's arrays; the trainer adds
  the leading global-batch axis and shards it per the "batch" rule.
* `make_data(global_batch, process_index, process_count) -> DataIterator`: this host's part of
  each global batch (rows `[process_index * local : (process_index + 1) * local]`), with a
  JSON-able `get_state()` / `set_state()` so that resume is exact.
* `components() -> {item_name: regex}`: how the parameter tree is split into checkpoint items
  (one per model component); every parameter path ("a/b/kernel") must match exactly one.
* `evaluate(params, step, workdir) -> {name: float}` (optional): periodic evaluation; a
  ``"pictures"`` entry `{tag: (png bytes, height, width)}` goes to TensorBoard.
* `frozen() -> [regex]` (optional): parameter paths that never train whatever `optim` says
  (VITRON's backends: they are loaded, used in the loss, checkpointed, never updated).
* `save_assets(workdir)` (optional): called once on the primary host before training, for
  files a trained run needs besides its checkpoints (e.g. the tokenizer).
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping, Protocol, runtime_checkable

import jax
import numpy as np

Params = Any
Batch = Mapping[str, Any]
Metrics = dict[str, jax.Array]


@runtime_checkable
class DataIterator(Protocol):
  """Host-local batches (dicts of numpy arrays `[local_batch, ...]`) with checkpointable state."""

  def __next__(self) -> dict[str, np.ndarray]: ...

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]: ...

  def get_state(self) -> Any: ...

  def set_state(self, state: Any) -> None: ...


class Task(Protocol):
  """What the trainer needs from a model + data combination (see the module docstring)."""

  name: str

  def init(self, rng: jax.Array) -> Params: ...

  def loss(self, params: Params, batch: Batch, rng: jax.Array
           ) -> tuple[jax.Array, Metrics]: ...

  def batch_spec(self) -> dict[str, tuple[tuple[int, ...], Any]]: ...

  def make_data(self, global_batch: int, process_index: int, process_count: int
                ) -> DataIterator: ...

  def components(self) -> dict[str, str]: ...


class TaskError(ValueError):
  """A task is unknown or does not fit the configuration."""


_REGISTRY: dict[str, Callable[[Any], Task]] = {}
# Tasks that live in modules the trainer imports lazily (their files may import heavy stacks).
_LAZY: dict[str, str] = {
    "lm_synthetic": "vitron_jax.train.lm_task",
    "lm_conversations": "vitron_jax.train.conversation_task",
    # VITRON phases and PixelWorld (config: experiments/vitron_*.py, phase*.py, pixelworld.py)
    "vitron": "vitron_jax.train.vitron_task",
    "pixelworld_clip": "vitron_jax.train.clip_task",  # vision-tower pretraining
    "pixelworld_segmenter": "vitron_jax.train.segmenter_task",  # segmentation backend
    "pixelworld_generator": "vitron_jax.train.generator_task",  # image generation backend
    "pixelworld_editor": "vitron_jax.train.editor_task",  # image editing backend
    # video backends: text -> video, image -> video, video editing
    "pixelworld_video_generator": "vitron_jax.train.video_diffusion_task",
    "pixelworld_video_animator": "vitron_jax.train.video_diffusion_task",
    "pixelworld_video_editor": "vitron_jax.train.video_diffusion_task",
}


def register_task(name: str) -> Callable[[Callable[[Any], Task]], Callable[[Any], Task]]:
  """Decorator: register a `build(config) -> Task` function under `name`."""
  def deco(fn):
    if name in _REGISTRY and _REGISTRY[name] is not fn:
      raise TaskError(f"task {name!r} is registered twice ({_REGISTRY[name]} and {fn})")
    _REGISTRY[name] = fn
    return fn
  return deco


def register_lazy_task(name: str, module: str) -> None:
  """Say that importing `module` registers task `name` (keeps heavy imports out of the CLI)."""
  _LAZY[name] = module


def build_task(config: Any) -> Task:
  """The task named by `config.task.name`, built from the whole config."""
  name = config.task.name
  if name not in _REGISTRY and name in _LAZY:
    import importlib  # pylint: disable=import-outside-toplevel
    try:
      importlib.import_module(_LAZY[name])
    except ModuleNotFoundError as e:
      if e.name != _LAZY[name]:
        raise
      raise TaskError(f"task {name!r} is declared in module {_LAZY[name]}, which does not exist "
                      f"(yet); it must define a build(config) registered with "
                      f"@register_task({name!r})") from e
  if name not in _REGISTRY:
    raise TaskError(f"config.task.name={name!r} is not a registered task; known: "
                    f"{sorted(set(_REGISTRY) | set(_LAZY))}")
  return _REGISTRY[name](config)


def known_tasks() -> list[str]:
  return sorted(set(_REGISTRY) | set(_LAZY))
