"""Training losses. All are computed in fp32 whatever the compute dtype.

`lm_loss` is the language-model loss: targets are already aligned with the logits, i.e.
`targets[b, t]` is the token that should follow position t (`next_token_targets` makes them
from a sequence); only positions with `loss_mask` True count.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def next_token_targets(input_ids: jax.Array, loss_mask: jax.Array | None = None
                       ) -> tuple[jax.Array, jax.Array]:
  """`[B, T]` ids (and a mask over the tokens to predict) -> aligned `(targets, loss_mask)`.

  targets[:, t] = input_ids[:, t + 1]; the last position has no target (mask False, target 0).
  `loss_mask[:, t]` (if given) says whether token t is to be predicted (e.g. answer tokens).
  """
  if input_ids.ndim != 2:
    raise ValueError(f"input_ids must be [batch, length], got shape {input_ids.shape}")
  targets = jnp.concatenate([input_ids[:, 1:], jnp.zeros_like(input_ids[:, :1])], axis=1)
  m = jnp.ones(input_ids.shape, bool) if loss_mask is None else loss_mask.astype(bool)
  if m.shape != input_ids.shape:
    raise ValueError(f"loss_mask must have the shape of input_ids {input_ids.shape}, got "
                     f"{m.shape}")
  mask = jnp.concatenate([m[:, 1:], jnp.zeros_like(m[:, :1])], axis=1)
  return targets, mask


def lm_loss(logits: jax.Array, targets: jax.Array, loss_mask: jax.Array
            ) -> tuple[jax.Array, jax.Array]:
  """Mean next-token cross-entropy over masked positions, in fp32.

  logits `[B, T, vocab]`, targets `[B, T]` int (aligned: the token following each position),
  loss_mask `[B, T]` bool/0-1. Returns `(mean_loss, num_tokens)`; `mean_loss` is
  `sum(ce * mask) / max(num_tokens, 1)` (0 when nothing is masked in), `num_tokens` float32.
  """
  if logits.ndim != 3:
    raise ValueError(f"logits must be [batch, length, vocab], got shape {logits.shape}")
  if targets.shape != logits.shape[:2]:
    raise ValueError(f"targets must be [batch, length] = {logits.shape[:2]}, got "
                     f"{targets.shape}")
  if loss_mask.shape != logits.shape[:2]:
    raise ValueError(f"loss_mask must be [batch, length] = {logits.shape[:2]}, got "
                     f"{loss_mask.shape}")
  if not jnp.issubdtype(targets.dtype, jnp.integer):
    raise TypeError(f"targets must be integer token ids, got dtype {targets.dtype}")
  logits = logits.astype(jnp.float32)
  mask = loss_mask.astype(jnp.float32)
  lse = jax.nn.logsumexp(logits, axis=-1)
  # Masked-out targets may hold anything (e.g. -100); masked-in out-of-range ids give NaN.
  safe = jnp.where(loss_mask.astype(bool), targets, 0).astype(jnp.int32)
  target_logit = jnp.take_along_axis(logits, safe[..., None], axis=-1, mode="fill")[..., 0]
  ce = lse - target_logit
  num = jnp.sum(mask)
  loss = jnp.sum(ce * mask) / jnp.maximum(num, 1.0)
  return loss, num
