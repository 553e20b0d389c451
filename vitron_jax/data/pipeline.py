"""grain input pipelines for training: host sharding, mixtures, decode, tokenize, pad / pack.

The data flow for one host (`make_pipeline`):

    sources (grain MapDatasets of sample dicts, `vitron_jax.data.pixelworld.sample` format)
      -> each shuffled (global, same seed on every host) and repeated
      -> mixed by weights (`MapDataset.mix`)
      -> this host's rows of every global batch (`HostShard`)
      -> per-sample transforms in grain (workers): decode/resize, tokenize, pad; a failure on
         one sample becomes a *bad-sample marker* (`guard`) instead of killing the worker
      -> `Batcher` (main process): skips and counts markers (or raises when strict), packs or
         stacks into static `[local_batch, ...]` numpy arrays.

`Batcher.get_state()` is JSON (grain's iterator state + the packing buffer + the bad-sample
counts), so a checkpoint restores the pipeline exactly. Host sharding is *block* sharding:
host h of P takes rows `[h * B/P, (h + 1) * B/P)` of every global batch of B rows, so the
global batch is the same whatever the number of hosts (bad samples aside).
"""
from __future__ import annotations

import collections
import dataclasses
import io
import logging
from typing import Any, Callable, Iterator, Mapping, Sequence

import grain.python as grain
import numpy as np

BAD_KEY = "__bad__"


class BadSampleError(ValueError):
  """One sample cannot be used (undecodable image, missing file, empty conversation, too long).

  `sample_id` names it; `reason` is a short category used for counting."""

  def __init__(self, sample_id: str, reason: str, detail: str = ""):
    self.sample_id, self.reason, self.detail = str(sample_id), reason, detail
    super().__init__(f"bad sample {self.sample_id!r}: {reason}" + (f" ({detail})" if detail
                                                                    else ""))


class BadDataLimitError(RuntimeError):
  """Too many bad samples (more than `max_bad_fraction` of those read)."""


def sample_id_of(element: Any) -> str:
  if isinstance(element, Mapping):
    return str(element.get("id", "<no id>"))
  return "<no id>"


def bad_marker(err: BadSampleError) -> dict[str, Any]:
  return {BAD_KEY: {"id": err.sample_id, "reason": err.reason, "detail": err.detail}}


def is_bad(element: Any) -> bool:
  return isinstance(element, Mapping) and BAD_KEY in element


# Decode failures that mean "this sample's file is broken", not "the code is broken".
_DATA_ERRORS: tuple[type[BaseException], ...] = (OSError, EOFError)


class Guard(grain.MapTransform):
  """Wrap a per-sample function (picklable, for grain workers): `BadSampleError` (and I/O /
  decode errors) -> a bad-sample marker carrying the sample id; markers pass through
  untouched; any other error propagates (a bug, not bad data)."""

  def __init__(self, fn: Callable[[Any], Any], reason: str = "decode error"):
    self.fn, self.reason = fn, reason

  def map(self, element):
    if is_bad(element):
      return element
    try:
      return self.fn(element)
    except BadSampleError as e:
      return bad_marker(e)
    except _DATA_ERRORS as e:  # e.g. PIL.UnidentifiedImageError, FileNotFoundError
      return bad_marker(BadSampleError(sample_id_of(element), self.reason,
                                       f"{type(e).__name__}: {e}"))


def guard(fn: Callable[[Any], Any], reason: str = "decode error") -> Guard:
  return Guard(fn, reason)


# ------------------------------------------------------------------------- host sharding


class HostShard(grain.MapDataset):
  """Rows of every global batch that belong to one host (block sharding, see module doc).

  Element i of this host is parent element `(i // local) * global + host * local + i % local`
  where `local = global_batch // process_count`."""

  def __init__(self, parent: grain.MapDataset, global_batch: int, process_index: int,
               process_count: int):
    super().__init__(parent)
    if global_batch % process_count:
      raise ValueError(f"global batch {global_batch} is not divisible by the {process_count} "
                       f"processes")
    if not 0 <= process_index < process_count:
      raise ValueError(f"process_index {process_index} not in [0, {process_count})")
    self.global_batch, self.local = global_batch, global_batch // process_count
    self.offset = process_index * self.local
    self._len = (len(parent) // global_batch) * self.local

  def __len__(self) -> int:
    return self._len

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    i = int(index)
    return self._parent[(i // self.local) * self.global_batch + self.offset + i % self.local]

  def __str__(self) -> str:
    return f"HostShard(offset={self.offset}, local={self.local}, global={self.global_batch})"


def mixture(datasets: Sequence[grain.MapDataset], weights: Sequence[float] | None = None, *,
            seed: int = 0, shuffle: bool = True, num_epochs: int | None = None
            ) -> grain.MapDataset:
  """Shuffle each dataset (globally, per epoch), repeat it, and mix them by `weights`."""
  if not datasets:
    raise ValueError("mixture needs at least one dataset")
  if weights is not None:
    if len(weights) != len(datasets):
      raise ValueError(f"{len(weights)} weights for {len(datasets)} datasets")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
      raise ValueError(f"mixture weights must be >= 0 with a positive sum, got {list(weights)}")
  out = []
  for i, ds in enumerate(datasets):
    if shuffle:
      ds = ds.shuffle(seed=seed + 7919 * i)
    out.append(ds.repeat(num_epochs))
  if len(out) == 1:
    return out[0]
  return grain.MapDataset.mix(out, weights)


# ------------------------------------------------------------------------- text -> tokens


@dataclasses.dataclass(frozen=True)
class ChatTemplate:
  """Vicuna v1 style: ``{system} USER: {human} ASSISTANT: {gpt}</s>USER: ...``."""
  system: str = ("A chat between a curious user and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the user's "
                 "questions.")
  user: str = "USER: "
  assistant: str = "ASSISTANT: "
  sep: str = " "


def tokenize_conversation(sample: Mapping[str, Any], encode: Callable[[str], Sequence[int]],
                          *, bos_id: int | None, eos_id: int,
                          template: ChatTemplate = ChatTemplate()) -> dict[str, np.ndarray]:
  """LLaVA-style `conversations` -> `input_ids` int32 `[n]`, `loss_mask` bool `[n]` (the gpt
  turns and their EOS are predicted). Raises `BadSampleError` for an empty or malformed
  conversation."""
  sid = sample_id_of(sample)
  conv = sample.get("conversations")
  if not conv:
    raise BadSampleError(sid, "empty conversation")
  if not isinstance(conv, (list, tuple)):
    raise BadSampleError(sid, "malformed conversation",
                         f"conversations is a {type(conv).__name__}, expected a list")
  ids: list[int] = [] if bos_id is None else [int(bos_id)]
  mask: list[bool] = [False] * len(ids)

  def push(tokens, loss):
    ids.extend(int(t) for t in tokens)
    mask.extend([loss] * len(tokens))

  push(encode(template.system + template.sep), False)
  n_gpt = 0
  for k, turn in enumerate(conv):
    if not isinstance(turn, Mapping):
      raise BadSampleError(sid, "malformed conversation",
                           f"turn {k} is a {type(turn).__name__}, expected an object")
    role, value = turn.get("from"), turn.get("value")
    want = "human" if k % 2 == 0 else "gpt"
    if role != want:
      raise BadSampleError(sid, "malformed conversation",
                           f"turn {k} is from {role!r}, expected {want!r}")
    if not isinstance(value, str) or not value.strip():
      raise BadSampleError(sid, "empty conversation", f"turn {k} has no text")
    if role == "human":
      push(encode(template.user + value + template.sep + template.assistant), False)
    else:
      push(encode(value), True)
      push([eos_id], True)
      n_gpt += 1
  if n_gpt == 0:
    raise BadSampleError(sid, "empty conversation", "no gpt turn to learn from")
  return {"input_ids": np.asarray(ids, np.int32), "loss_mask": np.asarray(mask, bool)}


def pad_to_length(element: Mapping[str, Any], length: int, pad_id: int = 0,
                  keys: Sequence[str] = ("input_ids", "loss_mask")) -> dict[str, Any]:
  """Right-pad the 1-D token arrays `keys` to `length` and add `attention_mask`; a longer
  sample is a `BadSampleError` (never clipped)."""
  n = len(element[keys[0]])
  if n > length:
    raise BadSampleError(sample_id_of(element), "longer than the sequence",
                         f"{n} tokens > seq_len {length}")
  out = dict(element)
  for k in keys:
    a = np.asarray(element[k])
    fill = pad_id if k == "input_ids" else 0
    out[k] = np.concatenate([a, np.full((length - n,), fill, a.dtype)])
  out["attention_mask"] = np.arange(length) < n
  return out


# ---------------------------------------------------------------------------- decode


def decode_image(data: bytes | np.ndarray, size: int | None, sample_id: str,
                 name: str = "image") -> np.ndarray:
  """Encoded bytes (PNG/JPEG/...) or an array -> uint8 `[size, size, 3]` (bicubic resize).
  Undecodable bytes raise `BadSampleError(reason="undecodable image")`."""
  import PIL.Image  # pylint: disable=import-outside-toplevel
  if isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 3:
    im = PIL.Image.fromarray(data)
  else:
    try:
      im = PIL.Image.open(io.BytesIO(bytes(data)))
      im.load()
    except Exception as e:  # PIL raises several types for broken files
      raise BadSampleError(sample_id, "undecodable image", f"{name}: {e}") from e
  im = im.convert("RGB")
  if size is not None and im.size != (size, size):
    im = im.resize((size, size), PIL.Image.BICUBIC)
  return np.asarray(im, np.uint8)


# ---------------------------------------------------------------------------- batching


class Batcher:
  """Host-local batches from a grain iterator of per-sample dicts (or bad markers).

  Stacks `local_batch` good samples (each a dict of equally shaped numpy arrays; non-array
  values such as ids are dropped from the batch). Bad samples are counted by reason and
  logged by id, or raise in strict mode; `max_bad_fraction` stops a run whose data is mostly
  broken (more than `max_bad_fraction` of `max(seen, min_seen)` samples bad, or
  `max_consecutive_bad` in a row). With `pack_length`, 1-D token samples are packed first-fit into rows of that length
  with `segment_ids` (0 = padding) and `positions` (see `pack_rows`).
  """

  def __init__(self, dataset: grain.IterDataset | grain.MapDataset, local_batch: int, *,
               strict: bool = False, max_bad_fraction: float = 1.0,
               pack_length: int | None = None, pack_keys: Sequence[str] = ("input_ids",
                                                                           "loss_mask"),
               keep_bad_ids: int = 100, min_seen: int = 1000,
               max_consecutive_bad: int = 1000):
    if local_batch <= 0:
      raise ValueError(f"local_batch must be positive, got {local_batch}")
    if isinstance(dataset, grain.MapDataset):
      dataset = dataset.to_iter_dataset()
    self._it = iter(dataset)
    self.local_batch, self.strict = int(local_batch), bool(strict)
    self.max_bad_fraction = float(max_bad_fraction)
    self.pack_length, self.pack_keys = pack_length, tuple(pack_keys)
    self.keep_bad_ids = keep_bad_ids
    self.min_seen, self.max_consecutive_bad = int(min_seen), int(max_consecutive_bad)
    self._run_of_bad = 0
    self.seen = 0
    self.bad_counts: collections.Counter = collections.Counter()
    self.bad_ids: list[list[str]] = []
    self._buffer: list[dict[str, list]] = []  # packing leftovers (JSON-able)

  # -- state --------------------------------------------------------------------------------
  def get_state(self) -> dict[str, Any]:
    return {"grain": self._it.get_state(), "seen": self.seen,
            "bad_counts": dict(self.bad_counts), "bad_ids": list(self.bad_ids),
            "buffer": list(self._buffer)}

  def set_state(self, state: Mapping[str, Any]) -> None:
    self._it.set_state(state["grain"])
    self.seen = int(state.get("seen", 0))
    self.bad_counts = collections.Counter(state.get("bad_counts", {}))
    self.bad_ids = [list(x) for x in state.get("bad_ids", [])]
    self._buffer = [dict(x) for x in state.get("buffer", [])]

  def close(self) -> None:
    """Stop grain worker processes (if any)."""
    if hasattr(self._it, "close"):
      self._it.close()

  def stats(self) -> dict[str, Any]:
    return {"seen": self.seen, "bad": sum(self.bad_counts.values()),
            "bad_by_reason": dict(self.bad_counts), "bad_ids": list(self.bad_ids)}

  # -- iteration ----------------------------------------------------------------------------
  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    return self

  def _next_good(self) -> dict[str, Any]:
    while True:
      element = next(self._it)
      self.seen += 1
      if not is_bad(element):
        self._run_of_bad = 0
        return element
      self._run_of_bad += 1
      info = element[BAD_KEY]
      if self.strict:
        raise BadSampleError(info["id"], info["reason"], info.get("detail", ""))
      self.bad_counts[info["reason"]] += 1
      if len(self.bad_ids) < self.keep_bad_ids:
        self.bad_ids.append([info["id"], info["reason"]])
      logging.warning("skipping bad sample %r: %s %s", info["id"], info["reason"],
                      info.get("detail", ""))
      bad = sum(self.bad_counts.values())
      if bad > self.max_bad_fraction * max(self.seen, self.min_seen):
        raise BadDataLimitError(
            f"{bad} of {self.seen} samples are bad (more than data.max_bad_fraction="
            f"{self.max_bad_fraction} of max(seen, {self.min_seen})); by reason: "
            f"{dict(self.bad_counts)}; first: {self.bad_ids[:5]}")
      if self._run_of_bad >= self.max_consecutive_bad:
        raise BadDataLimitError(
            f"{self._run_of_bad} bad samples in a row; by reason: {dict(self.bad_counts)}; "
            f"first: {self.bad_ids[:5]}")

  def __next__(self) -> dict[str, np.ndarray]:
    if self.pack_length:
      return self._next_packed()
    rows = [self._next_good() for _ in range(self.local_batch)]
    keys = [k for k, v in rows[0].items() if isinstance(v, (np.ndarray, np.generic, int, float,
                                                               bool))]
    out = {}
    for k in keys:
      try:
        out[k] = np.stack([np.asarray(r[k]) for r in rows])
      except ValueError as e:
        raise ValueError(f"batch key {k!r}: samples have different shapes "
                         f"{[np.shape(r[k]) for r in rows]}; pad them to static shapes first"
                         ) from e
    return out

  def _next_packed(self) -> dict[str, np.ndarray]:
    length = int(self.pack_length)
    while len(self._buffer) < 4 * self.local_batch:
      el = self._next_good()
      n = len(el[self.pack_keys[0]])
      if n > length:
        raise BadSampleError(sample_id_of(el), "longer than the sequence",
                             f"{n} tokens > pack length {length}")
      self._buffer.append({k: np.asarray(el[k]).tolist() for k in self.pack_keys})
    rows, self._buffer = pack_rows(self._buffer, self.local_batch, length, self.pack_keys)
    return rows


def pack_rows(pending: list[dict[str, list]], num_rows: int, length: int,
              keys: Sequence[str]) -> tuple[dict[str, np.ndarray], list[dict[str, list]]]:
  """First-fit packing of 1-D samples (in order) into `num_rows` rows of `length`.

  Returns (rows, leftovers): for each key `[num_rows, length]` arrays plus `segment_ids`
  int32 (1, 2, ... per sample in the row, 0 = padding), `positions` int32 (restarting at 0 in
  each segment) and `attention_mask` (segment_ids > 0). Samples that fit no row stay pending.
  """
  used = [0] * num_rows
  segs = [0] * num_rows
  out = {k: np.zeros((num_rows, length), np.asarray(pending[0][k]).dtype if pending else np.int32)
         for k in keys}
  seg_ids = np.zeros((num_rows, length), np.int32)
  pos = np.zeros((num_rows, length), np.int32)
  left = []
  for s in pending:
    n = len(s[keys[0]])
    row = next((r for r in range(num_rows) if used[r] + n <= length), None)
    if row is None:
      left.append(s)
      continue
    a, b = used[row], used[row] + n
    for k in keys:
      out[k][row, a:b] = s[k]
    segs[row] += 1
    seg_ids[row, a:b] = segs[row]
    pos[row, a:b] = np.arange(n)
    used[row] = b
  out["segment_ids"], out["positions"] = seg_ids, pos
  out["attention_mask"] = seg_ids > 0
  return out, left


def make_pipeline(sources: Sequence[grain.MapDataset], *, global_batch: int,
                  process_index: int = 0, process_count: int = 1,
                  weights: Sequence[float] | None = None,
                  transforms: Sequence[Callable[[Any], Any]] = (), seed: int = 0,
                  shuffle: bool = True, num_workers: int = 0, strict: bool = False,
                  max_bad_fraction: float = 1.0, min_seen: int = 1000,
                  pack_length: int | None = None,
                  pack_keys: Sequence[str] = ("input_ids", "loss_mask")) -> Batcher:
  """The whole host pipeline (see the module docstring) as a checkpointable `Batcher`.

  `transforms` are per-sample functions run in grain (in `num_workers` processes when > 0),
  each guarded so a `BadSampleError` (or a file / decode error) marks that sample bad."""
  ds = mixture(sources, weights, seed=seed, shuffle=shuffle)
  ds = HostShard(ds, global_batch, process_index, process_count)
  for fn in transforms:
    ds = ds.map(guard(fn))
  it_ds = ds.to_iter_dataset()
  if num_workers > 0:
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return Batcher(it_ds, global_batch // process_count, strict=strict,
                 max_bad_fraction=max_bad_fraction, min_seen=min_seen,
                 pack_length=pack_length, pack_keys=pack_keys)
