"""Training losses. All are computed in fp32 whatever the compute dtype.

`lm_loss` is the language-model loss: targets are already aligned with the logits, i.e.
`targets[b, t]` is the token that should follow position t (`next_token_targets` makes them
from a sequence); only positions with `loss_mask` True count.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def next_token_targets(input_ids: jax.Array, loss_mask: jax.Array | None = None,
                       segment_ids: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """`[B, T]` ids (and a mask over the tokens to predict) -> aligned `(targets, loss_mask)`.

  targets[:, t] = input_ids[:, t + 1]; the last position has no target (mask False, target 0).
  `loss_mask[:, t]` (if given) says whether token t is to be predicted (e.g. answer tokens).
  `segment_ids` `[B, T]` (packed rows): position t has no target when token t + 1 belongs to
  another segment (a sample never predicts the next sample's first token).
  """
  if input_ids.ndim != 2:
    raise ValueError(f"input_ids must be [batch, length], got shape {input_ids.shape}")
  targets = jnp.concatenate([input_ids[:, 1:], jnp.zeros_like(input_ids[:, :1])], axis=1)
  m = jnp.ones(input_ids.shape, bool) if loss_mask is None else loss_mask.astype(bool)
  if m.shape != input_ids.shape:
    raise ValueError(f"loss_mask must have the shape of input_ids {input_ids.shape}, got "
                     f"{m.shape}")
  mask = jnp.concatenate([m[:, 1:], jnp.zeros_like(m[:, :1])], axis=1)
  if segment_ids is not None:
    if segment_ids.shape != input_ids.shape:
      raise ValueError(f"segment_ids must have the shape of input_ids {input_ids.shape}, got "
                       f"{segment_ids.shape}")
    same = segment_ids[:, 1:] == segment_ids[:, :-1]
    mask = mask & jnp.concatenate([same, jnp.zeros_like(same[:, :1])], axis=1)
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


# ---- VITRON objective terms (hybrid head, synergy, backend hooks) ---------------------------
# Appended for the VITRON model (`vitron_jax.models.objective` combines them).
from typing import Any, Callable, Mapping  # noqa: E402

BackendLossFn = Callable[[Any, Mapping[str, Any], jax.Array, jax.Array],
                         tuple[jax.Array, Mapping[str, jax.Array]]]


def token_cross_entropy(logits: jax.Array, targets: jax.Array, loss_mask: jax.Array
                        ) -> jax.Array:
  """Per-token fp32 cross-entropy `[B, T]`, zero where `loss_mask` is False."""
  if logits.ndim != 3 or targets.shape != logits.shape[:2] or loss_mask.shape != targets.shape:
    raise ValueError(f"token_cross_entropy: logits [B, T, V], targets and loss_mask [B, T]; got "
                     f"{logits.shape}, {targets.shape}, {loss_mask.shape}")
  logits = logits.astype(jnp.float32)
  m = loss_mask.astype(bool)
  safe = jnp.where(m, targets, 0).astype(jnp.int32)
  tgt = jnp.take_along_axis(logits, safe[..., None], axis=-1, mode="fill")[..., 0]
  return jnp.where(m, jax.nn.logsumexp(logits, axis=-1) - tgt, 0.0)


def grouped_mean(values: jax.Array, counts: jax.Array, groups: jax.Array,
                 num_groups: int) -> tuple[jax.Array, jax.Array]:
  """Per-group `sum(values) / sum(counts)` over rows: values, counts `[B]` (sums per row),
  groups `[B]` int in [0, num_groups) (others ignored). Returns (means `[G]`, counts `[G]`);
  an empty group's mean is 0."""
  onehot = jax.nn.one_hot(groups, num_groups, dtype=jnp.float32)  # [B, G]
  tot = onehot.T @ values.astype(jnp.float32)
  cnt = onehot.T @ counts.astype(jnp.float32)
  return tot / jnp.maximum(cnt, 1e-9), cnt


def alignment_loss(pred: jax.Array, target: jax.Array, weights: jax.Array | None = None
                   ) -> jax.Array:
  """l2 alignment of projected condition tokens to the backend's native condition.

  pred, target `[B, N, W]`; per row the mean squared error over tokens and width; rows
  averaged with `weights` `[B]` (default 1). The target carries no gradient."""
  if pred.shape != target.shape:
    raise ValueError(f"alignment_loss: prediction {pred.shape} and target {target.shape} "
                     "must have the same shape")
  err = jnp.square(pred.astype(jnp.float32)
                   - jax.lax.stop_gradient(target).astype(jnp.float32))
  per_row = jnp.mean(err.reshape(err.shape[0], -1), axis=-1)
  w = jnp.ones(per_row.shape, jnp.float32) if weights is None else weights.astype(jnp.float32)
  if w.shape != per_row.shape:
    raise ValueError(f"alignment_loss: weights must be [batch] = {per_row.shape}, got {w.shape}")
  return jnp.sum(w * per_row) / jnp.maximum(jnp.sum(w), 1e-9)


def synergy_loss(logits: jax.Array, labels: jax.Array, weights: jax.Array | None = None
                 ) -> tuple[jax.Array, jax.Array]:
  """The synergy adversarial term: the task discriminator's weighted mean cross-entropy
  (`logits` `[B, M]`, `labels` `[B]` int, `weights` `[B]`; rows with weight 0 such as
  label -1 do not count) and its weighted accuracy. Minimised by the discriminator; the
  LLM side sees it through gradient reversal (`vitron_jax.models.synergy`)."""
  if logits.ndim != 2 or labels.shape != logits.shape[:1]:
    raise ValueError(f"synergy_loss: logits must be [batch, tasks] and labels [batch]; got "
                     f"{tuple(logits.shape)} and {tuple(labels.shape)}")
  w = jnp.ones(labels.shape, jnp.float32) if weights is None else weights.astype(jnp.float32)
  if w.shape != labels.shape:
    raise ValueError(f"synergy_loss: weights must have the labels' shape {labels.shape}, got "
                     f"{w.shape}")
  logits = logits.astype(jnp.float32)
  safe = jnp.clip(labels, 0, logits.shape[-1] - 1).astype(jnp.int32)
  ce = jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, safe[:, None], -1)[:, 0]
  denom = jnp.maximum(jnp.sum(w), 1e-9)
  acc = jnp.sum(w * (jnp.argmax(logits, -1) == labels)) / denom
  return jnp.sum(w * ce) / denom, acc


def backend_loss_term(loss_fn: BackendLossFn, params: Any, batch: Mapping[str, Any],
                      condition: jax.Array, rng: jax.Array, prefix: str
                      ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Call a backend's `loss(params, batch, condition, rng)` inside the same jitted step;
  returns its fp32 scalar loss and its metrics renamed `"{prefix}/{name}"`."""
  loss, metrics = loss_fn(params, batch, condition, rng)
  loss = jnp.asarray(loss, jnp.float32)
  if loss.shape != ():
    raise ValueError(f"backend loss {prefix!r} must be a scalar, got shape {loss.shape}")
  return loss, {f"{prefix}/{k}": jnp.asarray(v, jnp.float32) for k, v in dict(metrics).items()}


def combine_losses(terms: Mapping[str, tuple[jax.Array, float]]
                   ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """`{name: (loss, weight)}` -> (weighted sum, metrics `loss/{name}` unweighted)."""
  total = jnp.zeros((), jnp.float32)
  metrics = {}
  for name, (value, weight) in terms.items():
    value = jnp.asarray(value, jnp.float32)
    metrics[f"loss/{name}"] = value
    if weight:
      total = total + weight * value
  metrics["loss/total"] = total
  return total, metrics
