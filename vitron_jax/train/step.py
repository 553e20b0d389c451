"""The train step: loss -> gradients of the trainable parameters -> optimizer update.

`make_train_step(...)` returns `step(state, batch) -> (state, metrics)`; `jit_train_step`
compiles it with the state's shardings in and out, the batch sharded over the "batch" rule,
the metrics replicated, and the state *donated*.

* Only trainable parameters are differentiated (frozen ones enter as constants; their
  gradient is an exact zero and they are copied through unchanged, bit for bit).
* Mixed precision: with `compute_dtype` (e.g. bfloat16) floating parameters are cast inside
  the differentiated function, so gradients and the optimizer stay in the parameters' fp32.
* Gradient accumulation over `accum_steps` micro-batches (`lax.scan`): micro-batch a takes
  rows `a, a + A, a + 2A, ...` of the global batch (each device keeps its own rows), and
  gradients, loss and metrics are averaged weighted by the task's ``metrics["weight"]``, so
  the result is that of the whole batch.

Metrics: ``loss``, ``grad_norm`` (of the trainable gradients, before clipping), ``lr``
(base schedule), ``weight`` (summed) and the task's other metrics (weighted means).
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from vitron_jax.nn import partitioning as PT
from vitron_jax.train import optim as O
from vitron_jax.train.state import TrainState


def cast_floating(tree: Any, dtype: Any) -> Any:
  dtype = jnp.dtype(dtype)
  return jax.tree_util.tree_map(
      lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def _micro(batch: Any, accum: int) -> Any:
  """`[G, ...]` -> `[A, G/A, ...]` where micro-batch a holds rows a, a+A, ... ."""
  def split(x):
    g = x.shape[0]
    if g % accum:
      raise ValueError(f"global batch {g} is not divisible by train.accum_steps={accum}")
    return jnp.swapaxes(x.reshape((g // accum, accum) + x.shape[1:]), 0, 1)
  return jax.tree_util.tree_map(split, batch)


def make_train_step(task: Any, optimizer: optax.GradientTransformation, trainable_mask: Any,
                    schedule: Callable[[Any], Any], *, accum_steps: int = 1,
                    compute_dtype: str = "float32"
                    ) -> Callable[[TrainState, Any], tuple[TrainState, dict]]:
  """See the module docstring. `trainable_mask` is a bool tree shaped like the params."""
  if accum_steps < 1:
    raise ValueError(f"train.accum_steps must be >= 1, got {accum_steps}")
  dt = jnp.dtype(compute_dtype)

  def loss_on(train, frozen, batch, rng):
    params = O.merge_trainable(train, frozen, trainable_mask)
    if dt != jnp.float32:
      params = cast_floating(params, dt)
    loss, metrics = task.loss(params, batch, rng)
    if "weight" not in metrics:
      raise ValueError(f"task {task.name!r}: loss metrics must hold 'weight' (what the mean "
                       f"is over); got {sorted(metrics)}")
    return loss.astype(jnp.float32), metrics

  grad_fn = jax.value_and_grad(loss_on, has_aux=True)

  def step(state: TrainState, batch: Any) -> tuple[TrainState, dict]:
    rng = state.step_rng()
    train, frozen = O.split_trainable(state.params, trainable_mask)
    if accum_steps == 1:
      (loss, metrics), grads = grad_fn(train, frozen, batch, rng)
      weight = metrics["weight"].astype(jnp.float32)
      extra = {k: v.astype(jnp.float32) for k, v in metrics.items() if k != "weight"}
    else:
      micro = _micro(batch, accum_steps)
      zeros_g = jax.tree_util.tree_map(lambda x: jnp.zeros(x.shape, jnp.float32), train)
      shapes = jax.eval_shape(lambda b: grad_fn(train, frozen, b, rng)[0][1],
                              jax.tree_util.tree_map(lambda x: x[0], micro))
      zeros_m = {k: jnp.zeros((), jnp.float32) for k in shapes}

      def body(carry, xs):
        acc_g, acc_l, acc_m = carry
        a, mb = xs
        (l, m), g = grad_fn(train, frozen, mb, jax.random.fold_in(rng, a))
        w = m["weight"].astype(jnp.float32)
        acc_g = jax.tree_util.tree_map(lambda s, x: s + w * x.astype(jnp.float32), acc_g, g)
        acc_m = {k: acc_m[k] + (w if k == "weight" else w * m[k].astype(jnp.float32))
                 for k in acc_m}
        return (acc_g, acc_l + w * l, acc_m), None

      (acc_g, acc_l, acc_m), _ = jax.lax.scan(
          body, (zeros_g, jnp.zeros((), jnp.float32), zeros_m),
          (jnp.arange(accum_steps), micro))
      weight = acc_m["weight"]
      denom = jnp.maximum(weight, 1e-12)
      grads = jax.tree_util.tree_map(lambda s, t: (s / denom).astype(t.dtype), acc_g, train)
      loss = acc_l / denom
      extra = {k: v / denom for k, v in acc_m.items() if k != "weight"}

    grad_norm = optax.global_norm(grads)
    full_grads = O.zeros_for_frozen(grads, frozen, trainable_mask)
    updates, opt_state = optimizer.update(full_grads, state.opt_state, state.params)
    new_params = optax.apply_updates(state.params, updates)
    # frozen parameters are copied through, bit for bit (p + 0 could flip a -0.0)
    new_train, _ = O.split_trainable(new_params, trainable_mask)
    new_params = O.merge_trainable(new_train, frozen, trainable_mask)
    metrics = {"loss": loss, "grad_norm": grad_norm, "weight": weight,
               "lr": jnp.asarray(schedule(state.step), jnp.float32), **extra}
    new_state = state.replace(step=state.step + 1, params=new_params, opt_state=opt_state)
    return new_state, metrics

  return step


def batch_shardings(batch_spec: dict, mesh: Mesh, rules: PT.Rules) -> dict:
  return {k: PT.batch_sharding(mesh, rules, 1 + len(shape)) for k, (shape, _) in
          batch_spec.items()}


def jit_train_step(step: Callable, state_shardings: TrainState, batch_spec: dict, mesh: Mesh,
                   rules: PT.Rules) -> Callable[[TrainState, Any], tuple[TrainState, dict]]:
  """`jax.jit` with explicit in/out shardings and the state donated; traced under the mesh and
  the logical-axis rules (so activation constraints in the model resolve)."""
  replicated = NamedSharding(mesh, P())
  jitted = jax.jit(step, in_shardings=(state_shardings, batch_shardings(batch_spec, mesh,
                                                                          rules)),
                   out_shardings=(state_shardings, replicated), donate_argnums=(0,))

  def call(state, batch):
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      return jitted(state, batch)

  call.jitted = jitted  # for .lower(...) / cost analysis
  return call
