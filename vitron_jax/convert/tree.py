"""Matching a flat dict of named tensors against a parameter tree's expected shapes.

Every converter reduces to: build the expected `{hf_name: shape}` from the Flax module,
map tensors one-to-one, and fail *once* with every missing, unexpected and mis-shaped key.
"""
from __future__ import annotations

from typing import Any, Mapping

import flax
import numpy as np

from vitron_jax.convert.safetensors_io import WeightsError


class WeightsMismatchError(WeightsError):
  """Checkpoint keys or shapes do not fit the model's configuration."""

  def __init__(self, where: str, missing=(), unexpected=(), mismatched=()):
    self.missing, self.unexpected, self.mismatched = list(missing), list(unexpected), list(
        mismatched)
    lines = [f"weights in {where} do not fit the model config:"]
    if self.missing:
      lines.append(f"  missing keys ({len(self.missing)}): {self.missing}")
    if self.unexpected:
      lines.append(f"  unexpected keys ({len(self.unexpected)}): {self.unexpected}")
    for name, got, want in self.mismatched:
      lines.append(f"  shape mismatch for {name!r}: checkpoint {tuple(got)}, expected "
                   f"{tuple(want)}")
    super().__init__("\n".join(lines))


def check_keys(tensors: Mapping[str, np.ndarray], expected: Mapping[str, tuple[int, ...]],
               where: str, ignore: tuple[str, ...] = ()) -> None:
  """Raise one WeightsMismatchError listing every missing/unexpected/mis-shaped key."""
  missing = sorted(k for k in expected if k not in tensors)
  unexpected = sorted(k for k in tensors if k not in expected
                      and not any(k.endswith(s) or k == s for s in ignore))
  mismatched = [(k, tensors[k].shape, tuple(expected[k])) for k in sorted(expected)
                if k in tensors and tuple(tensors[k].shape) != tuple(expected[k])]
  if missing or unexpected or mismatched:
    raise WeightsMismatchError(where, missing, unexpected, mismatched)


def flatten(params: Any, sep: str = "/") -> dict[str, Any]:
  """Nested dict -> {"a/b/c": leaf}."""
  return {sep.join(k): v for k, v in flax.traverse_util.flatten_dict(
      flax.core.unfreeze(params)).items()}


def unflatten(flat: Mapping[str, Any], sep: str = "/") -> dict[str, Any]:
  return flax.traverse_util.unflatten_dict({tuple(k.split(sep)): v for k, v in flat.items()})
