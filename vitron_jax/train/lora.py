"""Low-rank adapters (LoRA) on any task's kernels, without touching the model code.

`LoraTask(task, rank, alpha, targets)` wraps a task: its parameters become
``{"model": <the task's params>, "lora": {<path of each target kernel>: {"lora_a", "lora_b"}}}``
and its loss runs the wrapped loss on the *merged* kernels
``kernel + (alpha / rank) * lora_a @ lora_b`` (computed in the step, so the model sees plain
kernels). Targets are kernels whose path (``"layers/self_attn/q_proj/kernel"``) matches the
`targets` regex; the last two axes of a kernel are (in, out), leading axes (the scanned
``layers`` axis) are kept: ``lora_a [..., in, r]`` (normal, std 1/sqrt(in)), ``lora_b
[..., r, out]`` (zeros, so training starts from the base model). Logical axis names follow the
kernel's, so the adapters shard like their kernels. With `freeze_base` the trainer freezes
``^model/`` (no optimizer state for the base). `merge_lora(params)` gives the plain tree.
"""
from __future__ import annotations

import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vitron_jax.train.optim import path_str

SEP = "/"


def _targets(tree: Any, pattern: re.Pattern) -> dict[str, Any]:
  """{path: leaf} of matching leaves (leaves may be boxed)."""
  out = {}
  flat = jax.tree_util.tree_flatten_with_path(
      tree, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))[0]
  for path, leaf in flat:
    p = path_str(path)
    if pattern.search(p):
      out[p] = leaf
  return out


def init_lora(params: Any, rng: jax.Array, *, rank: int, targets: str) -> dict[str, Any]:
  """Adapters for every target kernel of `params` (boxed or plain): {path: {a, b}}."""
  if rank <= 0:
    raise ValueError(f"lora.rank must be positive, got {rank}")
  pattern = re.compile(targets)
  found = _targets(params, pattern)
  if not found:
    paths = [path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(nn.meta.unbox(
        params))[0]][:4]
    raise ValueError(f"lora.targets {targets!r} matches no parameter; paths look like {paths}")
  out = {}
  for i, (path, leaf) in enumerate(sorted(found.items())):
    boxed = isinstance(leaf, nn.LogicallyPartitioned)
    value = leaf.value if boxed else leaf
    if value.ndim < 2:
      raise ValueError(f"lora target {path!r} has shape {value.shape}; need a [.., in, out] "
                       f"kernel")
    lead, d_in, d_out = value.shape[:-2], value.shape[-2], value.shape[-1]
    a = jax.random.normal(jax.random.fold_in(rng, i), lead + (d_in, rank), jnp.float32)
    a = a / jnp.sqrt(d_in)
    b = jnp.zeros(lead + (rank, d_out), jnp.float32)
    if boxed:
      names = tuple(leaf.names)
      a = nn.LogicallyPartitioned(a, names[:-1] + (None,), mesh=leaf.mesh,
                                  rules=leaf.rules)
      b = nn.LogicallyPartitioned(b, names[:-2] + (None, names[-1]), mesh=leaf.mesh,
                                  rules=leaf.rules)
    out[path.replace(SEP, "|")] = {"lora_a": a, "lora_b": b}
  return out


def merge_lora(params: dict[str, Any], alpha: float, rank: int) -> Any:
  """``{"model", "lora"}`` -> the model's plain params with the adapters added."""
  scale = float(alpha) / float(rank)
  model, lora = params["model"], params["lora"]
  deltas = {k.replace("|", SEP): v for k, v in lora.items()}

  def add(path, x):
    p = path_str(path)
    if p not in deltas:
      return x
    d = jnp.einsum("...ir,...ro->...io", deltas[p]["lora_a"].astype(jnp.float32),
                   deltas[p]["lora_b"].astype(jnp.float32))
    return (x.astype(jnp.float32) + scale * d).astype(x.dtype)

  missing = set(deltas) - set(path_str(p) for p, _ in
                              jax.tree_util.tree_flatten_with_path(model)[0])
  if missing:
    raise ValueError(f"lora adapters for unknown parameters {sorted(missing)}")
  return jax.tree_util.tree_map_with_path(add, model)


def _prefixed(rx: str, prefix: str) -> str:
  if rx.startswith("^"):
    return f"^{prefix}/(?:{rx[1:]})"
  return f"^{prefix}/.*?(?:{rx})"


class LoraTask:
  """A task whose kernels carry LoRA adapters (see the module docstring)."""

  def __init__(self, task: Any, *, rank: int, alpha: float, targets: str):
    self.task, self.rank, self.alpha, self.targets = task, int(rank), float(alpha), targets
    self.name = f"{task.name}+lora"

  def init(self, rng: jax.Array) -> Any:
    r_model, r_lora = jax.random.split(rng)
    model = self.task.init(r_model)
    return {"model": model, "lora": init_lora(model, r_lora, rank=self.rank,
                                              targets=self.targets)}

  def merged(self, params: Any) -> Any:
    return merge_lora(params, self.alpha, self.rank)

  def loss(self, params, batch, rng):
    return self.task.loss(self.merged(params), batch, rng)

  def batch_spec(self):
    return self.task.batch_spec()

  def make_data(self, global_batch, process_index, process_count):
    return self.task.make_data(global_batch, process_index, process_count)

  def components(self) -> dict[str, str]:
    comps = {k: _prefixed(v, "model") for k, v in self.task.components().items()}
    comps["lora"] = r"^lora/"
    return comps

  def save_assets(self, workdir: str) -> None:
    if hasattr(self.task, "save_assets"):
      self.task.save_assets(workdir)

  def evaluate(self, params, step, workdir=None):
    if not hasattr(self.task, "evaluate"):
      return {}
    return self.task.evaluate(self.merged(params), step, workdir)
