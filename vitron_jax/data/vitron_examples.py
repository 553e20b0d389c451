"""Samples (the `pixelworld.sample` format) -> VITRON examples of static shape (numpy).

    enc = VitronEncoder(tokenizer, layout)         # picklable: a grain transform
    example = enc(sample)                          # flat dict, one row of a training batch
    prompt = enc.prompt(sample)                    # up to the last user turn, left-padded
    batch = nest(stack([example, ...]))            # -> the nested batch `Vitron` reads

Text goes through `protocol.tokenizer.SequenceBuilder` with the Vicuna template
``<s>{system} USER: {human} ASSISTANT: {gpt}</s>``: the human text's ``<image>``, ``<video>``
and ``<roi>`` placeholders become their fixed slot counts, the gpt turns are under the loss
(their query slots after an invocation's trigger are not), then everything is right-padded to
`layout.seq_len`. With `layout.region_boxes` each ``<roi>`` is also written as its box, the
four location tokens of its mask's bounding box before its slots (Ferret's hybrid region: the
coordinates as tokens, the pooled features as slots), so that an answer that must repeat a
drawn box (a generated object "in <roi>", an edit "to <roi>") copies it. Pixels are
CLIP-normalised float32; regions become masks and boxes (`models.region_inputs`). Keys with a
"/" (``image_regions/masks``) are nested by `nest`.

A sample that does not fit (more images / regions than the layout has, longer than the
sequence, no conversation) raises `BadSampleError` with its id, which the input pipeline counts
or, when strict, stops on.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from vitron_jax.data.pipeline import BadSampleError, ChatTemplate, sample_id_of
from vitron_jax.models.region_inputs import (RegionError, mask_box, prepare_image_regions,
                                             prepare_video_regions)
from vitron_jax.protocol import invocation as I
from vitron_jax.protocol import tokens as T
from vitron_jax.protocol.tokenizer import SequenceBuilder, Slot, encode_model_text

CLIP_MEAN = np.array((0.48145466, 0.4578275, 0.40821073), np.float32)
CLIP_STD = np.array((0.26862954, 0.26130258, 0.27577711), np.float32)


def clip_pixels(images: np.ndarray) -> np.ndarray:
  """uint8 `[..., H, W, 3]` -> CLIP-normalised float32."""
  x = np.asarray(images)
  if x.dtype != np.uint8 or x.shape[-1] != 3:
    raise ValueError(f"images must be uint8 [..., H, W, 3], got {x.dtype} {x.shape}")
  return (x.astype(np.float32) / 255.0 - CLIP_MEAN) / CLIP_STD


@dataclasses.dataclass(frozen=True)
class Layout:
  """The static shapes of one example.

  slot_counts: tokens per ``<image>`` / ``<video>`` / ``<roi>``; query_counts: K per head
  module (in `modules` order, the head's); routing: the head's routing mode; image_size,
  num_frames: pixels per side and frames per video; max_images / max_regions: per sample;
  videos: whether examples carry a video input at all (False keeps image-only runs small);
  region_boxes: each ``<roi>`` also as its box's four location tokens, before its slots.
  """
  seq_len: int
  slot_counts: Mapping[str, int]
  query_counts: Mapping[str, int]
  modules: tuple[str, ...]
  routing: str
  image_size: int
  num_frames: int
  max_images: int = 1
  max_regions: int = 1
  videos: bool = True
  system: str = ChatTemplate.system
  region_boxes: bool = False

  @classmethod
  def from_config(cls, vcfg: Any, *, seq_len: int, videos: bool = True, max_images: int = 1,
                  max_regions: int = 1, system: str | None = None,
                  region_boxes: bool = False) -> "Layout":
    """From a `VitronConfig` (slot counts of its frontend, query counts of its head)."""
    fe = vcfg.frontend
    return cls(seq_len=int(seq_len),
               slot_counts={"image": fe.image_tokens, "video": fe.video_token_count,
                            "roi": fe.region_token_count},
               query_counts=dict(vcfg.head.query_counts), modules=tuple(vcfg.head.modules),
               routing=vcfg.head.routing, image_size=fe.vision.image_size,
               num_frames=fe.num_frames, max_images=max_images, max_regions=max_regions,
               videos=videos, system=ChatTemplate.system if system is None else system,
               region_boxes=bool(region_boxes))


_PLACEHOLDERS = {T.IMAGE: "image", T.VIDEO: "video", T.ROI: "roi"}


def human_parts(text: str) -> list[str | Slot]:
  """Human text -> plain strings and `Slot`s, in order."""
  parts: list[str | Slot] = []
  i = 0
  while i < len(text):
    hits = [(text.find(p, i), p) for p in _PLACEHOLDERS if text.find(p, i) >= 0]
    if not hits:
      parts.append(text[i:])
      break
    j, p = min(hits)
    if j > i:
      parts.append(text[i:j])
    parts.append(Slot(_PLACEHOLDERS[p]))
    i = j + len(p)
  return [p for p in parts if not (isinstance(p, str) and not p)]


def region_box_text(region: Mapping[str, Any], name: str = "region") -> str:
  """A region's box as location tokens: the bounding box of its mask (`[H, W]`, or `[T, H, W]`:
  of every frame's pixels), normalised as the region encoder's box (`mask_box`)."""
  m = np.asarray(region.get("mask") if isinstance(region, Mapping) else None)
  if m.ndim not in (2, 3) or not m.any():
    raise ValueError(f"{name}: expected a non-empty [H, W] or [T, H, W] mask, got "
                     f"{'an empty mask' if m.ndim in (2, 3) else f'shape {m.shape}'}")
  return I.box_to_loc_tokens(mask_box(m.reshape((-1,) + m.shape[-2:]).any(0)))


def _video_region(region: Mapping[str, Any], num_frames: int) -> list[dict | None]:
  m = np.asarray(region["mask"], bool)
  if m.shape[0] != num_frames:
    raise ValueError(f"video region mask has {m.shape[0]} frames, the layout {num_frames}")
  return [{"mask": m[t]} if m[t].any() else None for t in range(num_frames)]


class VitronEncoder:
  """Sample -> example (see the module docstring). `tokenizer` must hold the protocol tokens
  (`add_protocol_tokens`)."""

  def __init__(self, tokenizer: Any, layout: Layout):
    self.tok, self.layout = tokenizer, layout
    self.builder = SequenceBuilder(tokenizer, layout.slot_counts, layout.query_counts,
                                   layout.routing, layout.modules)
    self.template = ChatTemplate(system=layout.system)

  # -- text ---------------------------------------------------------------------------------
  def _sequence(self, sample: Mapping[str, Any], with_answers: bool) -> dict[str, list]:
    sid = sample_id_of(sample)
    conv = sample.get("conversations")
    if not conv:
      raise BadSampleError(sid, "empty conversation")
    b, t = self.builder, self.template
    seq = b.start()
    b.add_ids(seq, [self.tok.bos_token_id])
    if t.system:
      b.add_text(seq, t.system + t.sep)
    turns = list(conv)
    regions = list(sample.get("regions") or [])
    n_roi = 0  # <roi> placeholders so far: the k-th is region k
    if not with_answers:  # a prompt: the history up to the last human turn
      last = max((k for k, t in enumerate(turns) if isinstance(t, Mapping)
                  and t.get("from") == "human"), default=-1)
      turns = turns[:last + 1]
    for k, turn in enumerate(turns):
      want = "human" if k % 2 == 0 else "gpt"
      if not isinstance(turn, Mapping) or turn.get("from") != want or not str(
          turn.get("value", "")).strip():
        raise BadSampleError(sid, "malformed conversation", f"turn {k}: expected a non-empty "
                             f"{want!r} turn, got {str(turn)[:80]!r}")
      if want == "human":
        parts = [t.user] + human_parts(turn["value"]) + [t.sep + t.assistant.rstrip()]
        for p in parts:
          if self.layout.region_boxes and p == Slot("roi"):
            if n_roi >= len(regions):
              raise BadSampleError(sid, "bad region", f"<roi> {n_roi} has no region "
                                   f"({len(regions)} given)")
            try:
              box = region_box_text(regions[n_roi], f"region {n_roi}")
            except ValueError as e:
              raise BadSampleError(sid, "bad region", str(e)) from e
            b.add_ids(seq, encode_model_text(self.tok, box))
            n_roi += 1
          b.add_user(seq, p)
      else:
        if with_answers:
          try:
            b.add_assistant(seq, " " + turn["value"])
          except ValueError as e:  # a second invocation with query slots
            raise BadSampleError(sid, "malformed conversation", str(e)) from e
        else:  # earlier answers of a chat: their text, no query slots (nothing to predict)
          b.add_ids(seq, encode_model_text(self.tok, " " + turn["value"]))
        b.add_ids(seq, [self.tok.eos_token_id], loss=with_answers)
    n = len(seq["input_ids"])
    if n > self.layout.seq_len:
      raise BadSampleError(sid, "longer than the sequence",
                           f"{n} tokens > seq_len {self.layout.seq_len}")
    return seq

  # -- pixels and regions -------------------------------------------------------------------
  def _visuals(self, sample: Mapping[str, Any]) -> dict[str, np.ndarray]:
    L, sid = self.layout, sample_id_of(sample)
    s, f = L.image_size, L.num_frames
    images = list(sample.get("images") or [])
    if len(images) > L.max_images:
      raise BadSampleError(sid, "too many images", f"{len(images)} > max_images {L.max_images}")
    out = {"images": np.zeros((L.max_images, s, s, 3), np.float32),
           "image_valid": np.zeros((L.max_images,), bool)}
    for i, im in enumerate(images):
      if np.shape(im) != (s, s, 3):
        raise BadSampleError(sid, "wrong image size", f"image {i} is {np.shape(im)}, the "
                             f"layout {(s, s, 3)}")
      out["images"][i] = clip_pixels(im)
      out["image_valid"][i] = True
    video = sample.get("video")
    if L.videos:
      out["videos"] = np.zeros((1, f, s, s, 3), np.float32)
      out["video_valid"] = np.zeros((1,), bool)
      if video is not None:
        if np.shape(video) != (f, s, s, 3):
          raise BadSampleError(sid, "wrong video size", f"video is {np.shape(video)}, the "
                               f"layout {(f, s, s, 3)}")
        out["videos"][0] = clip_pixels(video)
        out["video_valid"][0] = True
    elif video is not None:
      raise BadSampleError(sid, "video in an image-only run", "layout.videos is False")
    regions = list(sample.get("regions") or [])
    if len(regions) > L.max_regions:
      raise BadSampleError(sid, "too many regions", f"{len(regions)} > max_regions "
                           f"{L.max_regions}")
    image_regs = [{"mask": r["mask"]} for r in regions if np.ndim(r["mask"]) == 2]
    video_regs = [_video_region(r, f) for r in regions if np.ndim(r["mask"]) == 3]
    try:
      groups = {"image_regions": prepare_image_regions([image_regs], s, s, L.max_regions)}
      if L.videos:
        groups["video_regions"] = prepare_video_regions([video_regs], f, s, s, L.max_regions)
      elif video_regs:
        raise RegionError("a video region in an image-only run")
    except (RegionError, ValueError) as e:
      raise BadSampleError(sid, "bad region", str(e)) from e
    for group, arrays in groups.items():
      for k, v in arrays.items():
        out[f"{group}/{k}"] = v[0]
    return out

  # -- examples -----------------------------------------------------------------------------
  def __call__(self, sample: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A training example: the whole conversation, right-padded to `seq_len`."""
    seq = self._sequence(sample, with_answers=True)
    rows = self.builder.pack([seq], self.layout.seq_len, side="right")
    out = {k: v[0] for k, v in rows.items()}
    out.update(self._visuals(sample))
    return out

  def prompt(self, sample: Mapping[str, Any], length: int | None = None
             ) -> dict[str, np.ndarray]:
    """The conversation up to its last user turn and ``ASSISTANT:`` (a final answer, if any,
    left out), left-padded to `length` (default seq_len)."""
    seq = self._sequence(sample, with_answers=False)
    rows = self.builder.pack([seq], length or self.layout.seq_len, side="left")
    out = {k: v[0] for k, v in rows.items() if k in ("input_ids", "attention_mask")}
    out.update(self._visuals(sample))
    return out


def nest(batch: Mapping[str, Any]) -> dict[str, Any]:
  """Flat keys ``a/b`` -> nested dicts (the batch layout `Vitron` reads)."""
  out: dict[str, Any] = {}
  for k, v in batch.items():
    if "/" in k:
      group, name = k.split("/", 1)
      out.setdefault(group, {})[name] = v
    else:
      out[k] = v
  return out


def stack(examples: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
  """Examples -> a batch (leading axis)."""
  if not examples:
    raise ValueError("stack: no examples")
  return {k: np.stack([np.asarray(e[k]) for e in examples]) for k in examples[0]}
