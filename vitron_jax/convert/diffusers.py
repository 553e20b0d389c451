"""diffusers folders <-> Flax parameter trees for the VAE, UNet2D (incl. GLIGEN), UNet3D, I2VGen.

A diffusers model folder holds `config.json` and `diffusion_pytorch_model.safetensors` (or
shards plus `diffusion_pytorch_model.safetensors.index.json`). Names map mechanically:

* PyTorch `down_blocks.0.resnets.1.conv1.weight` <-> Flax `down_blocks_0/resnets_1/conv1/kernel`
  (a numeric segment joins the module name before it; `linear_1`/`linear_2` of the time
  embedding are PyTorch names themselves);
* Linear `weight [out, in]` <-> `kernel [in, out]`; Conv2d `OIHW` <-> `HWIO`;
  Conv3d `OIDHW` <-> `DHWIO`; norms keep `weight`/`bias`.

Loading checks every key and shape against the Flax module built from the config and raises
one `WeightsMismatchError` listing all missing, unexpected and mis-shaped tensors.

    module, params = load_unet2d("path/to/unet")
    save_unet2d(module, params, "out/unet")          # loads with UNet2DConditionModel.from_pretrained
"""
from __future__ import annotations

import json
import os
import pathlib
import re
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import numpy as np

from vitron_jax.convert.safetensors_io import (WeightsError, read_weights, write_json,
                                               write_weights)
from vitron_jax.convert.tree import check_keys, flatten, unflatten

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
CONFIG_NAME = "config.json"

#: Flax module names that end in `_<digits>` but are not ModuleList/Sequential indices.
_KEEP = frozenset({"linear_1", "linear_2"})
_INDEXED = re.compile(r"^(.+)_(\d+)$")


# ------------------------------------------------------------------------------- names


def flax_to_torch_name(path: str) -> str:
  """`down_blocks_0/attentions_0/proj_in/kernel` -> `down_blocks.0.attentions.0.proj_in.weight`."""
  parts = path.split("/")
  out = []
  for p in parts[:-1]:
    m = _INDEXED.match(p)
    out.append(f"{m.group(1)}.{m.group(2)}" if m and p not in _KEEP else p)
  leaf = parts[-1]
  out.append("weight" if leaf == "kernel" else leaf)
  return ".".join(out)


def _torch_shape(leaf: str, shape: tuple[int, ...]) -> tuple[int, ...]:
  if leaf != "kernel":
    return tuple(shape)
  if len(shape) == 2:
    return (shape[1], shape[0])
  if len(shape) in (3, 4, 5):  # [*spatial, I, O] -> [O, I, *spatial]
    return (shape[-1], shape[-2]) + tuple(shape[:-2])
  raise WeightsError(f"kernel with unsupported rank {len(shape)}: {shape}")


def _to_flax(t: np.ndarray, leaf: str) -> np.ndarray:
  if leaf != "kernel":
    return t
  if t.ndim == 2:
    return t.T
  n = t.ndim - 2  # [O, I, *spatial] -> [*spatial, I, O]
  return np.transpose(t, tuple(range(2, 2 + n)) + (1, 0))


def _to_torch(a: np.ndarray, leaf: str) -> np.ndarray:
  if leaf != "kernel":
    return a
  if a.ndim == 2:
    return a.T
  n = a.ndim - 2  # [*spatial, I, O] -> [O, I, *spatial]
  return np.transpose(a, (n + 1, n) + tuple(range(n)))


# ------------------------------------------------------------------------- tree mapping


def expected_flax_shapes(module: nn.Module, *init_args, **init_kwargs) -> dict[str, tuple]:
  """`{flax_path: shape}` of the module's parameters, from `eval_shape` (nothing allocated)."""
  abstract = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), *init_args,
                                                **init_kwargs))
  params = nn.meta.unbox(abstract)["params"]
  return {k: tuple(v.shape) for k, v in flatten(params).items()}


def params_from_diffusers(tensors: Mapping[str, np.ndarray], expected: Mapping[str, tuple],
                          where: str, dtype: Any = np.float32) -> dict:
  """PyTorch-named tensors -> nested Flax params (checked against `expected` flax shapes)."""
  torch_expected = {}
  for path, shape in expected.items():
    name = flax_to_torch_name(path)
    if name in torch_expected:
      raise WeightsError(f"two Flax parameters map to PyTorch name {name!r}")
    torch_expected[name] = _torch_shape(path.rsplit("/", 1)[-1], shape)
  check_keys(tensors, torch_expected, where)
  flat = {}
  for path in expected:
    leaf = path.rsplit("/", 1)[-1]
    flat[path] = np.asarray(_to_flax(np.asarray(tensors[flax_to_torch_name(path)]), leaf),
                            dtype=dtype)
  return {"params": unflatten(flat)}


def params_to_diffusers(params: Any, dtype: Any = np.float32) -> dict[str, np.ndarray]:
  """Nested Flax params (with or without the top `params` key) -> PyTorch-named arrays."""
  params = nn.meta.unbox(params)
  if isinstance(params, Mapping) and set(params) == {"params"}:
    params = params["params"]
  out = {}
  for path, v in flatten(params).items():
    leaf = path.rsplit("/", 1)[-1]
    out[flax_to_torch_name(path)] = np.ascontiguousarray(
        _to_torch(np.asarray(jax.device_get(v), dtype=dtype), leaf))
  return out


# ------------------------------------------------------------------------------ folders


def read_config(path: str | os.PathLike) -> dict:
  cfg_path = pathlib.Path(path) / CONFIG_NAME
  if not cfg_path.is_file():
    raise WeightsError(f"no {CONFIG_NAME} in diffusers model folder {str(path)!r}")
  with open(cfg_path) as f:
    return json.load(f)


def _write_config(cfg: dict, path: pathlib.Path) -> None:
  write_json(cfg, path / CONFIG_NAME)


def _load(path, config_cls, module_fn: Callable, init_args_fn: Callable, dtype, kind: str):
  path = pathlib.Path(path)
  raw = read_config(path)
  want = config_cls._class_name
  if raw.get("_class_name", want) != want:
    raise WeightsError(f"{str(path)!r} holds a {raw['_class_name']!r}, expected a {want!r}")
  config = config_cls.from_diffusers(raw)
  module = module_fn(config)
  tensors = read_weights(path, stem="diffusion_pytorch_model")
  expected = expected_flax_shapes(module, *init_args_fn(config))
  params = params_from_diffusers(tensors, expected, f"{kind} folder {str(path)!r}", dtype)
  return module, params["params"]  # the bare tree, as every loader returns it


def _save(config, params, path, max_shard_bytes) -> list[pathlib.Path]:
  path = pathlib.Path(path)
  files = write_weights(params_to_diffusers(params), path, filename=WEIGHTS_NAME,
                        max_shard_bytes=max_shard_bytes)
  _write_config(config.to_diffusers(), path)
  return files


def _config_of(module_or_config):
  return getattr(module_or_config, "config", module_or_config)


# ------------------------------------------------------------------------------ models


def load_vae(path: str | os.PathLike, dtype: Any = np.float32):
  """diffusers `AutoencoderKL` folder -> `(AutoencoderKL module, params)`."""
  from vitron_jax.backends.diffusion.vae import (AutoencoderKL, AutoencoderKLConfig,
                                                 vae_init_inputs)
  return _load(path, AutoencoderKLConfig, AutoencoderKL, vae_init_inputs, dtype, "VAE")


def save_vae(module_or_config, params, path, max_shard_bytes: int | None = None):
  """Write `config.json` + safetensors that `AutoencoderKL.from_pretrained(path)` loads."""
  return _save(_config_of(module_or_config), params, path, max_shard_bytes)


def load_unet2d(path: str | os.PathLike, dtype: Any = np.float32):
  """diffusers `UNet2DConditionModel` folder (SD 1.x/2.x, GLIGEN) -> `(module, params)`."""
  from vitron_jax.backends.diffusion.unet2d import (UNet2DConditionConfig, UNet2DConditionModel,
                                                    unet2d_init_inputs)
  return _load(path, UNet2DConditionConfig, UNet2DConditionModel, unet2d_init_inputs, dtype,
               "UNet2D")


def save_unet2d(module_or_config, params, path, max_shard_bytes: int | None = None):
  """Write a folder that `UNet2DConditionModel.from_pretrained(path)` loads."""
  return _save(_config_of(module_or_config), params, path, max_shard_bytes)


def load_unet3d(path: str | os.PathLike, dtype: Any = np.float32):
  """diffusers `UNet3DConditionModel` folder (ZeroScope / ModelScope) -> `(module, params)`."""
  from vitron_jax.backends.diffusion.unet3d import (UNet3DConditionConfig, UNet3DConditionModel,
                                                    unet3d_init_inputs)
  return _load(path, UNet3DConditionConfig, UNet3DConditionModel, unet3d_init_inputs, dtype,
               "UNet3D")


def save_unet3d(module_or_config, params, path, max_shard_bytes: int | None = None):
  """Write a folder that `UNet3DConditionModel.from_pretrained(path)` loads."""
  return _save(_config_of(module_or_config), params, path, max_shard_bytes)


def load_i2vgen_unet(path: str | os.PathLike, dtype: Any = np.float32):
  """diffusers `I2VGenXLUNet` folder -> `(I2VGenXLUNet module, params)`."""
  from vitron_jax.backends.diffusion.i2vgen import I2VGenXLConfig, I2VGenXLUNet, i2vgen_init_inputs
  return _load(path, I2VGenXLConfig, I2VGenXLUNet, i2vgen_init_inputs, dtype, "I2VGenXLUNet")


def save_i2vgen_unet(module_or_config, params, path, max_shard_bytes: int | None = None):
  """Write a folder that `I2VGenXLUNet.from_pretrained(path)` loads."""
  return _save(_config_of(module_or_config), params, path, max_shard_bytes)
