"""Static-shape splicing of visual/query tokens into fixed slots of the token sequence.

The data pipeline writes each placeholder as a fixed number of slots (an `<image>` becomes
`image_tokens` copies of the `<image>` id, a region `tokens_per_region` copies of `<roi>`, a
module's query bank K slots marked in `query_mask`). `place_tokens` fills the k-th slot of a
row with the k-th *valid* token of that row (invalid tokens, i.e. padding images / regions, are
skipped), with gathers only: no Python loops over the batch, shapes independent of content.
`gather_slots` is the inverse: hidden states at the slots -> `[B, K, D]`.

`slot_mismatch` counts rows whose number of slots differs from the number of valid tokens;
`check_slot_counts` raises on concrete inputs (outside jit) naming the placeholder.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def compact_tokens(tokens: jax.Array, valid: jax.Array) -> jax.Array:
  """`[B, N, D]` tokens, `[B, N]` validity -> the valid tokens packed to the front (rest 0)."""
  b, n = valid.shape
  rank = jnp.cumsum(valid.astype(jnp.int32), axis=1) - 1
  dest = jnp.where(valid, rank, n)  # invalid tokens go to a dump row
  out = jnp.zeros((b, n + 1) + tokens.shape[2:], tokens.dtype)
  out = out.at[jnp.arange(b)[:, None], dest].set(tokens)
  return out[:, :n]


def place_tokens(embeds: jax.Array, slot_mask: jax.Array, tokens: jax.Array,
                 valid: jax.Array | None = None) -> jax.Array:
  """Fill the slots of `embeds` `[B, L, D]` (where `slot_mask` `[B, L]`) with `tokens`
  `[B, N, D]` (only the `valid` `[B, N]` ones, in order). Rows with more slots than tokens
  get the last token repeated (see `slot_mismatch`)."""
  b, l, d = embeds.shape
  if tokens.ndim != 3 or tokens.shape[0] != b or tokens.shape[2] != d:
    raise ValueError(f"tokens to place must be [batch={b}, N, width={d}], got "
                     f"{tuple(tokens.shape)}")
  if slot_mask.shape != (b, l):
    raise ValueError(f"slot mask must be [batch, length] = {(b, l)}, got {slot_mask.shape}")
  n = tokens.shape[1]
  if n == 0:
    return embeds
  if valid is not None:
    tokens = compact_tokens(tokens, valid)
  rank = jnp.clip(jnp.cumsum(slot_mask.astype(jnp.int32), axis=1) - 1, 0, n - 1)
  picked = jnp.take_along_axis(tokens, rank[..., None], axis=1)
  return jnp.where(slot_mask[..., None], picked.astype(embeds.dtype), embeds)


def gather_slots(hidden: jax.Array, slot_mask: jax.Array, num: int) -> jax.Array:
  """Hidden states `[B, L, D]` at the first `num` slots of each row -> `[B, num, D]` (zeros
  where a row has fewer slots)."""
  b, l = slot_mask.shape
  rank = jnp.cumsum(slot_mask.astype(jnp.int32), axis=1) - 1
  dest = jnp.where(slot_mask & (rank < num), rank, num)
  out = jnp.zeros((b, num + 1) + hidden.shape[2:], hidden.dtype)
  out = out.at[jnp.arange(b)[:, None], dest].set(hidden)
  return out[:, :num]


def slot_mismatch(slot_mask: jax.Array, valid: jax.Array) -> jax.Array:
  """Number of rows (int32 scalar) whose slot count differs from their valid-token count."""
  return jnp.sum(jnp.sum(slot_mask, 1, dtype=jnp.int32) != jnp.sum(valid, 1, dtype=jnp.int32),
                 dtype=jnp.int32)


def check_slot_counts(slot_mask, valid, what: str) -> None:
  """Raise ValueError on concrete inputs when a row's slots and valid tokens disagree."""
  if isinstance(slot_mask, jax.core.Tracer) or isinstance(valid, jax.core.Tracer):
    return
  slots = np.asarray(slot_mask).sum(1)
  toks = np.asarray(valid).sum(1)
  bad = np.flatnonzero(slots != toks)
  if bad.size:
    i = int(bad[0])
    raise ValueError(f"{what}: row {i} has {int(slots[i])} placeholder slots in input_ids but "
                     f"{int(toks[i])} valid tokens to fill them (rows {bad.tolist()[:10]} "
                     "disagree)")
