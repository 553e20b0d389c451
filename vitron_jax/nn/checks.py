"""Input validation done once, outside jit, with messages that name the input.

Inside jit values are abstract, so these checks run where inputs enter the system (loaders,
pipelines, `generate`, the data pipeline) on concrete arrays; on tracers only static facts
(shape, dtype) are checked.
"""
from __future__ import annotations

from typing import Sequence

import jax
import numpy as np


def _is_concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)


def check_token_ids(ids, vocab_size: int, name: str = "input_ids") -> None:
  """Token ids must be integers in [0, vocab_size)."""
  if not np.issubdtype(np.asarray(ids).dtype if _is_concrete(ids) else ids.dtype, np.integer):
    raise TypeError(f"{name} must be an integer array, got dtype {ids.dtype}")
  if _is_concrete(ids):
    a = np.asarray(ids)
    if a.size and (a.min() < 0 or a.max() >= vocab_size):
      bad = a[(a < 0) | (a >= vocab_size)]
      raise ValueError(f"{name} has token ids out of range [0, {vocab_size}): "
                       f"{sorted(set(bad.tolist()))[:10]}")


def check_images(x, *, channels: int, size: int | Sequence[int] | None = None,
                 multiple_of: int | None = None, name: str = "images") -> None:
  """Channels-last images `[B, H, W, C]`; optional exact size or divisibility of H and W."""
  shape = tuple(x.shape)
  if len(shape) != 4:
    raise ValueError(f"{name} must be channels-last [batch, height, width, channels], "
                     f"got shape {shape}")
  if shape[-1] != channels:
    raise ValueError(f"{name} must have {channels} channels (channels-last [B, H, W, C]), "
                     f"got {shape[-1]} in shape {shape}")
  if size is not None:
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if shape[1:3] != hw:
      raise ValueError(f"{name} must be {hw[0]}x{hw[1]} pixels, got {shape[1]}x{shape[2]}")
  if multiple_of is not None and (shape[1] % multiple_of or shape[2] % multiple_of):
    raise ValueError(f"{name} height and width must be multiples of {multiple_of}, got "
                     f"{shape[1]}x{shape[2]}")
