"""Cross-task synergy: gradient reversal and a task discriminator over `v_s` (DESIGN.md §3).

The task-invariant signal `v_s` should carry no information about which backend task produced
it. A small transformer (`TaskDiscriminator`) reads the `v_s` tokens and predicts the task; the
features reach it through `gradient_reversal(v_s, lam)`, so one gradient step both trains the
discriminator (it minimises the cross-entropy) and pushes the LLM side to *maximise* it
(gradient multiplied by -lam). `lam` is a traced scalar: schedules do not recompile.

Alternating updates (`SynergyConfig.mode == "alternating"`) instead split a step in two:
the discriminator phase trains only the discriminator on `stop_gradient(v_s)`
(`discriminator_loss`); the generator phase trains everything else against a frozen
discriminator with `generator_loss` ("confusion": cross-entropy to the uniform distribution,
or "reverse": minus the discriminator's cross-entropy). `partition_discriminator` tells the
two parameter sets apart for the optimiser.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from vitron_jax.nn.layers import Dense
from vitron_jax.nn.norms import LayerNorm
from vitron_jax.nn.transformer_block import TransformerBlock
from vitron_jax.train.losses import synergy_loss

SYNERGY_MODES = ("off", "reversal", "alternating")
GENERATOR_OBJECTIVES = ("confusion", "reverse")
DISCRIMINATOR_NAME = "discriminator"


@dataclasses.dataclass(frozen=True)
class SynergyConfig:
  """mode: "off" | "reversal" (one joint step through gradient reversal) | "alternating";
  lam: reversal weight (the step may pass a scheduled value instead); discriminator size."""
  mode: str = "reversal"
  lam: float = 0.1
  generator_objective: str = "confusion"
  d_model: int = 64
  depth: int = 2
  num_heads: int = 4
  mlp_ratio: float = 4.0

  def __post_init__(self):
    if self.mode not in SYNERGY_MODES:
      raise ValueError(f"SynergyConfig.mode must be one of {SYNERGY_MODES}, got {self.mode!r}")
    if self.generator_objective not in GENERATOR_OBJECTIVES:
      raise ValueError(f"SynergyConfig.generator_objective must be one of "
                       f"{GENERATOR_OBJECTIVES}, got {self.generator_objective!r}")
    if not self.lam >= 0:
      raise ValueError(f"SynergyConfig.lam must be >= 0, got {self.lam}")
    if self.d_model % self.num_heads:
      raise ValueError(f"SynergyConfig.d_model ({self.d_model}) must be a multiple of "
                       f"num_heads ({self.num_heads})")


# ---- gradient reversal ----------------------------------------------------------------------
@jax.custom_vjp
def gradient_reversal(x: jax.Array, lam: jax.Array | float) -> jax.Array:
  """Identity forward; backward multiplies the incoming gradient by `-lam`.

  `x` any array; `lam` a scalar (Python float or traced). The gradient w.r.t. `lam` is 0.
  """
  return x


def _grl_fwd(x, lam):
  return x, lam


def _grl_bwd(lam, g):
  lam_arr = jnp.asarray(lam)
  return (-lam_arr.astype(g.dtype) * g, jnp.zeros_like(lam_arr))


gradient_reversal.defvjp(_grl_fwd, _grl_bwd)


# ---- discriminator --------------------------------------------------------------------------
class TaskDiscriminator(nn.Module):
  """`v_s` tokens `[B, K, d_s]` (+ validity `[B, K]`) -> task logits `[B, num_tasks]`.

  A learned class token is prepended; `depth` pre-norm self-attention blocks; the class
  token's final state is classified. Parameters: `input_proj`, `cls_token`, `layers_{i}`,
  `final_norm`, `classifier`.
  """
  num_tasks: int
  d_model: int = 64
  depth: int = 2
  num_heads: int = 4
  mlp_ratio: float = 4.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, v_s: jax.Array, valid: jax.Array | None = None) -> jax.Array:
    if v_s.ndim != 3:
      raise ValueError(f"discriminator input v_s must be [batch, tokens, width], got shape "
                       f"{tuple(v_s.shape)}")
    b, k, _ = v_s.shape
    if valid is None:
      valid = jnp.ones((b, k), bool)
    if valid.shape != (b, k):
      raise ValueError(f"discriminator valid mask must be [batch, tokens] = {(b, k)}, got "
                       f"{tuple(valid.shape)}")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = Dense(self.d_model, axes=(None, "embed"), name="input_proj", **kw)(v_s)
    cls = self.param("cls_token", nn.with_logical_partitioning(
        nn.initializers.normal(0.02), ("embed",)), (self.d_model,), self.param_dtype)
    x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (b, 1, self.d_model)), x], 1)
    mask = jnp.concatenate([jnp.ones((b, 1), bool), valid.astype(bool)], axis=1)
    for i in range(self.depth):
      x = TransformerBlock(self.num_heads, self.mlp_ratio, name=f"layers_{i}", **kw)(x, mask)
    x = LayerNorm(name="final_norm", **kw)(x[:, 0])
    return Dense(self.num_tasks, axes=("embed", None), name="classifier", **kw)(x)


# ---- losses ---------------------------------------------------------------------------------
def _weights(labels: jax.Array, weights: jax.Array | None) -> jax.Array:
  w = jnp.ones(labels.shape, jnp.float32) if weights is None else weights.astype(jnp.float32)
  if w.shape != labels.shape:
    raise ValueError(f"synergy weights must have the labels' shape {labels.shape}, got "
                     f"{w.shape}")
  return w


def discriminator_loss(logits: jax.Array, labels: jax.Array,
                       weights: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Weighted mean cross-entropy of task `logits` `[B, M]` against `labels` `[B]` int, and
  the weighted accuracy (`vitron_jax.train.losses.synergy_loss`). Rows with weight 0 (e.g. no
  invocation, label -1) do not count."""
  return synergy_loss(logits, labels, weights)


def generator_loss(logits: jax.Array, labels: jax.Array, weights: jax.Array | None = None,
                   objective: str = "confusion") -> jax.Array:
  """The generator's adversarial term for alternating updates (discriminator frozen).

  "confusion": cross-entropy between the discriminator's prediction and the uniform
  distribution (minimal when it cannot tell tasks apart); "reverse": minus its cross-entropy.
  """
  w = _weights(labels, weights)
  denom = jnp.maximum(jnp.sum(w), 1e-9)
  if objective == "confusion":
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
    return jnp.sum(w * -jnp.mean(logp, -1)) / denom
  if objective == "reverse":
    return -discriminator_loss(logits, labels, weights)[0]
  raise ValueError(f"generator objective must be one of {GENERATOR_OBJECTIVES}, got "
                   f"{objective!r}")


def partition_discriminator(params: Any) -> Any:
  """Labels pytree: "discriminator" for leaves under a `discriminator` module, else "model"
  (for `optax.multi_transform` in alternating updates)."""
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
  labels = {k: DISCRIMINATOR_NAME if DISCRIMINATOR_NAME in k else "model" for k in flat}
  return flax.traverse_util.unflatten_dict(labels)
