"""Meshes, logical-axis rules and sharded initialisation.

Parameters are annotated with logical axis names (`vitron_jax.nn.layers`); a *rule preset*
maps those names to the physical mesh axes `data`, `fsdp` and `tensor`:

* ``"data"``        pure data parallelism: parameters replicated, batch over every axis;
* ``"fsdp"``        parameters sharded along their model width over `fsdp` (ZeRO-3 style);
* ``"fsdp_tensor"`` fsdp plus Megatron-style tensor parallelism over `tensor`
                    (heads, ffn width and vocabulary split).

`sharded_init` follows eval_shape -> shardings -> `jit(init, out_shardings=...)`, so a
full-size model is never materialised on one device.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
Rules = tuple[tuple[str, Any], ...]

_BATCH = ("data", "fsdp")
RULE_PRESETS: dict[str, Rules] = {
    "data": (
        ("batch", ("data", "fsdp", "tensor")),
    ),
    "fsdp": (
        ("batch", ("data", "fsdp", "tensor")),
        ("embed", "fsdp"),
        ("conv_out", "fsdp"),
    ),
    "fsdp_tensor": (
        ("batch", _BATCH),
        ("embed", "fsdp"),
        ("conv_out", "fsdp"),
        ("mlp", "tensor"),
        ("heads", "tensor"),
        ("vocab", "tensor"),
        ("act_heads", "tensor"),
        ("act_mlp", "tensor"),
        ("act_vocab", "tensor"),
    ),
}


def rules_for(preset: str | Sequence[tuple[str, Any]]) -> Rules:
  """Rules from a preset name or an explicit list of (logical, mesh axes) pairs."""
  if isinstance(preset, str):
    if preset not in RULE_PRESETS:
      raise ValueError(f"unknown sharding rule preset {preset!r}; expected one of "
                       f"{sorted(RULE_PRESETS)}")
    return RULE_PRESETS[preset]
  return tuple((k, v) for k, v in preset)


def make_mesh(shape: Mapping[str, int] | None = None,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Mesh over axes (data, fsdp, tensor); one axis may be -1 to take the remaining devices."""
  shape = dict(shape or {"data": -1})
  unknown = set(shape) - set(MESH_AXES)
  if unknown:
    raise ValueError(f"mesh axes {sorted(unknown)} are not known; expected a subset of "
                     f"{MESH_AXES}")
  devices = list(devices if devices is not None else jax.devices())
  sizes = [int(shape.get(a, 1)) for a in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f"mesh shape {shape}: at most one axis may be -1")
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(f"mesh shape {shape} does not divide {len(devices)} devices")
    sizes[sizes.index(-1)] = len(devices) // known
  if int(np.prod(sizes)) != len(devices):
    raise ValueError(f"mesh shape {dict(zip(MESH_AXES, sizes))} needs {int(np.prod(sizes))} "
                     f"devices, but {len(devices)} are available")
  dev = np.asarray(devices).reshape(sizes)
  return Mesh(dev, MESH_AXES)


def logical_sharding(mesh: Mesh, rules: Rules, *logical_axes) -> NamedSharding:
  """NamedSharding for one array given its logical axis names (None = replicated dim)."""
  spec = nn.logical_to_mesh_axes(logical_axes, rules)
  return NamedSharding(mesh, spec)


def batch_sharding(mesh: Mesh, rules: Rules, ndim: int) -> NamedSharding:
  """Shard the leading (batch) dimension per the rules, replicate the rest."""
  return logical_sharding(mesh, rules, "batch", *([None] * (ndim - 1)))


def _fit_spec(spec: P, shape: tuple[int, ...], mesh: Mesh) -> P:
  """Drop mesh axes from dimensions they do not divide (e.g. 4 latent channels over fsdp=8).

  Such a dimension is replicated instead; everything else keeps its sharding. This keeps one
  rule set valid for full-size and tiny models alike.
  """
  out = []
  for i, axes in enumerate(tuple(spec) + (None,) * (len(shape) - len(spec))):
    if axes is None:
      out.append(None)
      continue
    names = (axes,) if isinstance(axes, str) else tuple(axes)
    size = int(np.prod([mesh.shape[a] for a in names]))
    out.append(axes if shape[i] % size == 0 else None)
  return P(*out)


def param_shardings(abstract_boxed: Any, mesh: Mesh, rules: Rules) -> Any:
  """Shardings (plain pytree) for an `eval_shape`d tree of boxed (logically annotated) params.

  A mesh axis that does not divide a parameter dimension is dropped for that dimension.
  """
  specs = nn.get_partition_spec(abstract_boxed)
  shardings = nn.logical_to_mesh_sharding(specs, mesh, rules)
  shapes = nn.meta.unbox(abstract_boxed)
  return jax.tree_util.tree_map(
      lambda sh, x: NamedSharding(mesh, _fit_spec(sh.spec, tuple(x.shape), mesh)),
      shardings, shapes, is_leaf=lambda x: isinstance(x, NamedSharding))


def sharded_init(init_fn: Callable[..., Any], mesh: Mesh, rules: Rules, *args) -> tuple[Any, Any]:
  """Run `init_fn(*args)` directly into its shardings; returns (plain params, shardings).

  `init_fn` returns a tree of `nn.LogicallyPartitioned` boxes (what `Module.init` gives when
  params are annotated). Nothing is materialised on a single device first.
  """
  abstract = jax.eval_shape(init_fn, *args)
  shardings = param_shardings(abstract, mesh, rules)

  def unboxed(*a):
    return nn.meta.unbox(init_fn(*a))

  params = jax.jit(unboxed, out_shardings=shardings)(*args)
  return params, shardings


def count_params(tree: Any) -> int:
  """Number of scalars in a (possibly abstract or boxed) parameter tree."""
  tree = nn.meta.unbox(tree)
  return int(sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree)))


def maybe_initialize_distributed(coordinator_address: str | None = None,
                                 num_processes: int | None = None,
                                 process_id: int | None = None,
                                 enabled: bool = False) -> bool:
  """Call `jax.distributed.initialize` when asked (config flag or `VITRON_MULTIHOST=1`).

  With no explicit address the JAX auto-detection runs (TPU pods, SLURM, Open MPI); a second
  call is a no-op. Returns whether the runtime is now multi-process.
  """
  enabled = enabled or os.environ.get("VITRON_MULTIHOST", "") == "1"
  if not enabled:
    return False
  if jax.distributed.is_initialized():  # e.g. a run's stages initialised it already
    return jax.process_count() > 1
  kwargs = {}
  if coordinator_address:
    kwargs["coordinator_address"] = coordinator_address
  if num_processes is not None:
    kwargs["num_processes"] = int(num_processes)
  if process_id is not None:
    kwargs["process_id"] = int(process_id)
  jax.distributed.initialize(**kwargs)
  logging.info("jax.distributed: process %d of %d, %d global devices", jax.process_index(),
               jax.process_count(), jax.device_count())
  return jax.process_count() > 1


def replicate_like(params: Any, tree: Any) -> Any:
  """`tree` (host numpy, the same on every process) replicated over the mesh `params` live on,
  so a jitted evaluation can mix them multi-host; unchanged when `params` are not on a mesh."""
  leaf = jax.tree_util.tree_leaves(params)[0]
  mesh = getattr(getattr(leaf, "sharding", None), "mesh", None)
  if mesh is None:
    return tree
  return jax.device_put(tree, NamedSharding(mesh, P()))
