"""The train state and its shardings.

`TrainState(step, params, opt_state, rng)` is a plain pytree (flax struct): `step` int32
scalar, `params` the task's plain (unboxed) parameters, `opt_state` the optax state, `rng` raw
uint32 key data `[2]` (the step's key is `fold_in(rng, step)`, so no rng is carried between
steps and resume is exact).

Shardings come from the parameters' logical axis names and the configured rules; optimizer
leaves take the sharding of the parameter they mirror (matched by the trailing path and
shape: `mu/layers/mlp/up_proj/kernel` <- `layers/mlp/up_proj/kernel`), other leaves (step
counts) are replicated. Initialisation is `jit(init, out_shardings=...)` (one per group of
parameters, leaving out those loaded from elsewhere): nothing full-size is ever materialised on
one device.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Mapping

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from vitron_jax.nn import partitioning as PT
from vitron_jax.train.optim import key_name, param_paths, path_str


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array

  def step_rng(self) -> jax.Array:
    return jax.random.fold_in(jax.random.wrap_key_data(self.rng), self.step)


def _dict_suffix(path) -> tuple[str, ...]:
  """Trailing run of dict keys of a key path (what a param path looks like)."""
  out = []
  for k in reversed(path):
    if isinstance(k, jax.tree_util.DictKey):
      out.append(str(k.key))
    else:
      break
  return tuple(reversed(out))


def opt_state_shardings(abstract_opt_state: Any, abstract_params: Any, param_shardings: Any,
                        mesh: Mesh) -> Any:
  """Shardings for an optimizer state: a leaf mirroring a parameter (same trailing path and
  shape) takes its sharding, anything else is replicated."""
  by_path: dict[tuple[str, ...], tuple[tuple[int, ...], Any]] = {}
  flat_p = jax.tree_util.tree_flatten_with_path(abstract_params)[0]
  flat_s = jax.tree_util.tree_leaves(param_shardings)
  for (path, leaf), sh in zip(flat_p, flat_s):
    by_path[tuple(key_name(k) for k in path)] = (tuple(leaf.shape), sh)
  replicated = NamedSharding(mesh, P())

  def pick(path, leaf):
    suffix = _dict_suffix(path)
    for start in range(len(suffix)):
      hit = by_path.get(suffix[start:])
      if hit is not None and hit[0] == tuple(leaf.shape):
        return hit[1]
    return replicated

  return jax.tree_util.tree_map_with_path(pick, abstract_opt_state)


def abstract_params(init_fn: Callable[[jax.Array], Any], seed: int) -> Any:
  """`eval_shape` of the task's init: boxed abstract params."""
  return jax.eval_shape(init_fn, jax.random.key(seed))


def state_shardings(init_fn: Callable[[jax.Array], Any], optimizer: optax.GradientTransformation,
                    mesh: Mesh, rules: PT.Rules, seed: int = 0
                    ) -> tuple[TrainState, TrainState]:
  """(abstract state as ShapeDtypeStructs with shardings, shardings) of the train state."""
  boxed = abstract_params(init_fn, seed)
  p_shard = PT.param_shardings(boxed, mesh, rules)
  plain = nn.meta.unbox(boxed)
  abs_opt = jax.eval_shape(optimizer.init, plain)
  o_shard = opt_state_shardings(abs_opt, plain, p_shard, mesh)
  replicated = NamedSharding(mesh, P())
  shardings = TrainState(step=replicated, params=p_shard, opt_state=o_shard, rng=replicated)
  abs_state = TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=plain,
                         opt_state=abs_opt, rng=jax.ShapeDtypeStruct((2,), jnp.uint32))
  with_sh = jax.tree_util.tree_map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abs_state, shardings)
  return with_sh, shardings


def init_state(init_fn: Callable[[jax.Array], Any], optimizer: optax.GradientTransformation,
               shardings: TrainState, seed: int, *, given: Any = None,
               groups: Mapping[str, str] | None = None) -> TrainState:
  """A fresh train state, initialised directly into `shardings`.

  given: a tree like the params holding arrays where the values are already known (loaded from
    `checkpoint.init_from`) and None elsewhere; those leaves are taken as they are and their
    initialisers never run (XLA prunes what a jitted init does not return).
  groups: {name: path regex} (the task's checkpoint components): one jitted init per group
    instead of one for the whole tree. XLA's compile time grows faster than the program (the
    full PixelWorld VITRON with seven backends: 300 s as one program, 126 s as ten), and a
    group whose leaves are all given compiles nothing. The values are the same either way:
    every leaf comes from the same `init_fn(key)`.
  """
  key = jax.random.key(seed)
  pkey = jax.random.fold_in(key, 0)
  p_shard = shardings.params
  paths = param_paths(p_shard)
  shard_of = dict(zip(paths, jax.tree_util.tree_leaves(p_shard)))
  known: dict[str, Any] = {}
  if given is not None:
    flat = jax.tree_util.tree_flatten_with_path(given, is_leaf=lambda x: x is None)[0]
    known = {path_str(p): x for p, x in flat if x is not None}
  todo = [p for p in paths if p not in known]
  if groups:
    pats = [(name, re.compile(rx)) for name, rx in groups.items()]
    parts: dict[str, list[str]] = {}
    for p in todo:
      name = next((n for n, rx in pats if rx.search(p)), "")
      parts.setdefault(name, []).append(p)
    chunks = list(parts.values())
  else:
    chunks = [todo] if todo else []
  values = dict(known)
  for chunk in chunks:
    def make(k, chunk=tuple(chunk)):
      flat = jax.tree_util.tree_flatten_with_path(nn.meta.unbox(init_fn(k)))[0]
      by_path = {path_str(p): x for p, x in flat}
      return {p: by_path[p] for p in chunk}
    values.update(jax.jit(make, out_shardings={p: shard_of[p] for p in chunk})(pkey))
  params = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(p_shard),
                                        [values[p] for p in paths])
  opt_state = jax.jit(optimizer.init, out_shardings=shardings.opt_state)(params)
  rng = jax.jit(lambda: jax.random.key_data(jax.random.fold_in(key, 1)).astype(jnp.uint32),
                out_shardings=shardings.rng)()
  step = jax.device_put(jnp.zeros((), jnp.int32), shardings.step)
  return TrainState(step=step, params=params, opt_state=opt_state, rng=rng)
