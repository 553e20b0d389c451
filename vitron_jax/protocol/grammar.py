"""The invocation grammar as a token automaton, for constrained decoding.

An answer is free text until the model writes ``<inv>``; from there on the decoder may only
write what `invocation.parse` accepts (its module docstring has the grammar)::

  <inv> MODULE <cmd> WORD+ </cmd> [<region> (LOC LOC LOC LOC)* [TIME TIME] </region>] </inv>

with x1 <= x2 and y1 <= y2 in every box, first <= last in a time span, a non-empty region, a
command that starts with a token that is not whitespace, no protocol or control token inside
it and no stop token before ``</inv>``. After
``</inv>`` the text is free again. Structured generation of this kind is what function-calling
servers do (grammar-guided decoding): the model still chooses the module, the command, the
boxes and whether to call at all; the grammar only removes the tokens that would make the call
unparseable.

The token budget is part of the grammar: a token is allowed only if the invocation it leads
to can still be closed within the tokens left (`max_new_tokens`), so an answer that runs long
ends its boxes and closes instead of being cut mid-region. `max_boxes` (optional) caps the
boxes of one region.

The automaton's state is four int32 arrays per row (mode, location tokens so far, and the
first two coordinates of the current box or the first frame of the time span); `allowed` and
`advance` run inside jitted decoding loops (`models.vitron_decoding`), `transition` is the one
table both use.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from vitron_jax.protocol.tokenizer import ProtocolIds, control_ids, protocol_ids

# token classes
OTHER, INV_OPEN, INV_CLOSE, CMD_OPEN, CMD_CLOSE, REGION_OPEN, REGION_CLOSE, MODULE, LOC, \
    TIME, STOP, CONTROL, SPACE = range(13)
# automaton modes: free text, then the invocation's positions in the grammar's order
TEXT, WANT_MODULE, WANT_CMD, WANT_WORD, IN_CMD, AFTER_CMD, IN_REGION, WANT_TIME, \
    WANT_REGION_CLOSE, WANT_INV_CLOSE = range(10)
NUM_MODES = 10
# tokens that close an invocation from each mode (IN_REGION's depends on the region so far)
_CLOSING = (0, 5, 4, 3, 2, 1, 0, 3, 2, 1)


class GrammarState(NamedTuple):
  mode: object   # int32 [B]
  count: object  # int32 [B]: location tokens in the open region
  first: object  # int32 [B]: the current box's x1, or the time span's first frame
  second: object  # int32 [B]: the current box's y1


@dataclasses.dataclass(frozen=True)
class InvocationGrammar:
  """Per token id of an LLM vocabulary: its class (`classes`) and, for location and time
  tokens, its value (`values`: q of ``<locNNNN>``, t of ``<tNN>``); `max_boxes` caps the
  boxes of one region (None: only the token budget does)."""
  classes: tuple[int, ...]
  values: tuple[int, ...]
  max_boxes: int | None = None

  def __post_init__(self):
    if len(self.classes) != len(self.values):
      raise ValueError(f"classes ({len(self.classes)}) and values ({len(self.values)}) must "
                       f"cover the same vocabulary")
    if self.max_boxes is not None and (isinstance(self.max_boxes, bool)
                                       or int(self.max_boxes) != self.max_boxes
                                       or self.max_boxes < 1):
      raise ValueError(f"max_boxes must be a positive integer or None, got {self.max_boxes!r}")

  @classmethod
  def from_ids(cls, ids: ProtocolIds, vocab_size: int, stop_tokens=(), control_ids=(),
               max_boxes: int | None = None, num_tokens: int | None = None, space_ids=()
               ) -> "InvocationGrammar":
    """The grammar over a vocabulary of `vocab_size` ids (the LLM's logits, padding rows
    included) whose protocol tokens are `ids`; `stop_tokens` end an answer (refused inside an
    invocation), `control_ids` (bos, pad, ...) and the padding rows at or above `num_tokens`
    (the tokenizer's size) are refused inside one; `space_ids` (tokens that are whitespace)
    may not start a command."""
    classes = np.full(vocab_size, OTHER, np.int32)
    classes[[int(i) for i in space_ids]] = SPACE
    if num_tokens is not None:
      classes[int(num_tokens):] = CONTROL
    values = np.zeros(vocab_size, np.int32)
    protocol = [i for i in ids.all if not 0 <= i < vocab_size]
    if protocol:
      raise ValueError(f"protocol token ids {sorted(protocol)[:5]} are outside the "
                       f"vocabulary of {vocab_size}")
    for i in tuple(control_ids) + (ids.image, ids.video, ids.roi):
      if 0 <= int(i) < vocab_size:
        classes[int(i)] = CONTROL
    for i, c in ((ids.inv_open, INV_OPEN), (ids.inv_close, INV_CLOSE),
                 (ids.cmd_open, CMD_OPEN), (ids.cmd_close, CMD_CLOSE),
                 (ids.region_open, REGION_OPEN), (ids.region_close, REGION_CLOSE)):
      classes[i] = c
    classes[list(ids.modules)] = MODULE
    classes[list(ids.locs)], values[list(ids.locs)] = LOC, np.arange(len(ids.locs))
    classes[list(ids.times)], values[list(ids.times)] = TIME, np.arange(len(ids.times))
    for i in stop_tokens:
      if not 0 <= int(i) < vocab_size:
        raise ValueError(f"stop token {i} is outside the vocabulary of {vocab_size}")
      classes[int(i)] = STOP
    return cls(tuple(int(c) for c in classes), tuple(int(v) for v in values), max_boxes)

  @classmethod
  def from_tokenizer(cls, tokenizer, vocab_size: int, stop_tokens=(),
                     max_boxes: int | None = None) -> "InvocationGrammar":
    """`from_ids` with a tokenizer's protocol ids, its special ids as control tokens, the ids
    past its size as padding rows and the tokens that decode to whitespace as spaces."""
    n = min(len(tokenizer), vocab_size)
    space = [i for i, t in enumerate(tokenizer.batch_decode([[i] for i in range(n)]))
             if not t.strip()]
    return cls.from_ids(protocol_ids(tokenizer), vocab_size, stop_tokens,
                        sorted(control_ids(tokenizer)), max_boxes, num_tokens=len(tokenizer),
                        space_ids=space)

  @property
  def vocab_size(self) -> int:
    return len(self.classes)

  def init(self, batch: int) -> GrammarState:
    z = jnp.zeros((batch,), jnp.int32)
    return GrammarState(z + TEXT, z, z, z)

  def allowed(self, state: GrammarState, left: object) -> object:
    """bool `[B, vocab]`: the tokens the grammar allows next, given `left` (int, scalar or
    `[B]`) tokens that may still follow this one. A row with nothing allowed (not reachable
    from `init` with a budget of at least 0) allows everything."""
    cls_, val = jnp.asarray(self.classes)[None], jnp.asarray(self.values)[None]
    s = GrammarState(*(x[:, None] for x in state))
    ok, nxt = transition(s, cls_, val, self.max_boxes)
    ok = ok & (closing_cost(nxt) <= jnp.reshape(jnp.asarray(left), (-1, 1)))
    return ok | ~jnp.any(ok, axis=-1, keepdims=True)

  def advance(self, state: GrammarState, tok: object) -> GrammarState:
    """The state after token ids `tok` `[B]` (a token the grammar refuses, e.g. a forced one,
    drops the row back to free text)."""
    ok, nxt = transition(state, jnp.asarray(self.classes)[tok],
                         jnp.asarray(self.values)[tok], self.max_boxes)
    return GrammarState(*(jnp.where(ok, n, jnp.zeros_like(n) + d)
                          for n, d in zip(nxt, (TEXT, 0, 0, 0))))


def transition(s: GrammarState, c, v, max_boxes: int | None):
  """(valid, next state) of token class `c` with value `v` in state `s` (arrays broadcast
  against each other)."""
  mode, count, first, second = s
  pos = count % 4
  whole = pos == 0
  loc_ok = (c == LOC) & jnp.where(pos == 2, v >= first, True) & jnp.where(pos == 3, v >= second,
                                                                           True)
  if max_boxes is not None:
    loc_ok = loc_ok & (count < 4 * max_boxes)
  at = [mode == m for m in range(NUM_MODES)]  # one condition per mode, in the modes' order
  valid = jnp.select(at, [
      c >= 0,                                                              # TEXT
      c == MODULE,                                                         # WANT_MODULE
      c == CMD_OPEN,                                                       # WANT_CMD
      c == OTHER,                                                          # WANT_WORD
      (c == OTHER) | (c == SPACE) | (c == CMD_CLOSE),                      # IN_CMD
      (c == REGION_OPEN) | (c == INV_CLOSE),                               # AFTER_CMD
      loc_ok | (whole & (c == TIME)) | (whole & (count > 0) & (c == REGION_CLOSE)),  # IN_REGION
      (c == TIME) & (v >= first),                                          # WANT_TIME
      c == REGION_CLOSE,                                                   # WANT_REGION_CLOSE
      c == INV_CLOSE], False)                                              # WANT_INV_CLOSE
  next_mode = jnp.select(at, [
      jnp.where(c == INV_OPEN, WANT_MODULE, TEXT), WANT_CMD, WANT_WORD, IN_CMD,
      jnp.where(c == CMD_CLOSE, AFTER_CMD, IN_CMD),
      jnp.where(c == REGION_OPEN, IN_REGION, TEXT),
      jnp.select([c == LOC, c == TIME], [IN_REGION, WANT_TIME], WANT_INV_CLOSE),
      WANT_REGION_CLOSE, WANT_INV_CLOSE, TEXT], TEXT)
  in_region = mode == IN_REGION
  next_count = jnp.where(in_region & (c == LOC), count + 1, jnp.where(in_region, count, 0))
  next_first = jnp.where(in_region & (((c == LOC) & (pos == 0)) | (c == TIME)), v, first)
  next_second = jnp.where(in_region & (c == LOC) & (pos == 1), v, second)
  shape = jnp.broadcast_shapes(jnp.shape(valid), jnp.shape(next_mode))
  nxt = GrammarState(*(jnp.broadcast_to(x, shape).astype(jnp.int32)
                       for x in (next_mode, next_count, next_first, next_second)))
  return jnp.broadcast_to(valid, shape), nxt


def closing_cost(s: GrammarState):
  """The fewest tokens that close the invocation from state `s` (0 in free text); in a region,
  the rest of the current box (a whole empty region: one box) and `</region>` `</inv>`."""
  region = jnp.where(s.count == 0, 4, (4 - s.count % 4) % 4) + 2
  return jnp.where(s.mode == IN_REGION, region, jnp.asarray(_CLOSING)[s.mode])
