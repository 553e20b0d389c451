"""transformers `LlamaForCausalLM` folders <-> (`Llama`, params), both directions.

The mapping is mechanical (see `vitron_jax.models.llama`): Flax path `a/b/kernel` is HF name
`a.b.weight` transposed, `embedding`/`weight` are copied, `layers_{i}` is `model.layers.{i}`,
and a scanned `layers/...` leaf `[L, ...]` is the stack of the L per-layer HF tensors.

    module, params = load_llama("path/to/hf_folder", scan_layers=True)
    save_llama(module, params, "out_folder", max_shard_bytes=2 << 30)
"""
from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vitron_jax.convert.safetensors_io import (WeightsError, read_weights, write_json,
                                               write_weights)
from vitron_jax.convert.tree import check_keys, flatten, unflatten
from vitron_jax.models.llama import Llama, LlamaConfig

# Buffers some older checkpoints carry; they are recomputed, never loaded.
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def _leaf_to_hf(path: tuple[str, ...]) -> tuple[str, bool]:
  """Flax path (without the layer prefix) -> (HF suffix, transpose?)."""
  *mods, leaf = path
  if leaf == "kernel":
    return ".".join(mods) + ".weight", True
  if leaf in ("weight", "bias"):
    return ".".join(mods) + "." + leaf, False
  if leaf == "embedding":
    return ".".join(mods) + ".weight", False
  raise ValueError(f"no HF name for parameter {'/'.join(path)!r}")


def _prefix(top: str) -> str:
  return "" if top == "lm_head" else "model."


def param_shapes(config: LlamaConfig) -> dict[str, tuple[int, ...]]:
  """Flat `{flax_path: shape}` of the module's parameters (abstract; allocates nothing)."""
  module = Llama(config)
  ids = jax.ShapeDtypeStruct((1, 1), np.int32)
  abstract = jax.eval_shape(lambda k, x: module.init(k, x), jax.random.key(0), ids)
  return {k: tuple(v.shape) for k, v in flatten(nn.meta.unbox(abstract["params"])).items()}


def hf_names(config: LlamaConfig) -> dict[str, list[tuple[str, bool]]]:
  """`{flax_path: [(hf_name, transpose), ...]}` (one entry per layer for scanned leaves)."""
  out: dict[str, list[tuple[str, bool]]] = {}
  for path in param_shapes(config):
    parts = tuple(path.split("/"))
    top = parts[0]
    if top == "layers":  # scanned: one HF tensor per layer
      name, tr = _leaf_to_hf(parts[1:])
      out[path] = [(f"model.layers.{i}.{name}", tr) for i in range(config.num_hidden_layers)]
    elif top.startswith("layers_"):
      name, tr = _leaf_to_hf(parts[1:])
      out[path] = [(f"model.layers.{top[len('layers_'):]}.{name}", tr)]
    else:
      name, tr = _leaf_to_hf(parts)
      out[path] = [(_prefix(top) + name, tr)]
  return out


def expected_hf_shapes(config: LlamaConfig) -> dict[str, tuple[int, ...]]:
  """`{hf_name: shape}` that a transformers checkpoint of this config holds."""
  shapes = param_shapes(config)
  out = {}
  for path, names in hf_names(config).items():
    shape = shapes[path][1:] if path.startswith("layers/") else shapes[path]
    for name, tr in names:
      out[name] = tuple(reversed(shape)) if tr else tuple(shape)
  return out


def params_from_hf(tensors: Mapping[str, np.ndarray], config: LlamaConfig,
                   where: str = "checkpoint") -> dict[str, Any]:
  """HF `{name: array}` -> nested Flax params (numpy, `config.param_dtype`).

  Raises one `WeightsMismatchError` listing every missing, unexpected or mis-shaped tensor.
  """
  ignore = IGNORED_SUFFIXES + (("lm_head.weight",) if config.tie_word_embeddings else ())
  check_keys(tensors, expected_hf_shapes(config), where, ignore=ignore)
  dtype = jnp.dtype(config.param_dtype)  # numpy dtype (ml_dtypes for bfloat16)
  flat = {}
  for path, names in hf_names(config).items():
    arrs = [np.asarray(tensors[n]).T if tr else np.asarray(tensors[n]) for n, tr in names]
    a = np.stack(arrs) if path.startswith("layers/") else arrs[0]
    flat[path] = a.astype(dtype)
  return unflatten(flat)


def params_to_hf(params: Mapping[str, Any], config: LlamaConfig) -> dict[str, np.ndarray]:
  """Nested Flax params -> HF `{name: numpy array}` (contiguous, original dtype)."""
  flat = flatten(nn.meta.unbox(params))
  names = hf_names(config)
  check_keys(flat, param_shapes(config), "params")
  out = {}
  for path, hf in names.items():
    a = np.asarray(jax.device_get(flat[path]))
    for i, (name, tr) in enumerate(hf):
      x = a[i] if path.startswith("layers/") else a
      out[name] = np.ascontiguousarray(x.T if tr else x)
  return out


def read_config(path: str | os.PathLike) -> dict[str, Any]:
  cfg_path = pathlib.Path(path) / "config.json"
  if not cfg_path.is_file():
    raise WeightsError(f"{str(path)!r} has no config.json; expected a transformers Llama folder")
  with open(cfg_path) as f:
    return json.load(f)


def load_llama(path: str | os.PathLike, *, shardings: Any = None,
               **runtime) -> tuple[Llama, dict[str, Any]]:
  """Load a transformers Llama folder (config.json + safetensors, single or sharded).

  `runtime` sets run-time config options (scan_layers, remat_policy, dtype, param_dtype).
  `shardings`: optional pytree of shardings for the params (else default device placement).
  """
  config = LlamaConfig.from_hf_dict(read_config(path), **runtime)
  tensors = read_weights(path)
  params = params_from_hf(tensors, config, where=str(path))
  if shardings is not None:
    params = jax.device_put(params, shardings)
  else:
    params = jax.tree_util.tree_map(jnp.asarray, params)
  return Llama(config), params


def save_llama(module: Llama, params: Mapping[str, Any], path: str | os.PathLike,
               max_shard_bytes: int | None = None) -> list[pathlib.Path]:
  """Write `config.json` and safetensors weights (sharded above `max_shard_bytes`) so that
  `transformers.LlamaForCausalLM.from_pretrained(path)` loads them. Tied models omit
  `lm_head.weight`, as transformers does."""
  config = module.config
  tensors = params_to_hf(params, config)
  path = pathlib.Path(path)
  path.mkdir(parents=True, exist_ok=True)
  files = write_weights(tensors, path, filename="model.safetensors",
                        max_shard_bytes=max_shard_bytes)
  write_json(config.to_hf_dict(), path / "config.json")
  return files
