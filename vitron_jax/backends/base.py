"""The backend contract and the registry that maps module tokens to backends.

Every backend specialist (segmentation, image/video generation and editing) implements four
pure, jit-able pieces (DESIGN.md §4):

* ``condition_shape``: `(tokens, width)` of its condition tokens — what the VITRON hybrid head
  must produce for it;
* ``native_condition(params, tokens)``: the condition its own text encoder gives for the
  command's token ids (the target of the l2 alignment loss, and the `text` routing mode);
* ``loss(params, batch, condition, rng) -> (scalar, metrics)``: its training loss given
  condition tokens (denoising MSE for diffusion, BCE + dice for masks);
* ``run(params, inputs, condition, rng) -> outputs``: inference (sampling / segmentation).

Backends are plain Python objects holding static configuration (no parameters); parameters
are pytrees passed in, so a backend's loss joins the VITRON train step under one `jit`.
"""
from __future__ import annotations

import abc
import importlib
from typing import Any, Callable, Mapping

import jax

Params = Any
Batch = Mapping[str, jax.Array]


class Backend(abc.ABC):
  """One backend specialist. Subclasses hold static config only."""

  #: module name as used in invocations (e.g. "segment_image"); set by subclasses.
  module: str = ""

  @property
  @abc.abstractmethod
  def condition_shape(self) -> tuple[int, int]:
    """`(num_tokens, width)` of the condition tokens this backend consumes."""

  @abc.abstractmethod
  def native_condition(self, params: Params, tokens: jax.Array) -> jax.Array:
    """`[B, num_tokens, width]` condition from the backend's own encoder on token ids."""

  @abc.abstractmethod
  def loss(self, params: Params, batch: Batch, condition: jax.Array,
           rng: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Scalar training loss and per-backend metrics."""

  @abc.abstractmethod
  def run(self, params: Params, inputs: Batch, condition: jax.Array,
          rng: jax.Array) -> dict[str, jax.Array]:
    """Inference; returns named outputs (masks, images, videos, boxes, scores...)."""


#: Built-in backends by invocation module name (protocol.tokens.MODULES) -> the Python module
#: that registers it. Imported on first use, so `import vitron_jax` stays light.
BUILTIN_BACKENDS: dict[str, str] = {
    "segment_image": "vitron_jax.backends.segmentation.backend",
    "segment_video": "vitron_jax.backends.segmentation.backend",
    "generate_image": "vitron_jax.backends.diffusion.backend",
    "edit_image": "vitron_jax.backends.diffusion.backend",
    "generate_video": "vitron_jax.backends.diffusion.backend",
    "image_to_video": "vitron_jax.backends.diffusion.backend",
    "edit_video": "vitron_jax.backends.diffusion.backend",
}


class BackendRegistry:
  """Maps module names (the invocation's module token) to backend factories."""

  def __init__(self, builtins: Mapping[str, str] | None = None):
    self._factories: dict[str, Callable[..., Backend]] = {}
    self._builtins = dict(builtins or {})

  def _ensure(self, module: str) -> None:
    if module not in self._factories and module in self._builtins:
      importlib.import_module(self._builtins[module])

  def register(self, module: str, factory: Callable[..., Backend] | None = None):
    """Register `factory` under `module`; usable as a decorator."""
    def deco(f):
      if module in self._factories:
        raise ValueError(f"backend module {module!r} is already registered")
      self._factories[module] = f
      return f
    return deco(factory) if factory is not None else deco

  def create(self, module: str, *args, **kwargs) -> Backend:
    self._ensure(module)
    if module not in self._factories:
      raise KeyError(f"no backend registered for module {module!r}; known: {self.modules()}")
    return self._factories[module](*args, **kwargs)

  def factory(self, module: str) -> Callable[..., Backend]:
    self._ensure(module)
    if module not in self._factories:
      raise KeyError(f"no backend registered for module {module!r}; known: {self.modules()}")
    return self._factories[module]

  def __contains__(self, module: str) -> bool:
    return module in self._factories

  def modules(self) -> list[str]:
    return sorted(set(self._factories) | set(self._builtins))


REGISTRY = BackendRegistry(BUILTIN_BACKENDS)
