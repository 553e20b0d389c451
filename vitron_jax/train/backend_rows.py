"""The rows of a VITRON batch that invoke one attached backend, gathered inside jit.

Every example carries the backend's fields under `{module}/...` (zeros and `valid` 0 for rows
that do not invoke it). `gather_rows` picks the first `rows` valid rows (`jnp.nonzero` with a
static size, so shapes stay static whatever the mixture puts in a batch), marks padding rows
with `row_weights` 0 (the backend loss and the alignment term weigh them out), and counts the
rows it used and those past `rows` (`backend_rows/{module}/used|overflow`): rows over the
group size are reported, never silently lost.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import jax
import jax.numpy as jnp


def gather_rows(fields: Mapping[str, jax.Array], module: str, rows: int,
                rename: Mapping[str, str] | None = None, keys: Sequence[str] | None = None
                ) -> tuple[dict[str, jax.Array], jax.Array, dict[str, jax.Array]]:
  """`fields` (one module's, with "valid" `[B]`) -> (the hook's batch: every other field at
  the gathered rows, renamed by `rename`, plus "row_weights" `[rows]`; the rows `[rows]`
  int; the counts)."""
  fields = {k: jnp.asarray(v) for k, v in fields.items()}
  if "valid" not in fields:
    raise ValueError(f"{module}: the batch's backend fields need 'valid' (got "
                     f"{sorted(fields)})")
  valid = fields["valid"] > 0
  count = valid.sum().astype(jnp.int32)
  (idx,) = jnp.nonzero(valid, size=rows, fill_value=0)
  rename = dict(rename or {})
  names = [k for k in (keys if keys is not None else sorted(fields)) if k != "valid"]
  out = {rename.get(k, k): fields[k][idx] for k in names}
  out["row_weights"] = (jnp.arange(rows) < count).astype(jnp.float32)
  counts = {f"backend_rows/{module}/used": jnp.minimum(count, rows).astype(jnp.float32),
            f"backend_rows/{module}/overflow": jnp.maximum(count - rows, 0).astype(jnp.float32)}
  return out, idx, counts
