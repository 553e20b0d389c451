"""The rows of a VITRON batch that invoke one attached backend, gathered inside jit.

Every example carries the backend's fields under `{module}/...` (zeros and `valid` 0 for rows
that do not invoke it). `gather_rows` picks the first `rows` valid rows (`jnp.nonzero` with a
static size, so shapes stay static whatever the mixture puts in a batch), marks padding rows
with `row_weights` 0 (the backend loss and the alignment term weigh them out), and counts the
rows it used and those past `rows` (`backend_rows/{module}/used|overflow`): rows over the
group size are reported, never silently lost. `RowFields` is the per-example half every
attachment shares.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vitron_jax.protocol import invocation as I


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


class RowFields:
  """An attachment's per-example fields. Subclasses set `module`, `target` (the `targets` key a
  sample invoking the backend carries), `keys` (the fields the hook gets; "command_ids" reach it
  as "command_tokens"), `rows`, `_spec` ({field: (shape, dtype)}, "valid" included) and
  `_fields(sample)`."""

  module: str = ""
  target: str = ""
  keys: tuple[str, ...] = ()
  rows: int = 8
  _spec: dict[str, tuple[tuple[int, ...], Any]] = {}

  def _fields(self, sample: Mapping[str, Any]) -> Mapping[str, np.ndarray]:
    raise NotImplementedError

  @property
  def params_of(self) -> str:
    """The module whose parameters (`backends/<params_of>/`) the backend runs with: its own,
    unless it shares another's (the video segmenter runs the image segmenter's SAM)."""
    return self.module

  def _attach(self, field: str, head: Any, condition_shape: Sequence[int], rows: int) -> None:
    """The checks of every attachment's constructor (`field`: its `model.<field>` config):
    the head has the module, the module's projector makes the backend's condition shape,
    `rows` (`task.backend_rows.<module>`) is at least 1."""
    m = self.module
    if m not in head.modules:
      raise ValueError(f"model.{field} is set but the head has no {m!r} module "
                       f"(head modules: {head.modules})")
    want = tuple(head.condition_shapes[head.index(m)])
    if tuple(condition_shape) != want:
      raise ValueError(f"model.{field} gives condition tokens {tuple(condition_shape)}, but "
                       f"the head's {m!r} projector makes {want} (model.head.backends)")
    if rows < 1:
      raise ValueError(f"task.backend_rows.{m} must be >= 1, got {rows}")
    self.rows = int(rows)

  def batch_spec(self) -> dict[str, tuple[tuple[int, ...], Any]]:
    return {f"{self.module}/{k}": v for k, v in self._spec.items()}

  def example(self, sample: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The backend's fields of one training example (zeros and valid 0 unless the expected
    answer invokes the backend and the sample has its target)."""
    convs = sample.get("conversations") or []
    inv = I.find_invocation(convs[-1]["value"]) if convs else None
    if inv and inv.module == self.module and self.target in (sample.get("targets") or {}):
      out = dict(self._fields(sample))
      out["valid"] = np.float32(1.0)
    else:
      out = {k: np.zeros(shape, dtype) for k, (shape, dtype) in self._spec.items()}
    return {f"{self.module}/{k}": v for k, v in out.items()}

  def gather(self, fields: Mapping[str, jax.Array]
             ) -> tuple[dict[str, jax.Array], jax.Array, dict[str, jax.Array]]:
    """In jit: the batch's fields of this backend -> (the hook's batch, its rows, counts)."""
    return gather_rows(fields, self.module, self.rows, rename={"command_ids": "command_tokens"},
                       keys=self.keys)
