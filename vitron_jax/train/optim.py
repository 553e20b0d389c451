"""Optimisation: learning-rate schedules, freezing and per-module learning rates.

Every parameter gets a *label* from its path (``"layers/self_attn/q_proj/kernel"``):

* ``"frozen"`` when it matches a `freeze` regex (or, when `trainable` is given, matches none
  of those): `optax.set_to_zero()`, which holds **no optimizer state**; the train step does
  not even differentiate with respect to it;
* otherwise ``"g{i}_wd"`` / ``"g{i}_nowd"``: group i of the learning-rate multipliers (the
  first `(regex, multiplier)` that matches; group 0 is multiplier 1), with or without weight
  decay (`no_decay` regex: norms, biases, embeddings by default).

`optax.multi_transform` sends each label to its own optimizer (the same algorithm with the
scaled schedule); global-norm clipping runs first, over the trainable gradients.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import optax

FROZEN = "frozen"


class OptimConfigError(ValueError):
  """An optimisation setting is invalid or matches no parameter."""


# ----------------------------------------------------------------------------------- paths


def key_name(k: Any) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def path_str(path: Sequence[Any]) -> str:
  """A jax key path -> ``"a/b/kernel"``."""
  return "/".join(key_name(k) for k in path)


def param_paths(params: Any) -> list[str]:
  """Every leaf's path string, in `tree_leaves` order."""
  return [path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]


def _compile(patterns: Sequence[str], field: str) -> list[re.Pattern]:
  out = []
  for p in patterns:
    try:
      out.append(re.compile(p))
    except re.error as e:
      raise OptimConfigError(f"{field}: {p!r} is not a valid regex ({e})") from e
  return out


# -------------------------------------------------------------------------------- schedules


def make_schedule(lr: float, total_steps: int, *, schedule: str = "cosine",
                  warmup_steps: int = 0, decay_steps: int = -1,
                  end_lr_ratio: float = 0.0) -> optax.Schedule:
  """Linear warmup from 0 to `lr` over `warmup_steps`, then cosine / linear decay to
  `lr * end_lr_ratio` at `decay_steps` (-1: `total_steps`), or constant."""
  if lr < 0:
    raise OptimConfigError(f"optim.lr must be >= 0, got {lr}")
  if warmup_steps < 0:
    raise OptimConfigError(f"optim.warmup_steps must be >= 0, got {warmup_steps}")
  decay_steps = total_steps if decay_steps in (-1, None) else int(decay_steps)
  if schedule != "constant" and decay_steps <= warmup_steps:
    raise OptimConfigError(f"optim.decay_steps ({decay_steps}) must exceed optim.warmup_steps "
                           f"({warmup_steps}) for a {schedule!r} schedule")
  end = lr * end_lr_ratio
  if schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup_steps, decay_steps, end)
  if schedule == "linear":
    return optax.join_schedules(
        [optax.linear_schedule(0.0, lr, max(warmup_steps, 1)),
         optax.linear_schedule(lr, end, decay_steps - warmup_steps)], [warmup_steps])
  if schedule == "constant":
    if warmup_steps == 0:
      return optax.constant_schedule(lr)
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup_steps),
                                 optax.constant_schedule(lr)], [warmup_steps])
  raise OptimConfigError(f"optim.schedule must be 'cosine', 'linear' or 'constant', got "
                         f"{schedule!r}")


# ---------------------------------------------------------------------------------- labels


class Labeler:
  """Maps parameter paths to labels (see the module docstring)."""

  def __init__(self, *, freeze: Sequence[str] = (), trainable: Sequence[str] = (),
               lr_multipliers: Sequence[tuple[str, float]] = (),
               no_decay: str = "", weight_decay: float = 0.0):
    self.freeze = _compile(list(freeze), "optim.freeze")
    self.trainable = _compile(list(trainable), "optim.trainable")
    mults = []
    for item in lr_multipliers:
      if len(item) != 2:
        raise OptimConfigError(f"optim.lr_multipliers entries must be (regex, multiplier), got "
                               f"{item!r}")
      (pat,), m = _compile([item[0]], "optim.lr_multipliers"), float(item[1])
      if m < 0:
        raise OptimConfigError(f"optim.lr_multipliers: multiplier for {item[0]!r} must be >= 0, "
                               f"got {m}")
      mults.append((pat, m))
    self.multipliers = [1.0] + [m for _, m in mults]
    self.mult_patterns = mults
    self.no_decay = _compile([no_decay], "optim.no_decay")[0] if no_decay else None
    self.weight_decay = float(weight_decay)

  def label(self, path: str) -> str:
    if any(p.search(path) for p in self.freeze):
      return FROZEN
    if self.trainable and not any(p.search(path) for p in self.trainable):
      return FROZEN
    group = 0
    for i, (pat, _) in enumerate(self.mult_patterns):
      if pat.search(path):
        group = i + 1
        break
    if self.multipliers[group] == 0.0:
      return FROZEN
    decay = self.weight_decay > 0 and not (self.no_decay and self.no_decay.search(path))
    return f"g{group}_{'wd' if decay else 'nowd'}"

  def labels(self, params: Any) -> Any:
    """A tree of labels with the structure of `params`."""
    return jax.tree_util.tree_map_with_path(lambda p, _: self.label(path_str(p)), params)

  def trainable_mask(self, params: Any) -> Any:
    return jax.tree_util.tree_map_with_path(lambda p, _: self.label(path_str(p)) != FROZEN,
                                            params)

  def check(self, params: Any) -> dict[str, int]:
    """Raise when a pattern matches no parameter or nothing trains; return label counts."""
    paths = param_paths(params)
    example = ", ".join(repr(p) for p in paths[:4])
    for field, pats in (("optim.freeze", self.freeze), ("optim.trainable", self.trainable),
                        ("optim.lr_multipliers", [p for p, _ in self.mult_patterns])):
      for pat in pats:
        if not any(pat.search(p) for p in paths):
          raise OptimConfigError(f"{field}: pattern {pat.pattern!r} matches no parameter path; "
                                 f"paths look like {example}")
    counts: dict[str, int] = {}
    for p in paths:
      lab = self.label(p)
      counts[lab] = counts.get(lab, 0) + 1
    if set(counts) <= {FROZEN}:
      raise OptimConfigError("every parameter is frozen; nothing to train (check optim.freeze / "
                             "optim.trainable / lr_multipliers)")
    return counts


# ------------------------------------------------------------------------------- optimizer


def _inner(name: str, schedule: optax.Schedule, weight_decay: float, cfg: Mapping[str, Any]
           ) -> optax.GradientTransformation:
  if name == "adamw":
    return optax.adamw(schedule, b1=cfg.get("b1", 0.9), b2=cfg.get("b2", 0.999),
                       eps=cfg.get("eps", 1e-8), weight_decay=weight_decay)
  if name == "lion":
    return optax.lion(schedule, b1=cfg.get("b1", 0.9), b2=cfg.get("b2", 0.99),
                      weight_decay=weight_decay)
  if name == "sgd":
    tx = optax.sgd(schedule, momentum=cfg.get("momentum", 0.0) or None)
    if weight_decay:
      tx = optax.chain(optax.add_decayed_weights(weight_decay), tx)
    return tx
  raise OptimConfigError(f"optim.name must be 'adamw', 'lion' or 'sgd', got {name!r}")


def _scaled(schedule: optax.Schedule, m: float) -> optax.Schedule:
  return schedule if m == 1.0 else (lambda step: schedule(step) * m)


def build_optimizer(cfg: Mapping[str, Any], total_steps: int, *,
                    extra_freeze: Sequence[str] = ()
                    ) -> tuple[optax.GradientTransformation, Labeler, optax.Schedule]:
  """From the `config.optim` section: (optimizer, labeler, base schedule).

  The optimizer expects gradients of frozen parameters to be zero (the train step gives
  exact zeros) and leaves those parameters bit-identical.
  """
  cfg = dict(cfg)
  schedule = make_schedule(float(cfg.get("lr", 1e-3)), total_steps,
                           schedule=cfg.get("schedule", "cosine"),
                           warmup_steps=int(cfg.get("warmup_steps", 0)),
                           decay_steps=int(cfg.get("decay_steps", -1)),
                           end_lr_ratio=float(cfg.get("end_lr_ratio", 0.0)))
  wd = float(cfg.get("weight_decay", 0.0))
  labeler = Labeler(freeze=tuple(cfg.get("freeze", ())) + tuple(extra_freeze),
                    trainable=tuple(cfg.get("trainable", ())),
                    lr_multipliers=tuple(tuple(x) for x in cfg.get("lr_multipliers", ())),
                    no_decay=cfg.get("no_decay", ""), weight_decay=wd)
  name = cfg.get("name", "adamw")
  transforms: dict[str, optax.GradientTransformation] = {FROZEN: optax.set_to_zero()}
  for g, m in enumerate(labeler.multipliers):
    for decay in (True, False):
      transforms[f"g{g}_{'wd' if decay else 'nowd'}"] = _inner(
          name, _scaled(schedule, m), wd if decay else 0.0, cfg)
  parts = []
  clip = float(cfg.get("clip_norm", 0.0) or 0.0)
  if clip < 0:
    raise OptimConfigError(f"optim.clip_norm must be >= 0, got {clip}")
  if clip > 0:
    parts.append(optax.clip_by_global_norm(clip))
  parts.append(optax.multi_transform(transforms, labeler.labels))
  return optax.chain(*parts), labeler, schedule


# ------------------------------------------------------------------------- trainable split


def split_trainable(params: Any, mask: Any) -> tuple[Any, Any]:
  """(trainable, frozen): two trees shaped like `params` with `None` where the other holds."""
  train = jax.tree_util.tree_map(lambda m, x: x if m else None, mask, params)
  frozen = jax.tree_util.tree_map(lambda m, x: None if m else x, mask, params)
  return train, frozen


def merge_trainable(train: Any, frozen: Any, mask: Any) -> Any:
  """Inverse of `split_trainable`."""
  return jax.tree_util.tree_map(lambda m, t, f: t if m else f, mask, train, frozen,
                                is_leaf=lambda x: x is None)


def zeros_for_frozen(grads_train: Any, frozen: Any, mask: Any) -> Any:
  """Full gradient tree: trainable gradients, exact zeros for frozen parameters."""
  return jax.tree_util.tree_map(lambda m, g, f: g if m else jnp.zeros_like(f), mask, grads_train,
                                frozen, is_leaf=lambda x: x is None)


def global_norm(tree: Any) -> jax.Array:
  return optax.global_norm(tree)


def count_state_leaves(opt_state: Any) -> int:
  """Number of array leaves in an optimizer state (MaskedNode / EmptyState hold none)."""
  return len(jax.tree_util.tree_leaves(opt_state))


Schedule = Callable[[Any], Any]
