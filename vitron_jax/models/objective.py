"""The VITRON training objective: LM + alignment + synergy + backend losses, one jit.

    loss, metrics = vitron_loss(model, params, batch, rng, hooks=hooks,
                                backend_params=bparams, weights=LossWeights(...))

Terms (DESIGN.md §3, §5):
* `lm`: next-token cross-entropy on the tokens to predict (`loss_mask`: assistant answers and
  invocation text; query slots never), per-task means in the metrics (`lm/{module}`, `lm/chat`);
* `align`: l2 between each module's projected condition and the backend's native condition
  (its own text encoder on the command tokens; rows of other modules weigh 0);
* `synergy`: the discriminator's cross-entropy on `v_s` (through gradient reversal in
  "joint"; see `synergy_phase` for alternating updates);
* `backend/{module}`: each hook's backend loss given the condition the routing mode builds,
  through the frozen backend, so gradients reach the LLM side.

Backend data: `batch["backend"][module]` is the hook's batch (with `command_tokens` `[n, Lc]`
when the native condition is needed) and `batch["backend_rows"][module]` `[n]` int the rows of
the VITRON batch it belongs to (default: every row); an optional `batch["backend"][module]
["row_weights"]` `[n]` weighs those rows in the alignment term (and, read by the hook's loss,
in the backend loss), e.g. 0 for the padding of a fixed-size group. Metrics hold `weight` (target tokens), as
`vitron_jax.train.task` expects.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

from vitron_jax.backends.base import Backend
from vitron_jax.models.synergy import generator_loss
from vitron_jax.models.vitron import Vitron
from vitron_jax.train.losses import (alignment_loss, backend_loss_term, combine_losses,
                                     grouped_mean, lm_loss, next_token_targets, synergy_loss,
                                     token_cross_entropy)

SYNERGY_PHASES = ("joint", "discriminator", "generator")


@dataclasses.dataclass(frozen=True)
class LossWeights:
  lm: float = 1.0
  align: float = 1.0
  synergy: float = 0.1
  backend: float = 1.0


@dataclasses.dataclass(frozen=True)
class BackendHook:
  """A backend's loss (and native condition) joining the VITRON step. `loss(params, batch,
  condition, rng) -> (scalar, metrics)`; `native_condition(params, tokens) -> [n, N, W]`."""
  module: str
  loss: Callable[..., Any]
  native_condition: Callable[..., jax.Array] | None = None
  weight: float = 1.0

  @classmethod
  def from_backend(cls, backend: Backend, weight: float = 1.0) -> "BackendHook":
    return cls(backend.module, backend.loss, backend.native_condition, weight)


def vitron_loss(model: Vitron, params: Any, batch: Mapping[str, Any], rng: jax.Array, *,
                hooks: Sequence[BackendHook] = (), backend_params: Mapping[str, Any] | None = None,
                weights: LossWeights = LossWeights(), lam: jax.Array | float | None = None,
                synergy_phase: str = "joint") -> tuple[jax.Array, dict[str, jax.Array]]:
  """Scalar loss and metrics for one batch (pure, jit-able; `hooks` are static).

  `lam`: gradient-reversal weight (default `config.synergy.lam`; pass a traced scalar for a
  schedule). `synergy_phase`: "joint" (one step, gradient reversal), "discriminator" (only the
  discriminator's loss on detached `v_s`) or "generator" (everything else; the discriminator's
  confusion/reverse loss against a discriminator the optimiser must keep frozen).
  """
  c = model.config
  if synergy_phase not in SYNERGY_PHASES:
    raise ValueError(f"synergy_phase must be one of {SYNERGY_PHASES}, got {synergy_phase!r}")
  modules = c.head.modules
  hooks = {h.module: h for h in hooks}
  unknown = set(hooks) - set(modules)
  if unknown:
    raise ValueError(f"backend hooks for modules {sorted(unknown)} that the head does not "
                     f"have (head modules: {modules})")
  backend_params = dict(backend_params or {})
  bbatch = dict(batch.get("backend", {}))
  rows = dict(batch.get("backend_rows", {}))
  lam = c.synergy.lam if lam is None else lam

  natives = {}
  for m, h in hooks.items():
    if h.native_condition is not None and (c.head.uses_native or weights.align):
      if "command_tokens" not in bbatch.get(m, {}):
        raise ValueError(f"batch['backend'][{m!r}] needs 'command_tokens' for the native "
                         "condition")
      natives[m] = jax.lax.stop_gradient(
          h.native_condition(backend_params.get(m), bbatch[m]["command_tokens"]))
  disc_input = {"joint": "reversal", "discriminator": "detach", "generator": "plain"}
  out = model.apply({"params": params}, batch, natives=natives, rows=rows, lam=lam,
                    disc_input=disc_input[synergy_phase])

  module_ids = jnp.asarray(batch["module_ids"])
  metrics: dict[str, jax.Array] = {}
  terms: dict[str, tuple[jax.Array, float]] = {}

  # language modelling, with per-task means
  targets, tmask = next_token_targets(batch["input_ids"], batch["loss_mask"])
  tmask = tmask & batch["attention_mask"].astype(bool)
  lm, ntok = lm_loss(out.logits, targets, tmask)
  ce = token_cross_entropy(out.logits, targets, tmask)
  task = jnp.where(module_ids >= 0, module_ids, len(modules))
  per_task, per_count = grouped_mean(ce.sum(1), tmask.sum(1), task, len(modules) + 1)
  for i, name in enumerate(modules + ("chat",)):
    metrics[f"lm/{name}"] = per_task[i]
    metrics[f"tokens/{name}"] = per_count[i]
  terms["lm"] = (lm, weights.lm)

  # alignment to the native condition and backend losses
  rngs = jax.random.split(rng, max(len(modules), 1))
  for i, m in enumerate(modules):
    w = (module_ids == i).astype(jnp.float32)
    if m in rows:
      w = w[rows[m]]
    if "row_weights" in bbatch.get(m, {}):
      w = w * bbatch[m]["row_weights"].astype(jnp.float32)
    if m in natives and m in out.projected and weights.align:
      a = alignment_loss(out.projected[m], natives[m], w)
      terms[f"align/{m}"] = (a, weights.align)
    if m in hooks:
      if c.head.uses_native and m not in natives:
        raise ValueError(f"module {m!r}: routing {c.head.routing!r} needs the backend's native "
                         "condition but its hook has no native_condition")
      cond = out.conditions[m] if c.head.uses_native else out.projected[m]
      bl, bm = backend_loss_term(hooks[m].loss, backend_params.get(m), bbatch.get(m, {}), cond,
                                 rngs[i], f"backend/{m}")
      terms[f"backend/{m}"] = (bl, weights.backend * hooks[m].weight)
      metrics.update(bm)

  # synergy
  if out.disc_logits is not None:
    valid_rows = (module_ids >= 0).astype(jnp.float32)
    d_loss, d_acc = synergy_loss(out.disc_logits, module_ids, valid_rows)
    metrics["synergy/disc_accuracy"] = d_acc
    if synergy_phase == "generator":
      terms["synergy"] = (generator_loss(out.disc_logits, module_ids, valid_rows,
                                         c.synergy.generator_objective), weights.synergy)
      metrics["synergy/disc_loss"] = d_loss
    else:
      terms["synergy"] = (d_loss, weights.synergy)
  if synergy_phase == "discriminator":
    terms = {k: (v, (w if k == "synergy" else 0.0)) for k, (v, w) in terms.items()}

  total, lm_metrics = combine_losses(terms)
  metrics.update(lm_metrics)
  for kind, n in out.slot_errors.items():
    metrics[f"slot_errors/{kind}"] = n.astype(jnp.float32)
  metrics["weight"] = ntok
  return total, metrics
