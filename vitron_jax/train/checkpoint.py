"""Checkpoints with orbax `CheckpointManager`: one item per model component.

A checkpoint of step s is the folder `<workdir>/checkpoints/<s>/` holding the items

    params_<component>  each model component (task.components(): e.g. llm, vision, heads,
                        each backend), sharded arrays (OCDBT); restorable into any mesh
    opt_state           the optimizer state as nested dicts of its key path (frozen
                        parameters hold none)
    train               {"step", "rng"}
    data                the data iterator's JSON state, one file per process
    config              the run's config as JSON
    meta                step, task, components, process count, wall time

Saves are asynchronous (`checkpoint.async_save`); `keep` bounds how many stay. `restore`
walks back from the newest step: a checkpoint that cannot be read (truncated or corrupt
files) is reported by name, moved aside to `<s>.corrupt`, and the previous one is used. A
checkpoint that is readable but does not fit the run (other model, missing component) is an
error, not a fallback: it names every missing, unexpected and mis-shaped array.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import time
from typing import Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import traverse_util

from vitron_jax.train.optim import key_name, path_str
from vitron_jax.train.state import TrainState

log = logging.getLogger(__name__)


class CheckpointMismatchError(ValueError):
  """A readable checkpoint does not fit the run's state (names every problem)."""


class IncompleteCheckpointError(RuntimeError):
  """An item of a checkpoint is missing (treated like corruption: the previous one is used)."""


class NoUsableCheckpointError(RuntimeError):
  """Every checkpoint in the folder is unreadable."""


# ------------------------------------------------------------------- per-process data item


class DataStateHandler(ocp.CheckpointHandler):
  """Each process writes / reads its own `process_<i>-of-<n>.json` (the iterator state)."""

  def save(self, directory: epath.Path, args: "DataSave"):
    i, n = jax.process_index(), jax.process_count()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"process_{i}-of-{n}.json").write_text(json.dumps(args.state))

  def restore(self, directory: epath.Path, args: "DataRestore | None" = None):
    i, n = jax.process_index(), jax.process_count()
    path = directory / f"process_{i}-of-{n}.json"
    if not path.exists():
      found = sorted(p.name for p in directory.iterdir()) if directory.exists() else []
      raise CheckpointMismatchError(
          f"data state {path} does not exist (found {found}); the checkpoint was written by "
          f"another number of processes than this run's {n}")
    return json.loads(path.read_text())

  def metadata(self, directory):
    return None

  def structure(self, directory):
    return None

  def finalize(self, directory):
    pass

  def close(self):
    pass


@ocp.args.register_with_handler(DataStateHandler, for_save=True)
@dataclasses.dataclass
class DataSave(ocp.args.CheckpointArgs):
  state: Any


@ocp.args.register_with_handler(DataStateHandler, for_restore=True)
@dataclasses.dataclass
class DataRestore(ocp.args.CheckpointArgs):
  pass


# ----------------------------------------------------------------------- tree <-> items


def split_components(params: Mapping[str, Any], components: Mapping[str, str]
                     ) -> dict[str, dict]:
  """Split a nested-dict param tree into {component: nested dict} by path regexes; every
  parameter must match exactly one component."""
  flat = traverse_util.flatten_dict(params, sep="/")
  pats = {name: re.compile(rx) for name, rx in components.items()}
  parts: dict[str, dict] = {name: {} for name in components}
  problems = []
  for path, leaf in flat.items():
    hits = [name for name, rx in pats.items() if rx.search(path)]
    if len(hits) != 1:
      problems.append(f"{path!r} matches components {hits}")
      continue
    parts[hits[0]][path] = leaf
  if problems:
    raise ValueError("every parameter must belong to exactly one checkpoint component "
                     f"(task.components()={dict(components)}): " + "; ".join(problems[:10]))
  return {name: traverse_util.unflatten_dict(p, sep="/") for name, p in parts.items()}


def join_components(parts: Mapping[str, Mapping]) -> dict:
  flat = {}
  for p in parts.values():
    flat.update(traverse_util.flatten_dict(p, sep="/"))
  return traverse_util.unflatten_dict(flat, sep="/")


def tree_to_nested(tree: Any) -> dict:
  """Any pytree -> nested dicts keyed by its key-path names (lists/tuples by index)."""
  flat = {tuple(key_name(k) for k in path): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}
  return traverse_util.unflatten_dict(flat) if flat else {}


def nested_to_tree(nested: Mapping, like: Any) -> Any:
  """Inverse of `tree_to_nested` given a tree of the same structure."""
  flat = traverse_util.flatten_dict(dict(nested)) if nested else {}
  paths, treedef = jax.tree_util.tree_flatten_with_path(like)
  leaves = [flat[tuple(key_name(k) for k in path)] for path, _ in paths]
  return jax.tree_util.tree_unflatten(treedef, leaves)


def _shape_problems(meta_tree: Any, abstract: Any, item: str) -> list[str]:
  got = {path_str(p): tuple(getattr(m, "shape", ())) for p, m in
         jax.tree_util.tree_flatten_with_path(meta_tree)[0]}
  want = {path_str(p): tuple(a.shape) for p, a in
          jax.tree_util.tree_flatten_with_path(abstract)[0]}
  out = [f"{item}: missing {k} {want[k]}" for k in sorted(set(want) - set(got))]
  out += [f"{item}: unexpected {k} {got[k]}" for k in sorted(set(got) - set(want))]
  out += [f"{item}: {k} has shape {got[k]}, expected {want[k]}" for k in sorted(set(got) &
                                                                            set(want))
          if got[k] != want[k]]
  return out


# ----------------------------------------------------------------------------- manager


class Checkpointer:
  """`CheckpointManager` over `<workdir>/checkpoints` with the items above."""

  def __init__(self, directory: str, components: Mapping[str, str], *, keep: int = 3,
               every_steps: int = 0, async_save: bool = True, config: Any = None):
    self.directory = os.path.abspath(directory)
    self.components = dict(components)
    self.every_steps = int(every_steps)
    self.async_save = bool(async_save)
    self.config_json = _config_json(config)
    self.corrupt: list[str] = []
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep if keep and keep > 0 else None, create=True,
        enable_async_checkpointing=async_save, cleanup_tmp_directories=True)
    handlers = {f"params_{n}": ocp.StandardCheckpointHandler() for n in self.components}
    handlers.update(opt_state=ocp.StandardCheckpointHandler(),
                    train=ocp.StandardCheckpointHandler(), data=DataStateHandler(),
                    config=ocp.JsonCheckpointHandler(), meta=ocp.JsonCheckpointHandler())
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_handlers=handlers)

  # -- saving ------------------------------------------------------------------------------
  def should_save(self, step: int) -> bool:
    return self.every_steps > 0 and step % self.every_steps == 0

  def save(self, state: TrainState, data_state: Any, *, extra_meta: Mapping | None = None,
           force: bool = False) -> bool:
    step = int(jax.device_get(state.step)) if not isinstance(state.step, int) else state.step
    if step in self.manager.all_steps():
      return False
    items = {f"params_{n}": ocp.args.StandardSave(p)
             for n, p in split_components(state.params, self.components).items()}
    items["opt_state"] = ocp.args.StandardSave(tree_to_nested(state.opt_state))
    items["train"] = ocp.args.StandardSave({"step": state.step, "rng": state.rng})
    items["data"] = DataSave(data_state)
    items["config"] = ocp.args.JsonSave(self.config_json)
    items["meta"] = ocp.args.JsonSave({"step": step, "components": self.components,
                                       "process_count": jax.process_count(),
                                       "time": time.time(), **dict(extra_meta or {})})
    saved = self.manager.save(step, args=ocp.args.Composite(**items), force=force)
    if saved:
      log.info("checkpoint %s/%d: saving%s", self.directory, step,
               " (async)" if self.async_save else "")
    return saved

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  # -- restoring ---------------------------------------------------------------------------
  def _check_structure(self, step: int, abstract: TrainState) -> None:
    parts = split_components(abstract.params, self.components)
    names = [f"params_{n}" for n in parts] + ["opt_state", "train", "data"]
    absent = [n for n in names if not os.path.isdir(os.path.join(self.step_dir(step), n))]
    if absent:
      raise IncompleteCheckpointError(f"checkpoint {self.step_dir(step)} lacks items {absent}")
    meta = self.manager.item_metadata(step)
    problems = []
    for name, sub in parts.items():
      item = f"params_{name}"
      problems += _shape_problems(getattr(meta[item], "tree", meta[item]), sub, item)
    m = meta["opt_state"]
    problems += _shape_problems(getattr(m, "tree", m), tree_to_nested(abstract.opt_state),
                                "opt_state")
    if problems:
      raise CheckpointMismatchError(
          f"checkpoint {self.step_dir(step)} does not fit this run ({len(problems)} "
          f"problems): " + "; ".join(problems[:30]))

  def _restore_step(self, step: int, abstract: TrainState) -> tuple[TrainState, Any]:
    self._check_structure(step, abstract)
    parts = split_components(abstract.params, self.components)
    items = {f"params_{n}": ocp.args.StandardRestore(p) for n, p in parts.items()}
    items["opt_state"] = ocp.args.StandardRestore(tree_to_nested(abstract.opt_state))
    items["train"] = ocp.args.StandardRestore({"step": abstract.step, "rng": abstract.rng})
    items["data"] = DataRestore()
    r = self.manager.restore(step, args=ocp.args.Composite(**items))
    params = join_components({n: r[f"params_{n}"] for n in parts})
    params = nested_to_tree(params, abstract.params)
    opt_state = nested_to_tree(r["opt_state"], abstract.opt_state)
    state = TrainState(step=r["train"]["step"], params=params, opt_state=opt_state,
                       rng=r["train"]["rng"])
    got = int(jax.device_get(state.step))
    if got != step:
      raise CheckpointMismatchError(f"checkpoint {self.step_dir(step)} holds step {got}")
    return state, r["data"]

  def _set_aside(self, step: int, err: BaseException) -> None:
    path = self.step_dir(step)
    msg = f"checkpoint {path} is unreadable ({type(err).__name__}: {str(err)[:300]})"
    self.corrupt.append(msg)
    log.error("%s; using the previous one", msg)
    if jax.process_index() == 0 and os.path.isdir(path):
      dest = f"{path}.corrupt"
      k = 1
      while os.path.exists(dest):
        dest, k = f"{path}.corrupt{k}", k + 1
      os.replace(path, dest)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
      multihost_utils.sync_global_devices(f"set_aside_{step}")
    self.manager.reload()

  def restore_latest(self, abstract: TrainState) -> tuple[TrainState, Any, int] | None:
    """(state, data state, step) from the newest readable checkpoint, or None if there is
    none. Unreadable ones are reported, moved aside, and skipped."""
    steps = self.all_steps()
    for step in reversed(steps):
      try:
        state, data = self._restore_step(step, abstract)
      except CheckpointMismatchError:
        raise
      except Exception as e:  # pylint: disable=broad-except  (orbax/tensorstore raise many)
        self._set_aside(step, e)
        continue
      return state, data, step
    if steps:
      raise NoUsableCheckpointError(f"no readable checkpoint in {self.directory}: " +
                                    " | ".join(self.corrupt))
    return None

  def restore_step(self, step: int, abstract: TrainState) -> tuple[TrainState, Any]:
    return self._restore_step(step, abstract)


def load_params(step_dir: str, abstract_params: Any, components: Mapping[str, str]
                ) -> tuple[Any, list[str]]:
  """Initialise parameters from another run's checkpoint folder (`checkpoint.init_from`).

  Every `params_<component>` item of `step_dir` that this run also has is restored into this
  run's shardings; a parameter path may carry or drop a leading ``model/`` (LoRA wrapping).
  Returns (a tree like `abstract_params` with `None` where nothing was loaded, the loaded
  path strings). Unexpected or mis-shaped arrays raise `CheckpointMismatchError`.
  """
  if not os.path.isdir(step_dir):
    raise FileNotFoundError(f"checkpoint.init_from={step_dir!r} is not a checkpoint step folder")
  want = {path_str(p): a for p, a in jax.tree_util.tree_flatten_with_path(abstract_params)[0]}
  loaded: dict[str, Any] = {}
  problems: list[str] = []
  ckptr = ocp.StandardCheckpointer()
  for name in components:
    item = os.path.join(step_dir, f"params_{name}")
    if not os.path.isdir(item):
      continue
    meta = ckptr.metadata(item)
    tree = getattr(meta, "item_metadata", meta)
    tree = getattr(tree, "tree", tree)
    flat = {path_str(p): m for p, m in jax.tree_util.tree_flatten_with_path(tree)[0]}
    target, where = {}, {}
    for p, m in flat.items():
      mine = p if p in want else f"model/{p}" if f"model/{p}" in want else \
          p[len("model/"):] if p.startswith("model/") and p[len("model/"):] in want else None
      if mine is None:
        problems.append(f"{item}: unexpected {p} {tuple(m.shape)}")
      elif tuple(m.shape) != tuple(want[mine].shape):
        problems.append(f"{item}: {p} has shape {tuple(m.shape)}, expected "
                        f"{tuple(want[mine].shape)}")
      else:
        target[p], where[p] = want[mine], mine
    if problems:
      continue
    restored = ckptr.restore(item, traverse_util.unflatten_dict(target, sep="/"))
    for p, x in traverse_util.flatten_dict(restored, sep="/").items():
      loaded[where[p]] = x
  ckptr.close()
  if problems:
    raise CheckpointMismatchError(f"checkpoint.init_from {step_dir} does not fit this run: " +
                                  "; ".join(problems[:30]))
  if not loaded:
    raise CheckpointMismatchError(f"checkpoint.init_from {step_dir} has no parameter item of "
                                  f"this run's components {sorted(components)}")
  tree = jax.tree_util.tree_map_with_path(lambda p, _: loaded.get(path_str(p)), abstract_params)
  return tree, sorted(loaded)


def _config_json(config: Any) -> dict:
  if config is None:
    return {}
  if hasattr(config, "to_json_best_effort"):
    return json.loads(config.to_json_best_effort())
  return json.loads(json.dumps(config, default=str))


def read_config(step_dir: str) -> dict:
  """The config JSON stored in a checkpoint step folder."""
  path = os.path.join(step_dir, "config", "metadata")
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def numpy_params(state: TrainState) -> Any:
  return jax.tree_util.tree_map(np.asarray, jax.device_get(state.params))
