"""The whole VITRON model: frontend -> LLM -> hybrid head -> conditions, plus the synergy
discriminator. Parameter tree: `llm` (Llama, HF names), `frontend/{vision_tower, mm_projector,
region_encoder}`, `head/...` (query banks, `v_p`/`v_s` projections, per-backend projectors),
`discriminator` (when synergy is on).

Batch (static shapes; see `vitron_jax.protocol.tokenizer.SequenceBuilder`):

  input_ids [B, L] int32          placeholders already expanded to their fixed slot counts
  attention_mask [B, L] bool      True = real token
  query_mask [B, L] bool          the K query slots after an invocation's trigger
  module_ids [B] int32            head module index of the row's invocation, -1 = none
  images [B, I, H, W, 3]          (+ image_valid [B, I]); videos [B, V, T, H, W, 3] (+ video_valid)
  image_regions / video_regions   dicts from `region_inputs.prepare_*_regions`

One assembly path (`embed_inputs`) serves training (`__call__`) and decoding
(`vitron_jax.models.vitron_decoding`): visual tokens and query embeddings replace the
embeddings of their slots.
"""
from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vitron_jax.models.assembly import (check_slot_counts, gather_slots, place_tokens,
                                        slot_mismatch)
from vitron_jax.models.frontend import Frontend
from vitron_jax.models.invocation import HybridHead, Signals
from vitron_jax.models.llama import Cache, Llama, LlamaOutput
from vitron_jax.models.synergy import TaskDiscriminator, gradient_reversal
from vitron_jax.models.vitron_config import VitronConfig
from vitron_jax.nn.partitioning import count_params

DISC_INPUTS = ("reversal", "detach", "plain")


class VitronOutput(NamedTuple):
  logits: jax.Array                       # [B, L, vocab]
  hidden_states: jax.Array                # [B, L, D] final-norm hidden states
  signals: Signals | None                 # at the query slots
  projected: dict[str, jax.Array]         # module -> [n, N, W] projector output
  conditions: dict[str, jax.Array]        # module -> condition given to the backend
  disc_logits: jax.Array | None           # [B, num_modules]
  slot_errors: dict[str, jax.Array]       # kind -> rows whose slots and tokens disagree


def _concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)


class Vitron(nn.Module):
  config: VitronConfig

  def setup(self):
    c = self.config
    self.llm = Llama(c.llm)
    self.frontend = Frontend(c.frontend)
    self.head = HybridHead(c.head, c.llm.hidden_size)
    if c.synergy.mode != "off" and c.head.uses_signals:
      s = c.synergy
      self.discriminator = TaskDiscriminator(
          len(c.head.modules), s.d_model, s.depth, s.num_heads, s.mlp_ratio,
          dtype=jnp.dtype(c.llm.dtype), param_dtype=jnp.dtype(c.llm.param_dtype))

  # ---- the one assembly path ----------------------------------------------------------------
  def embed_inputs(self, batch: Mapping[str, Any]) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Token embeddings with visual tokens and query embeddings in their slots.

    Returns `(embeds [B, L, D], slot_errors)`; on concrete inputs a slot/token count mismatch
    raises instead.
    """
    c = self.config
    ids = batch["input_ids"]
    emb = self.llm.embed(ids)
    vis = self.frontend(images=batch.get("images"), image_valid=batch.get("image_valid"),
                        videos=batch.get("videos"), video_valid=batch.get("video_valid"),
                        image_regions=batch.get("image_regions"),
                        video_regions=batch.get("video_regions"))
    errors = {}
    for kind, tid in (("image", c.slot_ids.image), ("video", c.slot_ids.video),
                      ("roi", c.slot_ids.roi)):
      mask = ids == tid
      if kind in vis:
        tokens, valid = vis[kind]
        check_slot_counts(mask, valid, f"<{kind}> slots")
        emb = place_tokens(emb, mask, tokens, valid)
        errors[kind] = slot_mismatch(mask, valid)
      elif _concrete(ids) and np.asarray(mask).any():
        raise ValueError(f"input_ids hold <{kind}> slots but the batch has no "
                         f"{'regions' if kind == 'roi' else kind + 's'} to fill them")
    if c.head.uses_signals and "query_mask" in batch:
      bank, valid = self.head.bank(batch["module_ids"])
      check_slot_counts(batch["query_mask"], valid, "query slots")
      emb = place_tokens(emb, batch["query_mask"], bank, valid)
      errors["query"] = slot_mismatch(batch["query_mask"], valid)
    return emb, errors

  # ---- training forward ---------------------------------------------------------------------
  def __call__(self, batch: Mapping[str, Any], *,
               natives: Mapping[str, jax.Array] | None = None,
               rows: Mapping[str, jax.Array] | None = None,
               lam: jax.Array | float = 0.0, disc_input: str = "reversal") -> VitronOutput:
    """Full forward. `rows[module]` `[n]` picks the batch rows whose signals go to that
    module's projector (default: every row); `natives[module]` `[n, N, W]` is the backend's
    own condition for those rows (needed by "text"/"hybrid" routing). The discriminator reads
    `v_s` through gradient reversal with weight `lam` ("reversal"), detached ("detach") or
    as is ("plain", alternating generator phase)."""
    c = self.config
    if disc_input not in DISC_INPUTS:
      raise ValueError(f"disc_input must be one of {DISC_INPUTS}, got {disc_input!r}")
    emb, errors = self.embed_inputs(batch)
    out: LlamaOutput = self.llm.forward(inputs_embeds=emb,
                                        attention_mask=batch.get("attention_mask"))
    natives = dict(natives or {})
    rows = dict(rows or {})
    sig = None
    projected, conditions = {}, {}
    disc = None
    if c.head.uses_signals:
      _, valid = self.head.bank(batch["module_ids"])
      h_q = gather_slots(out.hidden_states, batch["query_mask"], c.head.k_max)
      sig = self.head.signals(h_q, batch["module_ids"], valid)
      for m in c.head.modules:
        r = rows.get(m)
        v, vv = (sig.v, sig.valid) if r is None else (sig.v[r], sig.valid[r])
        projected[m] = self.head.project(m, v, vv)
        if c.head.uses_native and m not in natives:
          continue  # no native condition given: projected only
        conditions[m] = self.head.combine(m, projected[m], natives.get(m))
      if c.synergy.mode != "off":
        v_s = sig.v_s
        if disc_input == "reversal":
          v_s = gradient_reversal(v_s, lam)
        elif disc_input == "detach":
          v_s = jax.lax.stop_gradient(v_s)
        disc = self.discriminator(v_s, sig.valid)
    else:
      for m in c.head.modules:
        if m in natives:
          conditions[m] = self.head.combine(m, None, natives[m])
    return VitronOutput(out.logits, out.hidden_states, sig, projected, conditions, disc, errors)

  # ---- decoding pieces (see vitron_decoding) ------------------------------------------------
  def decode_embeds(self, embeds: jax.Array, attention_mask: jax.Array | None, cache: Cache,
                    logits: str = "all") -> LlamaOutput:
    """`[B, T, D]` embeddings through the LLM with a KV cache."""
    return self.llm.forward(inputs_embeds=embeds, attention_mask=attention_mask, cache=cache,
                            logits=logits)

  def embed_tokens(self, ids: jax.Array) -> jax.Array:
    return self.llm.embed(ids)

  def query_bank(self, module_ids: jax.Array) -> tuple[jax.Array, jax.Array]:
    return self.head.bank(module_ids)

  def project_signals(self, module: str, h_q: jax.Array, module_ids: jax.Array,
                      valid: jax.Array) -> jax.Array:
    """Decoded hidden states at the query slots `[n, K, D]` -> the module's projector output."""
    sig = self.head.signals(h_q, module_ids, valid)
    return self.head.project(module, sig.v, sig.valid)

  def signals_to_conditions(self, module: str, h_q: jax.Array, module_ids: jax.Array,
                            valid: jax.Array, native: jax.Array | None = None) -> jax.Array:
    """Decoded hidden states at the query slots `[n, K, D]` -> the condition the backend gets
    (projected signals combined with `native` per the routing mode)."""
    return self.head.combine(module, self.project_signals(module, h_q, module_ids, valid),
                             native)


def check_batch(config: VitronConfig, batch: Mapping[str, Any]) -> None:
  """On concrete (numpy) inputs, outside jit: every row's placeholder slots must match its
  valid images / videos / regions times their token counts, and its query slots the K of its
  module. Raises ValueError naming the placeholder and the row."""
  c, fe = config, config.frontend
  ids = np.asarray(batch["input_ids"])
  b = ids.shape[0]

  def n_valid(key, valid_key, per):
    if batch.get(key) is None:
      return np.zeros((b,), np.int64)
    arr = batch[key]
    v = batch.get(valid_key)
    v = np.ones(np.shape(arr)[:2], bool) if v is None else np.asarray(v, bool)
    return v.sum(1) * per

  def n_regions(key):
    r = batch.get(key)
    return np.zeros((b,), np.int64) if r is None else np.asarray(r["valid"], bool).sum(1)

  expect = {
      "image": (c.slot_ids.image, n_valid("images", "image_valid", fe.image_tokens)),
      "video": (c.slot_ids.video, n_valid("videos", "video_valid", fe.video_token_count)),
      "roi": (c.slot_ids.roi, (n_regions("image_regions") + n_regions("video_regions"))
              * fe.region_token_count)}
  for kind, (tid, want) in expect.items():
    got = (ids == tid).sum(1)
    bad = np.flatnonzero(got != want)
    if bad.size:
      i = int(bad[0])
      raise ValueError(f"<{kind}> slots: row {i} has {int(got[i])} in input_ids but its inputs "
                       f"fill {int(want[i])} (rows {bad.tolist()[:10]} disagree)")
  if c.head.uses_signals and batch.get("query_mask") is not None:
    mids = np.asarray(batch["module_ids"])
    counts = np.asarray(c.head.num_queries)
    want = np.where(mids >= 0, counts[np.clip(mids, 0, len(counts) - 1)], 0)
    got = np.asarray(batch["query_mask"], bool).sum(1)
    bad = np.flatnonzero(got != want)
    if bad.size:
      i = int(bad[0])
      raise ValueError(f"query slots: row {i} has {int(got[i])} but its module id "
                       f"{int(mids[i])} has K = {int(want[i])}")


def dummy_batch(config: VitronConfig, batch_size: int = 1, length: int | None = None,
                abstract: bool = False) -> dict[str, Any]:
  """A batch touching every component (images, videos, regions, queries), for `init`.

  The first row holds one image, one video, one image region and one video region in their
  slots, and module 0's query slots. With `abstract`, ShapeDtypeStructs (for eval_shape).
  """
  c, fe = config, config.frontend
  k = c.head.num_queries[0] if c.head.uses_signals and c.head.modules else 0  # module 0's
  n_img, n_vid, n_roi = fe.image_tokens, fe.video_token_count, fe.region_token_count
  need = n_img + n_vid + 2 * n_roi + k + 2
  length = length or need
  if length < need:
    raise ValueError(f"dummy batch length {length} < {need} slots needed")
  s, t = fe.vision.image_size, fe.num_frames
  b = batch_size
  row = [c.slot_ids.image] * n_img + [c.slot_ids.video] * n_vid + [c.slot_ids.roi] * (
      2 * n_roi) + [c.slot_ids.inv_close] + [0] * k
  row += [0] * (length - len(row))
  qm = np.zeros((b, length), bool)
  qm[:, n_img + n_vid + 2 * n_roi + 1:n_img + n_vid + 2 * n_roi + 1 + k] = True
  regions = lambda frames: {
      "masks": np.ones((b, 1, frames, s, s), np.float32),
      "boxes": np.tile(np.float32([0, 0, 1, 1]), (b, 1, frames, 1)),
      "frame_valid": np.ones((b, 1, frames), bool), "valid": np.ones((b, 1), bool),
      "source": np.zeros((b, 1), np.int32)}
  batch = {"input_ids": np.tile(np.int32(row), (b, 1)),
           "attention_mask": np.ones((b, length), bool), "query_mask": qm,
           "module_ids": np.zeros((b,), np.int32) if k else np.full((b,), -1, np.int32),
           "images": np.zeros((b, 1, s, s, 3), np.float32),
           "videos": np.zeros((b, 1, t, s, s, 3), np.float32),
           "image_regions": regions(1), "video_regions": regions(t)}
  if abstract:
    return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), batch)
  return batch


def dummy_natives(config: VitronConfig, batch_size: int = 1) -> dict[str, np.ndarray]:
  """Zero native conditions of each module's base shape (for init under text/hybrid)."""
  return {m: np.zeros((batch_size, n, w), np.float32)
          for m, (n, w) in zip(config.head.modules, config.head.condition_shapes)}


def init_vitron(config: VitronConfig, rng: jax.Array, batch_size: int = 1):
  """`Vitron(config).init` on a dummy batch; returns the boxed variables (use
  `nn.meta.unbox` or `partitioning.sharded_init`)."""
  model = Vitron(config)
  return model.init(rng, dummy_batch(config, batch_size),
                    natives=dummy_natives(config, batch_size))


def component_param_counts(params: Any) -> dict[str, int]:
  """Parameter counts per component: llm, frontend parts, head parts, discriminator, total."""
  params = nn.meta.unbox(params)
  out: dict[str, int] = {}
  for top, sub in params.items():
    if top in ("frontend", "head"):
      groups: dict[str, dict] = {}
      for name, leaf in sub.items():
        key = name
        if top == "head":
          key = next((p for p in ("queries", "task_proj", "projector", "gate")
                      if name.startswith(p + "_")), name)
        groups.setdefault(key, {})[name] = leaf
      for key, tree in groups.items():
        out[f"{top}/{key}"] = count_params(tree)
    else:
      out[top] = count_params(sub)
  out["total"] = count_params(params)
  return out
