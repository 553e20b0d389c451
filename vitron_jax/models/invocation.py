"""The hybrid invocation head: query banks, `v_p` / `v_s` signals, per-backend projectors.

After an invocation's trigger token (`</inv>`, or the module token itself in "superlink"
routing) the sequence holds the K learnable query embeddings of that module's bank (K per
module). The LLM's last-layer (final-norm) hidden states at those K slots become

    v_p = task_proj_{module}(h)      task-specific, one MLP per module   [B, K, task_dim]
    v_s = shared_proj(h)             task-invariant, shared              [B, K, shared_dim]
    v   = concat(v_p, v_s)                                               [B, K, task+shared]

and `projector_{module}` (a `ConditionProjector`: small transformer with learned output
queries) maps `v` to the backend's condition tokens `[B, N, W]` (`condition_shapes`).

Routing modes (`HeadConfig.routing`):
* "text": the backend gets only the command (its own text encoder's `native` condition);
  no banks, no projectors;
* "embedding": only the projected signals;
* "hybrid": both; `hybrid_combine="gated_sum"` gives `native + tanh(gate) * projected`
  (gate initialised to 0: starts as "text", same shape), `"concat"` appends the projected
  tokens after the native ones (`[B, N_native + N, W]`; for backends whose condition length is
  free, e.g. cross-attention or SAM sparse prompts);
* "superlink" (VisionLLM v2): the module token routes, queries follow, no command text; the
  backend gets the projected signals.

Parameters: `queries_{module}` `[K, D]`, `task_proj_{module}/{fc1,fc2}`,
`shared_proj/{fc1,fc2}`, `projector_{module}/...`, `gate_{module}` (hybrid gated_sum).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from vitron_jax.models.condition_projector import ConditionProjector
from vitron_jax.nn.layers import Dense
from vitron_jax.protocol import tokens as T
from vitron_jax.protocol.tokenizer import ROUTING_MODES

HYBRID_COMBINES = ("gated_sum", "concat")


@dataclasses.dataclass(frozen=True)
class HeadConfig:
  """Hybrid head. `modules[i]` has `num_queries[i]` query slots and a backend whose condition
  tokens are `condition_shapes[i] = (tokens, width)`; the module index is also the synergy
  task label."""
  modules: tuple[str, ...]
  num_queries: tuple[int, ...]
  condition_shapes: tuple[tuple[int, int], ...]
  routing: str = "hybrid"
  hybrid_combine: str = "gated_sum"
  task_dim: int = 256
  shared_dim: int = 256
  projector_dim: int = 256
  projector_depth: int = 2
  projector_heads: int = 8
  dtype: str = "float32"
  param_dtype: str = "float32"

  def __post_init__(self):
    object.__setattr__(self, "modules", tuple(self.modules))
    object.__setattr__(self, "num_queries", tuple(int(k) for k in self.num_queries))
    object.__setattr__(self, "condition_shapes",
                       tuple((int(n), int(w)) for n, w in self.condition_shapes))
    if not self.modules:
      raise ValueError("HeadConfig.modules must name at least one backend module")
    for m in self.modules:
      T.module_token(m)
    if len(set(self.modules)) != len(self.modules):
      raise ValueError(f"HeadConfig.modules has duplicates: {self.modules}")
    if not len(self.num_queries) == len(self.condition_shapes) == len(self.modules):
      raise ValueError(f"HeadConfig: num_queries ({len(self.num_queries)}) and "
                       f"condition_shapes ({len(self.condition_shapes)}) need one entry per "
                       f"module ({len(self.modules)})")
    if self.routing not in ROUTING_MODES:
      raise ValueError(f"HeadConfig.routing must be one of {ROUTING_MODES}, got "
                       f"{self.routing!r}")
    if self.hybrid_combine not in HYBRID_COMBINES:
      raise ValueError(f"HeadConfig.hybrid_combine must be one of {HYBRID_COMBINES}, got "
                       f"{self.hybrid_combine!r}")
    if self.uses_signals and min(self.num_queries) < 1:
      raise ValueError(f"HeadConfig: routing {self.routing!r} needs K >= 1 queries for every "
                       f"module, got {dict(zip(self.modules, self.num_queries))}")
    if any(n < 1 or w < 1 for n, w in self.condition_shapes):
      raise ValueError(f"HeadConfig.condition_shapes must be positive, got "
                       f"{self.condition_shapes}")
    if self.projector_dim % self.projector_heads:
      raise ValueError(f"HeadConfig.projector_dim ({self.projector_dim}) must be a multiple of "
                       f"projector_heads ({self.projector_heads})")

  @property
  def uses_signals(self) -> bool:
    return self.routing != "text"

  @property
  def uses_native(self) -> bool:
    return self.routing in ("text", "hybrid")

  @property
  def k_max(self) -> int:
    return max(self.num_queries) if self.uses_signals else 0

  @property
  def query_counts(self) -> dict[str, int]:
    return {m: (k if self.uses_signals else 0) for m, k in zip(self.modules, self.num_queries)}

  def index(self, module: str) -> int:
    if module not in self.modules:
      raise ValueError(f"module {module!r} has no head; configured modules: {self.modules}")
    return self.modules.index(module)

  def condition_shape(self, module: str) -> tuple[int, int]:
    """Shape of the condition the backend receives (after the routing combination)."""
    n, w = self.condition_shapes[self.index(module)]
    if self.routing == "hybrid" and self.hybrid_combine == "concat":
      return 2 * n, w
    return n, w


class Signals(NamedTuple):
  v: jax.Array      # [B, K, task_dim + shared_dim]
  v_p: jax.Array    # [B, K, task_dim]
  v_s: jax.Array    # [B, K, shared_dim]
  valid: jax.Array  # [B, K] bool


class ProjMLP(nn.Module):
  """`fc2(gelu(fc1(x)))`, `[.., D] -> [.., features]`."""
  features: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    h = Dense(self.features, axes=("embed", "mlp"), name="fc1", **kw)(x)
    return Dense(self.features, axes=("mlp", None), name="fc2", **kw)(jax.nn.gelu(h))


class HybridHead(nn.Module):
  """See the module docstring. `llm_hidden` is the LLM width D."""
  config: HeadConfig
  llm_hidden: int

  def setup(self):
    c = self.config
    kw = dict(dtype=jnp.dtype(c.dtype), param_dtype=jnp.dtype(c.param_dtype))
    if not c.uses_signals:
      return
    self.banks = {m: self.param(f"queries_{m}", nn.with_logical_partitioning(
        nn.initializers.normal(0.02), (None, "embed")), (k, self.llm_hidden),
                                jnp.dtype(c.param_dtype))
                  for m, k in zip(c.modules, c.num_queries)}
    self.task_proj = {m: ProjMLP(c.task_dim, name=f"task_proj_{m}", **kw) for m in c.modules}
    self.shared_proj = ProjMLP(c.shared_dim, **kw)
    self.projectors = {
        m: ConditionProjector(n, w, c.projector_dim, c.projector_depth, c.projector_heads,
                              name=f"projector_{m}", **kw)
        for m, (n, w) in zip(c.modules, c.condition_shapes)}
    if c.routing == "hybrid" and c.hybrid_combine == "gated_sum":
      self.gates = {m: self.param(f"gate_{m}", nn.with_logical_partitioning(
          nn.initializers.zeros, ()), (), jnp.dtype(c.param_dtype)) for m in c.modules}

  def bank(self, module_ids: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`[B]` module indices (-1 = none) -> query embeddings `[B, K_max, D]` and their
    validity `[B, K_max]` (the first K of the row's module)."""
    c = self.config
    k_max = c.k_max
    table = jnp.stack([jnp.pad(self.banks[m], ((0, k_max - k), (0, 0)))
                       for m, k in zip(c.modules, c.num_queries)])  # [M, K_max, D]
    counts = jnp.asarray(c.num_queries, jnp.int32)
    safe = jnp.clip(module_ids, 0, len(c.modules) - 1)
    valid = (jnp.arange(k_max)[None] < counts[safe][:, None]) & (module_ids >= 0)[:, None]
    return table[safe], valid

  def signals(self, h: jax.Array, module_ids: jax.Array, valid: jax.Array) -> Signals:
    """Hidden states at the query slots `[B, K, D]` -> `Signals` (v_p of the row's module)."""
    c = self.config
    onehot = jax.nn.one_hot(module_ids, len(c.modules), dtype=h.dtype)  # -1 -> all zero
    v_p = sum(onehot[:, i, None, None] * self.task_proj[m](h) for i, m in enumerate(c.modules))
    v_s = self.shared_proj(h)
    return Signals(jnp.concatenate([v_p, v_s], -1), v_p, v_s, valid)

  def project(self, module: str, v: jax.Array, valid: jax.Array) -> jax.Array:
    """Signals `[n, K, d]` -> the module's projected condition `[n, N, W]`."""
    self.config.index(module)
    return self.projectors[module](v, valid)

  def combine(self, module: str, projected: jax.Array | None,
              native: jax.Array | None) -> jax.Array:
    """The condition the backend receives, per the routing mode."""
    c = self.config
    if c.uses_native and native is None:
      raise ValueError(f"routing {c.routing!r} needs the backend's native condition for "
                       f"module {module!r} (its text encoder on the command tokens)")
    if c.routing == "text":
      return native
    if c.routing != "hybrid":
      return projected
    if native.shape[0] != projected.shape[0] or native.shape[-1] != projected.shape[-1]:
      raise ValueError(f"native condition {tuple(native.shape)} does not fit the projected "
                       f"condition {tuple(projected.shape)} of module {module!r}")
    if c.hybrid_combine == "concat":
      return jnp.concatenate([native.astype(projected.dtype), projected], axis=1)
    if native.shape != projected.shape:
      raise ValueError(f"gated_sum needs the native condition {tuple(native.shape)} to have "
                       f"the projected shape {tuple(projected.shape)} (module {module!r})")
    return native.astype(projected.dtype) + jnp.tanh(self.gates[module]) * projected

  def __call__(self, h: jax.Array, module_ids: jax.Array,
               natives: Mapping[str, jax.Array] | None = None) -> dict[str, jax.Array]:
    """Everything at once (used to initialise): `h` `[B, K_max, D]` -> conditions per module."""
    c = self.config
    natives = dict(natives or {})
    out = {}
    if c.uses_signals:
      _, valid = self.bank(module_ids)
      sig = self.signals(h, module_ids, valid)
      for m in c.modules:
        out[m] = self.combine(m, self.project(m, sig.v, sig.valid), natives.get(m))
    else:
      for m in c.modules:
        out[m] = self.combine(m, None, natives.get(m))
    return out
