"""The protocol on top of any Hugging Face tokenizer, and the LLM rows that go with it.

* `add_protocol_tokens(tokenizer)`: adds every protocol token of `vitron_jax.protocol.tokens`
  (placeholders, invocation tags, one token per module, 1024 location tokens, time tokens) as
  single-id special tokens (idempotent) and returns their ids (`ProtocolIds`).
* `encode_user_text`: user content is tokenised with special tokens *split* (plain text), so
  a user typing ``<inv>`` or ``</s>`` gets ordinary text ids, never a protocol or control id.
  `encode_model_text` (assistant targets, model output) recognises them.
* `encode_invocation` / `decode_invocation`: render -> ids and ids -> typed `Invocation` or
  `InvocationError`; the decoder never raises on model output.
* `grow_token_rows` / `resize_llm_for_tokenizer`: grow the Llama `embed_tokens` and `lm_head`
  rows to the tokenizer's size (new rows = mean of the old ones, as LLaVA does; optionally
  rounded up to a multiple for sharding).
* `SequenceBuilder`: the static slot layout shared by training and decoding: placeholders
  expanded to their fixed number of slots, user text safe, assistant text (with invocations)
  under the loss, K query slots appended after each invocation's trigger token.
"""
from __future__ import annotations

import dataclasses
import threading
from typing import Any, Mapping, Sequence

import numpy as np

from vitron_jax.protocol import invocation as inv_lib
from vitron_jax.protocol import tokens as T

ROUTING_MODES = ("text", "embedding", "hybrid", "superlink")


@dataclasses.dataclass(frozen=True)
class ProtocolIds:
  """Token ids of the protocol tokens in one tokenizer. `modules[i]` is the id of
  `tokens.MODULES[i]`'s token; `locs[q]` of `<loc{q:04d}>`; `times[t]` of `<t{t:02d}>`."""
  image: int
  video: int
  roi: int
  inv_open: int
  inv_close: int
  cmd_open: int
  cmd_close: int
  region_open: int
  region_close: int
  modules: tuple[int, ...]
  locs: tuple[int, ...]
  times: tuple[int, ...]

  @property
  def all(self) -> frozenset[int]:
    return frozenset((self.image, self.video, self.roi, self.inv_open, self.inv_close,
                      self.cmd_open, self.cmd_close, self.region_open, self.region_close)
                     + self.modules + self.locs + self.times)

  def module_token_id(self, module: str) -> int:
    T.module_token(module)  # ValueError for an unknown module
    return self.modules[T.MODULES.index(module)]

  def module_of(self, token_id: int) -> str | None:
    """Module name of a module token id, or None."""
    try:
      return T.MODULES[self.modules.index(int(token_id))]
    except ValueError:
      return None


def _token_id(tokenizer, tok: str) -> int:
  ids = tokenizer.convert_tokens_to_ids([tok])
  unk = getattr(tokenizer, "unk_token_id", None)
  if not ids or ids[0] is None or (ids[0] == unk and tok != getattr(tokenizer, "unk_token", None)):
    raise ValueError(f"tokenizer has no protocol token {tok!r}; call add_protocol_tokens first")
  return int(ids[0])


def protocol_ids(tokenizer) -> ProtocolIds:
  """The protocol token ids of a tokenizer that already has them (ValueError otherwise)."""
  tid = lambda t: _token_id(tokenizer, t)
  return ProtocolIds(
      image=tid(T.IMAGE), video=tid(T.VIDEO), roi=tid(T.ROI), inv_open=tid(T.INV_OPEN),
      inv_close=tid(T.INV_CLOSE), cmd_open=tid(T.CMD_OPEN), cmd_close=tid(T.CMD_CLOSE),
      region_open=tid(T.REGION_OPEN), region_close=tid(T.REGION_CLOSE),
      modules=tuple(tid(T.MODULE_TOKENS[m]) for m in T.MODULES),
      locs=tuple(tid(f"<loc{q:04d}>") for q in range(T.NUM_LOC_TOKENS)),
      times=tuple(tid(f"<t{t:02d}>") for t in range(T.NUM_TIME_TOKENS)))


def add_protocol_tokens(tokenizer) -> ProtocolIds:
  """Add every protocol token as a single-id special token (no-op for ones already there).

  A protocol string that the base vocabulary already holds as an *ordinary* token is an error:
  user text could then produce it.
  """
  vocab = tokenizer.get_vocab()
  special = set(getattr(tokenizer, "all_special_tokens", []))
  clash = [t for t in T.all_special_tokens() if t in vocab and t not in special]
  if clash:
    raise ValueError(f"the tokenizer's base vocabulary already has protocol strings as ordinary "
                     f"tokens: {clash[:10]}; they must be special tokens")
  missing = [t for t in T.all_special_tokens() if t not in vocab]
  if missing:
    tokenizer.add_special_tokens({"extra_special_tokens": missing},
                                 replace_extra_special_tokens=False)
  ids = protocol_ids(tokenizer)
  for t in T.all_special_tokens():  # each must be one id
    enc = tokenizer(t, add_special_tokens=False)["input_ids"]
    if len(enc) != 1:
      raise ValueError(f"protocol token {t!r} does not encode to a single id (got {enc})")
  return ids


def control_ids(tokenizer) -> set[int]:
  """The ids of every special token of a tokenizer (control tokens and, once added, the
  protocol's)."""
  return set(int(i) for i in getattr(tokenizer, "all_special_ids", []) if i is not None)


# A Hugging Face fast tokenizer keeps `split_special_tokens` as state of its shared Rust object
# (set, then encode), and grain runs transforms in threads: without the lock, model text could be
# encoded with its protocol tokens split (-> <unk>) and user text with them recognised.
_ENCODE_LOCK = threading.Lock()


def _encode(tokenizer, text: str, *, split_special_tokens: bool) -> list[int]:
  with _ENCODE_LOCK:
    return list(tokenizer(text, add_special_tokens=False,
                          split_special_tokens=split_special_tokens)["input_ids"])


def encode_user_text(tokenizer, text: str) -> list[int]:
  """Plain-text ids for user content: special-token strings are split into ordinary text."""
  if not isinstance(text, str):
    raise TypeError(f"user text must be a string, got {type(text).__name__}")
  ids = _encode(tokenizer, text, split_special_tokens=True)
  # <unk> is how a word-level vocabulary (PixelWorld's) spells an unknown word: allowed
  bad = control_ids(tokenizer).intersection(ids) - {getattr(tokenizer, "unk_token_id", None)}
  if bad:  # only possible with a tokenizer that ignores split_special_tokens
    raise ValueError(f"user text {text[:60]!r} produced special token ids {sorted(bad)[:10]}; "
                     "this tokenizer does not support split_special_tokens")
  return ids


def encode_model_text(tokenizer, text: str) -> list[int]:
  """Ids for assistant / model text: protocol tokens are recognised as single ids."""
  if not isinstance(text, str):
    raise TypeError(f"model text must be a string, got {type(text).__name__}")
  return _encode(tokenizer, text, split_special_tokens=False)


def encode_invocation(tokenizer, inv: inv_lib.Invocation) -> list[int]:
  """Invocation -> protocol text -> ids."""
  return encode_model_text(tokenizer, inv_lib.render(inv))


def decode_text(tokenizer, ids: Sequence[int]) -> str:
  return tokenizer.decode([int(i) for i in ids], skip_special_tokens=False,
                          clean_up_tokenization_spaces=False)


def decode_invocation(tokenizer, ids: Any) -> inv_lib.Invocation | inv_lib.InvocationError:
  """Model output ids -> Invocation or a typed InvocationError; never raises."""
  try:
    arr = np.asarray(ids)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
      return inv_lib.InvocationError("bad_tokens", f"expected a 1-d list of token ids, got "
                                     f"shape {arr.shape} dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() >= len(tokenizer)):
      return inv_lib.InvocationError("bad_tokens", f"token ids out of range [0, "
                                     f"{len(tokenizer)})")
    return inv_lib.parse(decode_text(tokenizer, arr.tolist()))
  except Exception as e:  # model output must never crash an evaluation
    return inv_lib.InvocationError("internal", f"{type(e).__name__}: {e}")


# ---- growing the LLM rows -------------------------------------------------------------------
def padded_vocab_size(n: int, multiple_of: int = 1) -> int:
  if multiple_of < 1:
    raise ValueError(f"pad_to_multiple_of must be >= 1, got {multiple_of}")
  return -(-n // multiple_of) * multiple_of


def grow_token_rows(llm_params: Mapping[str, Any], new_vocab: int, init: str = "mean",
                    rng: Any = None, std: float = 0.02) -> dict[str, Any]:
  """Grow `embed_tokens/embedding` `[V, D]` and `lm_head/kernel` `[D, V]` (when present) to
  `new_vocab` rows. Old rows are kept; new rows are the mean of the old rows ("mean") or
  normal(0, std) draws from `rng` ("normal"). Shrinking is refused."""
  emb = np.asarray(llm_params["embed_tokens"]["embedding"])
  old = emb.shape[0]
  if new_vocab < old:
    raise ValueError(f"cannot shrink the vocabulary from {old} to {new_vocab} rows")
  if init not in ("mean", "normal"):
    raise ValueError(f"row init must be 'mean' or 'normal', got {init!r}")
  if init == "normal" and rng is None:
    raise ValueError("init='normal' needs an `rng` (numpy Generator)")

  def new_rows(table: np.ndarray) -> np.ndarray:  # table [V, D]
    n = new_vocab - old
    if init == "mean":
      return np.broadcast_to(table.mean(0, keepdims=True), (n, table.shape[1]))
    return rng.normal(0.0, std, size=(n, table.shape[1])).astype(table.dtype)

  out = dict(llm_params)
  out["embed_tokens"] = dict(llm_params["embed_tokens"],
                             embedding=np.concatenate([emb, new_rows(emb)]).astype(emb.dtype))
  if "lm_head" in llm_params:
    k = np.asarray(llm_params["lm_head"]["kernel"])
    grown = np.concatenate([k.T, new_rows(k.T)]).T.astype(k.dtype)
    out["lm_head"] = dict(llm_params["lm_head"], kernel=grown)
  return out


def resize_llm_for_tokenizer(config, llm_params, tokenizer, pad_to_multiple_of: int = 1,
                             **kw):
  """(LlamaConfig, params) -> grown to `len(tokenizer)` rounded up; returns both."""
  new = padded_vocab_size(len(tokenizer), pad_to_multiple_of)
  if new < config.vocab_size:
    new = config.vocab_size
  return config.replace(vocab_size=new), grow_token_rows(llm_params, new, **kw)


# ---- the static sequence layout -------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Slot:
  """A placeholder in user content: kind "image", "video" or "roi"."""
  kind: str

  def __post_init__(self):
    if self.kind not in ("image", "video", "roi"):
      raise ValueError(f"Slot kind must be 'image', 'video' or 'roi', got {self.kind!r}")


class SequenceBuilder:
  """Builds `input_ids`, `loss_mask` (tokens to predict), `query_mask` and `module_id`.

  slot_counts: `{"image": n, "video": n, "roi": n}` slots per placeholder (the frontend's
  static counts); query_counts: K per module name (0 or absent = no query bank). With routing
  "superlink" the trigger is the module token itself, otherwise `</inv>`; in "text" routing no
  queries are appended. `modules` fixes the module index order (the head's order).
  """

  def __init__(self, tokenizer, slot_counts: Mapping[str, int],
               query_counts: Mapping[str, int], routing: str = "hybrid",
               modules: Sequence[str] = T.MODULES, query_fill_id: int | None = None):
    if routing not in ROUTING_MODES:
      raise ValueError(f"routing must be one of {ROUTING_MODES}, got {routing!r}")
    self.tokenizer = tokenizer
    self.ids = protocol_ids(tokenizer)
    self.slot_counts = {"image": 0, "video": 0, "roi": 0, **dict(slot_counts)}
    self.modules = tuple(modules)
    unknown = set(query_counts) - set(self.modules)
    if unknown:
      raise ValueError(f"query_counts has modules {sorted(unknown)} not in {self.modules}")
    self.query_counts = {m: (0 if routing == "text" else int(query_counts.get(m, 0)))
                         for m in self.modules}
    self.routing = routing
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    self.fill_id = int(pad if query_fill_id is None else query_fill_id)
    self._slot_id = {"image": self.ids.image, "video": self.ids.video, "roi": self.ids.roi}

  def start(self) -> dict[str, list]:
    return {"input_ids": [], "loss_mask": [], "query_mask": [], "module_id": -1}

  def _push(self, seq, ids, loss: bool, query: bool = False):
    seq["input_ids"] += list(ids)
    seq["loss_mask"] += [loss] * len(ids)
    seq["query_mask"] += [query] * len(ids)

  def add_text(self, seq, text: str) -> None:
    """Template / system text: no loss, special strings split (never control tokens)."""
    self._push(seq, encode_user_text(self.tokenizer, text), False)

  def add_ids(self, seq, ids: Sequence[int], loss: bool = False) -> None:
    """Raw ids (e.g. BOS / EOS)."""
    self._push(seq, [int(i) for i in ids], loss)

  def add_user(self, seq, parts: Sequence[str | Slot]) -> None:
    """User content: strings as plain text, `Slot`s as their fixed number of slots."""
    for p in ([parts] if isinstance(parts, (str, Slot)) else parts):
      if isinstance(p, Slot):
        self._push(seq, [self._slot_id[p.kind]] * self.slot_counts[p.kind], False)
      else:
        self.add_text(seq, p)

  def add_assistant(self, seq, text: str, loss: bool = True) -> None:
    """Assistant text (protocol tokens recognised) under the loss; K query slots (no loss)
    follow each trigger token of a module with a bank."""
    ids = encode_model_text(self.tokenizer, text)
    current = None
    for t in ids:
      self._push(seq, [t], loss)
      mod = self.ids.module_of(t)
      if mod is not None:
        current = mod
      trigger = (mod is not None) if self.routing == "superlink" else (t == self.ids.inv_close)
      if trigger and current is not None and current in self.query_counts:
        k = self.query_counts[current]
        if k:
          if seq["module_id"] >= 0:
            raise ValueError("a sequence may carry one invocation with query slots; got a "
                             "second one")
          seq["module_id"] = self.modules.index(current)
          self._push(seq, [self.fill_id] * k, False, query=True)

  def pack(self, seqs: Sequence[Mapping[str, Any]], length: int,
           side: str = "right") -> dict[str, np.ndarray]:
    """Pad (right for training, left for prompts) to `length`; longer sequences are an error.

    Returns input_ids `[B, L]` int32, attention_mask, loss_mask, query_mask `[B, L]` bool and
    module_ids `[B]` int32 (-1 = no invocation)."""
    if side not in ("left", "right"):
      raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    b = len(seqs)
    out = {"input_ids": np.full((b, length), self.fill_id, np.int32),
           "attention_mask": np.zeros((b, length), bool),
           "loss_mask": np.zeros((b, length), bool),
           "query_mask": np.zeros((b, length), bool),
           "module_ids": np.full((b,), -1, np.int32)}
    for i, s in enumerate(seqs):
      n = len(s["input_ids"])
      if n > length:
        raise ValueError(f"sequence {i} has {n} tokens; it does not fit length {length}")
      sl = slice(0, n) if side == "right" else slice(length - n, length)
      out["input_ids"][i, sl] = s["input_ids"]
      out["attention_mask"][i, sl] = True
      out["loss_mask"][i, sl] = s["loss_mask"]
      out["query_mask"][i, sl] = s["query_mask"]
      out["module_ids"][i] = s["module_id"]
    return out
