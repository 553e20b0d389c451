"""CLIP towers: Hugging Face folders <-> Flax (`vitron_jax.models.clip`), both directions.

Reads folders of `CLIPVisionModel`, `CLIPVisionModelWithProjection`, `CLIPTextModel`,
`CLIPTextModelWithProjection` and full `CLIPModel`s (the tower is taken out: keys under
`vision_model.` / `text_model.` plus `visual_projection` / `text_projection`, config from
`vision_config` / `text_config` with the top-level `projection_dim`). Tower keys are accepted
with the `vision_model.` / `text_model.` prefix (transformers 4.x and the Hub) or without it
(transformers 5 `CLIPVisionModel` / `CLIPTextModel`). Stored `embeddings.position_ids`
buffers are ignored.

Writes `config.json` + `model.safetensors` (or shards with an index) in the prefixed layout,
which `from_pretrained` of transformers 4.x and 5.x both load.

Name mapping (Flax path -> HF key): `layers_{i}` -> `layers.{i}`, Dense `kernel` ->
`weight` (transposed), patch `kernel` `[p, p, C, D]` -> conv `weight` `[D, C, p, p]`,
`embedding` -> `weight`; everything else keeps its name.
"""
from __future__ import annotations

import json
import os
import pathlib
import re
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vitron_jax.convert.safetensors_io import (WeightsError, read_weights, write_json,
                                               write_weights)
from vitron_jax.convert.tree import check_keys, flatten, unflatten
from vitron_jax.models.clip import CLIPTextModel, CLIPVisionModel
from vitron_jax.models.clip_config import CLIPTextConfig, CLIPVisionConfig

_IGNORE = ("embeddings.position_ids",)
_TOWERS = {
    # kind: (tower prefix, projection name, other tower's prefixes in a full CLIPModel)
    "vision": ("vision_model.", "visual_projection", ("text_model.", "text_projection.",
                                                      "logit_scale")),
    "text": ("text_model.", "text_projection", ("vision_model.", "visual_projection.",
                                                "logit_scale")),
}


# ----------------------------------------------------------------------------- names

def flax_to_hf_name(path: str, kind: str) -> str:
  """`encoder/layers_0/self_attn/q_proj/kernel` -> `vision_model.encoder.layers.0...weight`."""
  prefix, proj, _ = _TOWERS[kind]
  parts = path.split("/")
  parts = [re.sub(r"^layers_(\d+)$", r"layers.\1", p) for p in parts]
  if parts[-1] in ("kernel", "embedding"):
    parts[-1] = "weight"
  name = ".".join(parts)
  return name if parts[0] == proj else prefix + name


def _to_hf(path: str, x: np.ndarray) -> np.ndarray:
  if path.endswith("/kernel"):
    return x.T if x.ndim == 2 else x.transpose(3, 2, 0, 1)
  return x


def _from_hf(path: str, x: np.ndarray) -> np.ndarray:
  if path.endswith("/kernel"):
    return x.T if x.ndim == 2 else x.transpose(2, 3, 1, 0)
  return x


def _hf_shape(path: str, shape: tuple[int, ...]) -> tuple[int, ...]:
  return tuple(_to_hf(path, np.empty(shape, np.int8)).shape)


# ----------------------------------------------------------------------------- helpers

def _unwrap(params: Any) -> dict[str, Any]:
  params = nn.meta.unbox(params)
  if isinstance(params, Mapping) and set(params) == {"params"}:
    params = params["params"]
  return dict(params)


def _expected_shapes(module: nn.Module, kind: str) -> dict[str, tuple[int, ...]]:
  """Flax path -> shape of every parameter `module` has, without allocating anything."""
  if kind == "vision":
    c = module.config
    x = jax.ShapeDtypeStruct((1, c.image_size, c.image_size, c.num_channels), jnp.float32)
  else:
    x = jax.ShapeDtypeStruct((1, 1), jnp.int32)
  shapes = jax.eval_shape(lambda x: module.init(jax.random.key(0), x), x)
  return {k: tuple(v.shape) for k, v in flatten(_unwrap(shapes)).items()}


def _read_config(path: pathlib.Path) -> dict[str, Any]:
  cfg_path = path / "config.json"
  if not cfg_path.is_file():
    raise WeightsError(f"{str(path)!r} has no config.json (expected a Hugging Face CLIP folder)")
  with open(cfg_path) as f:
    return json.load(f)


def _tower_tensors(tensors: Mapping[str, np.ndarray], kind: str,
                   full_model: bool) -> dict[str, np.ndarray]:
  """Keep this tower's keys, named with the tower prefix; drop the other tower of a CLIPModel."""
  prefix, proj, other = _TOWERS[kind]
  prefixed = any(k.startswith(prefix) for k in tensors)
  out = {}
  for k, v in tensors.items():
    if full_model and k.startswith(other):
      continue
    if k.startswith(prefix) or k.startswith(proj + ".") or not prefixed:
      name = k if (k.startswith(prefix) or k.startswith(proj + ".")) else prefix + k
      out[name] = v
    else:
      out[k] = v  # reported as unexpected by check_keys
  return out


def _kind(module: nn.Module) -> str:
  if isinstance(module, CLIPVisionModel):
    return "vision"
  if isinstance(module, CLIPTextModel):
    return "text"
  raise TypeError(f"expected a CLIPVisionModel or CLIPTextModel, got {type(module).__name__}")


def hf_to_flax(tensors: Mapping[str, np.ndarray], module: nn.Module, *,
               full_model: bool = False, where: str = "the given tensors") -> dict[str, Any]:
  """HF tensors (a tower's state dict, prefixed or not, or a CLIPModel's) -> parameter tree.

  With `full_model` the other tower's keys are dropped, and so is this tower's projection when
  `module.with_projection` is False.

  Raises one `WeightsMismatchError` listing every missing, unexpected or mis-shaped key.
  """
  kind = _kind(module)
  tensors = _tower_tensors(tensors, kind, full_model)
  _, proj, _ = _TOWERS[kind]
  if full_model and not module.with_projection:
    tensors.pop(f"{proj}.weight", None)  # a CLIPModel always has it; this module does not
  shapes = _expected_shapes(module, kind)
  names = {flax_to_hf_name(p, kind): p for p in shapes}
  check_keys(tensors, {h: _hf_shape(p, shapes[p]) for h, p in names.items()}, where=where,
             ignore=_IGNORE)
  flat = {p: jnp.asarray(_from_hf(p, np.asarray(tensors[h])), dtype=module.param_dtype)
          for h, p in names.items()}
  return unflatten(flat)


def flax_to_hf(module: nn.Module, params: Any, dtype: Any = None) -> dict[str, np.ndarray]:
  """`params` (variables dict or bare tree) -> HF-named numpy tensors (prefixed layout)."""
  kind = _kind(module)
  flat = flatten(_unwrap(params))
  check_keys({k: np.empty(np.shape(v), np.int8) for k, v in flat.items()},
             _expected_shapes(module, kind), where=f"the parameters of the CLIP {kind} tower")
  tensors = {}
  for p, v in flat.items():
    a = np.asarray(jax.device_get(v))
    if dtype is not None:
      a = a.astype(dtype)
    tensors[flax_to_hf_name(p, kind)] = np.ascontiguousarray(_to_hf(p, a))
  return tensors


def _load(path: str | os.PathLike, kind: str, with_projection: bool | None,
          param_dtype: Any, dtype: Any):
  path = pathlib.Path(path)
  raw_cfg = _read_config(path)
  full_model = raw_cfg.get("model_type") == "clip"
  cfg_cls, model_cls = ((CLIPVisionConfig, CLIPVisionModel) if kind == "vision"
                        else (CLIPTextConfig, CLIPTextModel))
  try:
    config = cfg_cls.from_hf(raw_cfg)
  except (TypeError, ValueError) as e:
    raise WeightsError(f"config.json of {str(path)!r} is not a CLIP {kind} config: {e}") from e
  tensors = _tower_tensors(read_weights(path), kind, full_model)
  _, proj, _ = _TOWERS[kind]
  has_proj = f"{proj}.weight" in tensors
  if with_projection is None:
    with_projection = has_proj
  elif not with_projection and has_proj:
    tensors.pop(f"{proj}.weight")  # explicitly asked for the tower without its projection
  module = model_cls(config, with_projection=bool(with_projection), dtype=dtype,
                     param_dtype=param_dtype)
  return module, hf_to_flax(tensors, module, where=str(path))


def _save(module: nn.Module, params: Any, path: str | os.PathLike, kind: str,
          max_shard_bytes: int | None, dtype: Any) -> pathlib.Path:
  if _kind(module) != kind:
    raise TypeError(f"save_clip_{kind} needs a CLIP {kind} module, got {type(module).__name__}")
  path = pathlib.Path(path)
  tensors = flax_to_hf(module, params, dtype)
  base = "CLIPVisionModel" if kind == "vision" else "CLIPTextModel"
  arch = base + ("WithProjection" if module.with_projection else "")
  cfg = module.config.to_hf(arch)
  cfg["dtype"] = str(next(iter(tensors.values())).dtype)
  path.mkdir(parents=True, exist_ok=True)
  write_weights(tensors, path, filename="model.safetensors", max_shard_bytes=max_shard_bytes)
  write_json(cfg, path / "config.json")
  return path


# ----------------------------------------------------------------------------- public API

def load_clip_vision(path: str | os.PathLike, *, with_projection: bool | None = None,
                     param_dtype: Any = jnp.float32, dtype: Any = jnp.float32):
  """HF folder -> `(CLIPVisionModel, params)`; use as `module.apply({"params": params}, x)`.

  `with_projection=None` keeps `visual_projection` when the folder has it (WithProjection or
  full CLIPModel); True requires it; False leaves it out.
  """
  return _load(path, "vision", with_projection, param_dtype, dtype)


def load_clip_text(path: str | os.PathLike, *, with_projection: bool | None = None,
                   param_dtype: Any = jnp.float32, dtype: Any = jnp.float32):
  """HF folder -> `(CLIPTextModel, params)` (`with_projection` as for vision)."""
  return _load(path, "text", with_projection, param_dtype, dtype)


def save_clip_vision(module: CLIPVisionModel, params: Any, path: str | os.PathLike, *,
                     max_shard_bytes: int | None = None, dtype: Any = None) -> pathlib.Path:
  """Write a `CLIPVisionModel[WithProjection]` folder (per `module.with_projection`).

  `params` is the variables dict or the bare parameter tree; `dtype` casts the stored
  tensors (default: as they are); `max_shard_bytes` writes shards plus an index.
  """
  return _save(module, params, path, "vision", max_shard_bytes, dtype)


def save_clip_text(module: CLIPTextModel, params: Any, path: str | os.PathLike, *,
                   max_shard_bytes: int | None = None, dtype: Any = None) -> pathlib.Path:
  """Write a `CLIPTextModel[WithProjection]` folder (arguments as `save_clip_vision`)."""
  return _save(module, params, path, "text", max_shard_bytes, dtype)
