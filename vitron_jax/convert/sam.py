"""SAM weights: transformers `SamModel` folders <-> Flax parameter trees (safetensors only).

    module, params = load_sam("path/to/sam")      # config.json + model.safetensors (or shards)
    save_sam(module, params, "out/")              # loadable by SamModel.from_pretrained("out/")

The Flax tree mirrors the PyTorch names, so the mapping is mechanical: `a/layers_3/b/kernel`
<-> `a.layers.3.b.weight`; Linear kernels are transposed, Conv2d kernels go `[O, I, kh, kw]` <->
`[kh, kw, I, O]`, ConvTranspose2d kernels `[I, O, kh, kw]` <-> `[kh, kw, I, O]`. The prompt
encoder's Fourier matrix is tied to `shared_image_embedding.positional_embedding` (transformers
does not save the copy; when a checkpoint has it, it must equal the shared one).
"""
from __future__ import annotations

import json
import os
import pathlib
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vitron_jax.backends.segmentation.config import SamConfig
from vitron_jax.backends.segmentation.sam import SamModel, init_sam_params
from vitron_jax.convert.safetensors_io import (WeightsError, read_weights, write_json,
                                               write_weights)
from vitron_jax.convert.tree import check_keys, flatten, unflatten

TIED_COPY = "prompt_encoder.shared_embedding.positional_embedding"
TIED_SOURCE = "shared_image_embedding.positional_embedding"
_LIST = re.compile(r"^(layers|output_hypernetworks_mlps|point_embed)_(\d+)$")


def _kind(path: tuple[str, ...], ndim: int) -> str:
  if path[-1] != "kernel":
    return "copy"
  if ndim == 2:
    return "linear"
  if ndim == 4:
    return "conv_transpose" if path[-2].startswith("upscale_conv") else "conv"
  raise WeightsError(f"unexpected {ndim}-d kernel at {'/'.join(path)}")


def hf_name(path: tuple[str, ...]) -> str:
  """Flax parameter path -> transformers state-dict key."""
  parts = []
  for p in path:
    m = _LIST.match(p)
    parts.append(f"{m.group(1)}.{m.group(2)}" if m else p)
  if parts[-1] == "kernel":
    parts[-1] = "weight"
  return ".".join(parts)


def to_torch_layout(x: np.ndarray, kind: str) -> np.ndarray:
  if kind == "linear":
    return x.T
  if kind == "conv":
    return x.transpose(3, 2, 0, 1)
  if kind == "conv_transpose":
    return x.transpose(2, 3, 0, 1)
  return x


def from_torch_layout(x: np.ndarray, kind: str) -> np.ndarray:
  if kind == "linear":
    return x.T
  if kind == "conv":
    return x.transpose(2, 3, 1, 0)
  if kind == "conv_transpose":
    return x.transpose(2, 3, 0, 1)
  return x


def _abstract_params(config: SamConfig) -> dict[str, Any]:
  tree = jax.eval_shape(lambda: init_sam_params(config, jax.random.PRNGKey(0)))
  return {tuple(k.split("/")): v for k, v in flatten(tree).items()}


def hf_expected_shapes(config: SamConfig) -> dict[str, tuple[int, ...]]:
  """`{hf_key: torch_shape}` for every parameter of a model with this config."""
  out = {}
  for path, leaf in _abstract_params(config).items():
    kind = _kind(path, len(leaf.shape))
    out[hf_name(path)] = to_torch_layout(np.empty(leaf.shape, np.int8), kind).shape
  return out


def params_from_hf(tensors: dict[str, np.ndarray], config: SamConfig, where: str = "tensors",
                   dtype: Any = jnp.float32) -> dict[str, Any]:
  """Flax params from a transformers state dict (numpy), checking every key and shape."""
  tensors = dict(tensors)
  if TIED_COPY in tensors:
    copy = tensors.pop(TIED_COPY)
    src = tensors.get(TIED_SOURCE)
    if src is not None and (src.shape != copy.shape or not np.array_equal(src, copy)):
      raise WeightsError(f"{where}: {TIED_COPY!r} differs from the tied {TIED_SOURCE!r}")
    if src is None:
      tensors[TIED_SOURCE] = copy
  abstract = _abstract_params(config)
  check_keys(tensors, hf_expected_shapes(config), where)
  flat = {}
  for path, leaf in abstract.items():
    x = from_torch_layout(np.asarray(tensors[hf_name(path)]), _kind(path, len(leaf.shape)))
    flat["/".join(path)] = jnp.asarray(x, dtype=dtype)
  return unflatten(flat)


def params_to_hf(params: Any) -> dict[str, np.ndarray]:
  """transformers state dict (numpy, float32 unless the params are another float) from params."""
  out = {}
  for key, leaf in flatten(params).items():
    path = tuple(key.split("/"))
    x = np.asarray(jax.device_get(leaf))
    out[hf_name(path)] = np.ascontiguousarray(to_torch_layout(x, _kind(path, x.ndim)))
  return out


def load_sam(path: str | os.PathLike, *, param_dtype: Any = jnp.float32,
             dtype: Any = jnp.float32) -> tuple[SamModel, dict[str, Any]]:
  """transformers SAM folder (`config.json` + safetensors) -> `(SamModel, params)`; use as
  `module.apply({"params": params}, pixels, ...)`. `dtype` is the compute dtype."""
  folder = pathlib.Path(path)
  cfg_path = folder / "config.json"
  if not cfg_path.is_file():
    raise WeightsError(f"SAM folder {str(folder)!r} has no config.json")
  with open(cfg_path) as f:
    config = SamConfig.from_hf_dict(json.load(f), dtype=jnp.dtype(dtype).name)
  tensors = read_weights(folder)
  return SamModel(config), params_from_hf(tensors, config, where=str(folder), dtype=param_dtype)


def save_sam(module: SamModel, params: Any, path: str | os.PathLike, *,
             max_shard_bytes: int | None = None, dtype: Any = None) -> pathlib.Path:
  """Write a folder that `transformers.SamModel.from_pretrained` loads: `config.json` and
  safetensors weights (sharded past `max_shard_bytes`). `params` is the variables dict or the
  bare tree; `dtype` casts the stored tensors (default: as they are). Returns the folder."""
  config = module.config
  if isinstance(params, dict) and set(params) == {"params"}:
    params = params["params"]
  tensors = params_to_hf(params)
  if dtype is not None:
    tensors = {k: v.astype(dtype) for k, v in tensors.items()}
  check_keys(tensors, hf_expected_shapes(config), "params given to save_sam")
  folder = pathlib.Path(path)
  write_weights(tensors, folder, max_shard_bytes=max_shard_bytes)
  hf = config.to_hf_dict()
  hf["dtype"] = str(np.dtype(dtype).name) if dtype is not None else "float32"
  write_json(hf, folder / "config.json")
  return folder
