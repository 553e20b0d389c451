"""VITRON's own heads <-> safetensors folders that PyTorch loads (`convert.torch_heads`).

The LLM, CLIP tower and backends have their own converters; this writes the parts that exist
only in VITRON, one file per head, with PyTorch names (a file's keys are the `state_dict` of
the matching `torch_heads` module; Dense `kernel` -> Linear `weight` transposed, `layers_{i}`
-> `layers.{i}`, `queries_{m}` -> `queries.{m}`):

    mm_projector.safetensors     frontend/mm_projector     LLaVA `mm_projector.{i}` names
    region_encoder.safetensors   frontend/region_encoder
    hybrid_head.safetensors      head (query banks, task/shared projections, projectors, gates)
    discriminator.safetensors    discriminator (only when synergy is on)
    heads.json                   every tensor's shape, and each module's constructor config

    save_heads(params, vitron_config, "out/heads")
    params["head"] = load_heads("out/heads", vitron_config)["head"]   # etc.
"""
from __future__ import annotations

import functools
import json
import os
import pathlib
import re
from typing import Any, Mapping

import flax.linen as nn
import jax
import numpy as np
from safetensors.numpy import load_file

from vitron_jax.convert.safetensors_io import (WeightsError, check_safetensors_file, write_json,
                                               write_weights)
from vitron_jax.convert.tree import check_keys, flatten, unflatten
from vitron_jax.models.condition_projector import ConditionProjector
from vitron_jax.models.vitron import Vitron, dummy_batch
from vitron_jax.models.vitron_config import VitronConfig

INDEX = "heads.json"
FORMAT = "vitron_heads"
VERSION = 1
# head -> where its parameters sit in the Vitron tree
TREE_PATHS = {"mm_projector": ("frontend", "mm_projector"),
              "region_encoder": ("frontend", "region_encoder"),
              "hybrid_head": ("head",),
              "discriminator": ("discriminator",)}
_INDEXED = re.compile(r"^(layers|layer_norm|layer_proj)_(\d+)$")
_PER_MODULE = ("queries", "task_proj", "projector", "gate")


def has_discriminator(config: VitronConfig) -> bool:
  return config.synergy.mode != "off" and config.head.uses_signals


def head_configs(config: VitronConfig) -> dict[str, dict[str, Any]]:
  """Constructor kwargs of each exported `torch_heads` module (JSON types)."""
  fe, hd, s = config.frontend, config.head, config.synergy
  out = {
      "mm_projector": {"kind": fe.projector, "in_features": fe.vision.hidden_size,
                       "out_features": fe.llm_hidden},
      "region_encoder": {"in_features": fe.vision.hidden_size, "out_features": fe.llm_hidden,
                         "num_layers": len(fe.region_layers), "tokens": fe.region_tokens,
                         "box_freqs": fe.box_freqs, "region_layers": list(fe.region_layers)},
      "hybrid_head": {
          "llm_hidden": config.llm.hidden_size, "modules": list(hd.modules),
          "num_queries": list(hd.num_queries),
          "condition_shapes": [list(c) for c in hd.condition_shapes], "routing": hd.routing,
          "hybrid_combine": hd.hybrid_combine, "task_dim": hd.task_dim,
          "shared_dim": hd.shared_dim, "projector_dim": hd.projector_dim,
          "projector_depth": hd.projector_depth, "projector_heads": hd.projector_heads,
          "projector_mlp_ratio": ConditionProjector.mlp_ratio},
  }
  if has_discriminator(config):
    out["discriminator"] = {"num_tasks": len(hd.modules), "in_features": hd.shared_dim,
                            "d_model": s.d_model, "depth": s.depth, "num_heads": s.num_heads,
                            "mlp_ratio": s.mlp_ratio}
  return out


@functools.lru_cache(maxsize=8)
def _abstract_params(config: VitronConfig) -> dict[str, jax.ShapeDtypeStruct]:
  """Flat `{flax_path: ShapeDtypeStruct}` of the whole model (allocates nothing)."""
  batch = dummy_batch(config, 1, abstract=True)
  natives = {m: jax.ShapeDtypeStruct((1, n, w), np.float32)
             for m, (n, w) in zip(config.head.modules, config.head.condition_shapes)}
  tree = jax.eval_shape(lambda k, b, n: Vitron(config).init(k, b, natives=n),
                        jax.random.key(0), batch, natives)
  return flatten(nn.meta.unbox(tree["params"]))


def _torch_name(head: str, path: tuple[str, ...], modules: tuple[str, ...]) -> tuple[str, bool]:
  """Flax path inside a head -> (PyTorch name, transpose?)."""
  if head == "mm_projector":  # LLaVA's nn.Sequential: layers_{i} -> {i}
    path = tuple(p[len("layers_"):] if p.startswith("layers_") else p for p in path)
  parts = []
  for seg in path:
    m = _INDEXED.match(seg)
    if m:
      seg = f"{m.group(1)}.{m.group(2)}"
    elif head == "hybrid_head":
      seg = next((f"{p}.{mod}" for p in _PER_MODULE for mod in modules
                  if seg == f"{p}_{mod}"), seg)
    parts.append(seg)
  if parts[-1] == "kernel":
    return ".".join(parts[:-1] + ["weight"]), True
  return ".".join(parts), False


@functools.lru_cache(maxsize=8)
def head_layout(config: VitronConfig) -> dict[str, dict[str, tuple[str, bool, tuple, np.dtype]]]:
  """`{head: {flax_path_in_head: (torch_name, transpose, flax_shape, dtype)}}`."""
  flat = _abstract_params(config)
  out = {}
  for head in head_configs(config):
    prefix = "/".join(TREE_PATHS[head]) + "/"
    layout = {}
    for path, a in flat.items():
      if path.startswith(prefix):
        sub = path[len(prefix):]
        name, tr = _torch_name(head, tuple(sub.split("/")), config.head.modules)
        layout[sub] = (name, tr, tuple(a.shape), np.dtype(a.dtype))
    names = [v[0] for v in layout.values()]
    if len(set(names)) != len(names):
      raise AssertionError(f"{head}: PyTorch names collide: {sorted(names)}")
    out[head] = layout
  return out


def _subtree(params: Mapping[str, Any], path: tuple[str, ...]) -> Mapping[str, Any]:
  for p in path:
    params = params.get(p, {}) if isinstance(params, Mapping) else {}
  return params


def save_heads(params: Mapping[str, Any], config: VitronConfig,
               dst_dir: str | os.PathLike) -> list[pathlib.Path]:
  """Write each head of the Vitron `params` (bare tree) as `<head>.safetensors` plus
  `heads.json` (written last). Raises WeightsMismatchError if the params do not fit `config`."""
  dst = pathlib.Path(dst_dir)
  dst.mkdir(parents=True, exist_ok=True)
  params = nn.meta.unbox(params)
  index = {"format": FORMAT, "version": VERSION, "config": head_configs(config), "files": {}}
  files = []
  for head, layout in head_layout(config).items():
    tree = TREE_PATHS[head]
    flat = flatten(_subtree(params, tree))
    check_keys(flat, {k: v[2] for k, v in layout.items()}, f"params[{'/'.join(tree)}]")
    tensors, doc = {}, {}
    for sub, (name, tr, _, _) in layout.items():
      a = np.asarray(jax.device_get(flat[sub]))
      tensors[name] = a.T if tr else a
      doc[name] = {"shape": list(tensors[name].shape), "dtype": str(a.dtype),
                   "flax": "/".join(tree + (sub,)), "transposed": tr}
    path, = write_weights(tensors, dst, filename=f"{head}.safetensors")
    files.append(path)
    index["files"][path.name] = {"head": head, "tensors": dict(sorted(doc.items()))}
  files.append(write_json(index, dst / INDEX))
  return files


def _read_index(src: pathlib.Path) -> dict[str, Any]:
  if not src.is_dir():
    raise WeightsError(f"heads folder {str(src)!r} does not exist or is not a folder")
  path = src / INDEX
  if not path.is_file():
    raise WeightsError(f"{str(src)!r} has no {INDEX}; expected a folder written by save_heads")
  try:
    with open(path) as f:
      index = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise WeightsError(f"{str(path)!r} is not readable JSON: {e}") from e
  if not isinstance(index, dict) or index.get("format") != FORMAT:
    raise WeightsError(f"{str(path)!r} is not a {FORMAT!r} index")
  return index


def _config_diffs(saved: Mapping[str, Any], want: Mapping[str, Any]) -> list[str]:
  want = json.loads(json.dumps(want))
  diffs = [f"{h}: only in the {'folder' if h in saved else 'config'}"
           for h in sorted(set(saved) ^ set(want))]
  for h in sorted(set(saved) & set(want)):
    for k in sorted(set(saved[h]) | set(want[h])):
      if saved[h].get(k) != want[h].get(k):
        diffs.append(f"{h}.{k}: folder {saved[h].get(k)!r}, config {want[h].get(k)!r}")
  return diffs


def load_heads(src_dir: str | os.PathLike, config: VitronConfig) -> dict[str, Any]:
  """Invert `save_heads`: the heads' subtree of the Vitron params (numpy, exact dtypes),
  e.g. `{"frontend": {"mm_projector": ..., "region_encoder": ...}, "head": ...,
  "discriminator": ...}`. Raises WeightsError naming the missing/unreadable file, the config
  field that differs, or (WeightsMismatchError) every missing/unexpected/mis-shaped tensor."""
  src = pathlib.Path(src_dir)
  index = _read_index(src)
  diffs = _config_diffs(index.get("config", {}), head_configs(config))
  if diffs:
    raise WeightsError(f"{str(src / INDEX)!r} was written for another config:\n  "
                       + "\n  ".join(diffs))
  flat = {}
  for head, layout in head_layout(config).items():
    path = src / f"{head}.safetensors"
    if not path.is_file():
      raise WeightsError(f"heads folder {str(src)!r} is missing {path.name} (head {head!r})")
    check_safetensors_file(path)
    try:
      tensors = load_file(str(path))
    except Exception as e:  # safetensors raises its own error type on truncated files
      raise WeightsError(f"{str(path)!r} is not a readable safetensors file "
                         f"(truncated or corrupt?): {e}") from e
    check_keys(tensors, {n: tuple(reversed(s)) if tr else s
                         for n, tr, s, _ in layout.values()}, str(path))
    for sub, (name, tr, _, dtype) in layout.items():
      a = tensors[name].T if tr else tensors[name]
      flat["/".join(TREE_PATHS[head] + (sub,))] = np.array(a, dtype=dtype, order="C")
  return unflatten(flat)
