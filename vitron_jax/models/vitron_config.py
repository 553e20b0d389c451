"""`VitronConfig`: LLM + frontend + hybrid head + synergy + the protocol token ids.

Built from an ml_collections config (`experiments/vitron_*.py`) by `vitron_config_from`:

    cfg = experiments.vitron_tiny.get_config()
    vcfg = vitron_config_from(cfg, protocol_ids(tokenizer), vocab_size=len(tokenizer))

Without a tokenizer the protocol ids are those `add_protocol_tokens` gives a tokenizer that has
none of them yet: `base_vocab_size + i` for the i-th of `tokens.all_special_tokens()` (e.g.
Vicuna: 32000 + i). The LLM's vocabulary is that many rows rounded up to
`llm.pad_vocab_to_multiple_of`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from vitron_jax.models.clip_config import CLIPVisionConfig, vision_preset
from vitron_jax.models.frontend import FrontendConfig
from vitron_jax.models.invocation import HeadConfig
from vitron_jax.models.llama import LlamaConfig
from vitron_jax.models.synergy import SynergyConfig
from vitron_jax.protocol import tokens as T
from vitron_jax.protocol.tokenizer import ProtocolIds, padded_vocab_size


@dataclasses.dataclass(frozen=True)
class SlotIds:
  """The token ids the model itself needs: slot placeholders, the `</inv>` trigger and the
  module tokens (in `tokens.MODULES` order)."""
  image: int
  video: int
  roi: int
  inv_close: int
  modules: tuple[int, ...]

  @classmethod
  def from_protocol(cls, ids: ProtocolIds) -> "SlotIds":
    return cls(ids.image, ids.video, ids.roi, ids.inv_close, tuple(ids.modules))

  def module_token(self, module: str) -> int:
    return self.modules[T.MODULES.index(module)]


def canonical_protocol_ids(base_vocab_size: int) -> ProtocolIds:
  """Ids the protocol tokens get when appended, in order, after `base_vocab_size` tokens."""
  idx = {t: base_vocab_size + i for i, t in enumerate(T.all_special_tokens())}
  return ProtocolIds(
      image=idx[T.IMAGE], video=idx[T.VIDEO], roi=idx[T.ROI], inv_open=idx[T.INV_OPEN],
      inv_close=idx[T.INV_CLOSE], cmd_open=idx[T.CMD_OPEN], cmd_close=idx[T.CMD_CLOSE],
      region_open=idx[T.REGION_OPEN], region_close=idx[T.REGION_CLOSE],
      modules=tuple(idx[T.MODULE_TOKENS[m]] for m in T.MODULES),
      locs=tuple(idx[f"<loc{q:04d}>"] for q in range(T.NUM_LOC_TOKENS)),
      times=tuple(idx[f"<t{t:02d}>"] for t in range(T.NUM_TIME_TOKENS)))


@dataclasses.dataclass(frozen=True)
class VitronConfig:
  llm: LlamaConfig
  frontend: FrontendConfig
  head: HeadConfig
  synergy: SynergyConfig
  slot_ids: SlotIds

  def __post_init__(self):
    if self.frontend.llm_hidden != self.llm.hidden_size:
      raise ValueError(f"frontend.llm_hidden ({self.frontend.llm_hidden}) must equal the LLM "
                       f"hidden_size ({self.llm.hidden_size})")
    ids = (self.slot_ids.image, self.slot_ids.video, self.slot_ids.roi,
           self.slot_ids.inv_close) + self.slot_ids.modules
    bad = [i for i in ids if not 0 <= i < self.llm.vocab_size]
    if bad:
      raise ValueError(f"protocol token ids {bad[:5]} lie outside the LLM vocabulary "
                       f"[0, {self.llm.vocab_size}); grow the LLM rows to the tokenizer")

  def to_dict(self) -> dict[str, Any]:
    """JSON-able dict (saved beside checkpoints); `from_dict` inverts it."""
    return {"llm": self.llm.to_dict(), "frontend": self.frontend.to_dict(),
            "head": dataclasses.asdict(self.head), "synergy": dataclasses.asdict(self.synergy),
            "slot_ids": dataclasses.asdict(self.slot_ids)}

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "VitronConfig":
    missing = {"llm", "frontend", "head", "synergy", "slot_ids"} - set(d)
    if missing:
      raise ValueError(f"VitronConfig.from_dict: missing sections {sorted(missing)}")
    fe = dict(d["frontend"])
    fe["vision"] = CLIPVisionConfig.from_dict(fe["vision"])
    slot = dict(d["slot_ids"])
    slot["modules"] = tuple(slot["modules"])
    return cls(LlamaConfig.from_dict(d["llm"]), FrontendConfig(**fe), HeadConfig(**d["head"]),
               SynergyConfig(**d["synergy"]), SlotIds(**slot))

  @property
  def module_ids(self) -> tuple[int, ...]:
    """Token id of each head module, in head order."""
    return tuple(self.slot_ids.module_token(m) for m in self.head.modules)


def _get(cfg: Mapping[str, Any] | Any, key: str, default=None):
  if isinstance(cfg, Mapping):
    return cfg.get(key, default)
  return getattr(cfg, key, default) if hasattr(cfg, key) else default


def _plain(d) -> dict[str, Any]:
  return d.to_dict() if hasattr(d, "to_dict") else dict(d)


def vitron_config_from(cfg: Any, ids: ProtocolIds | None = None,
                       vocab_size: int | None = None) -> VitronConfig:
  """An ml_collections config (see `experiments/vitron_tiny.py`) -> `VitronConfig`.

  `ids` are the tokenizer's protocol ids and `vocab_size` its length; without them the
  canonical ids after `cfg.llm.base_vocab_size` are used.
  """
  llm = _plain(cfg.llm)
  base = int(llm.pop("base_vocab_size"))
  multiple = int(llm.pop("pad_vocab_to_multiple_of", 1))
  preset = llm.pop("preset", None)
  if ids is None:
    ids = canonical_protocol_ids(base)
    vocab_size = base + len(T.all_special_tokens())
  elif vocab_size is None:
    raise ValueError("vitron_config_from: give the tokenizer's vocab_size with its ids")
  llm["vocab_size"] = padded_vocab_size(int(vocab_size), multiple)
  if preset == "vicuna_7b":
    llm_cfg = LlamaConfig.vicuna_7b(**llm)
  elif preset is None:
    llm_cfg = LlamaConfig(**llm)
  else:
    raise ValueError(f"unknown llm preset {preset!r}; expected 'vicuna_7b' or none")

  fe = _plain(cfg.frontend)
  vision = fe.pop("vision")
  if isinstance(vision, str):
    vision_cfg = vision_preset(vision)
  else:
    vision_cfg = CLIPVisionConfig(**_plain(vision))
  fe["region_layers"] = tuple(fe.get("region_layers", (-2,)))
  frontend = FrontendConfig(vision=vision_cfg, llm_hidden=llm_cfg.hidden_size, **fe)

  hd = _plain(cfg.head)
  backends = hd.pop("backends")  # {module: {"num_queries": K, "condition_shape": (N, W)}}
  unknown = sorted(set(backends) - set(T.MODULES))
  if unknown:
    raise ValueError(f"head.backends has unknown modules {unknown}; expected names from "
                     f"{T.MODULES}")
  modules = tuple(m for m in T.MODULES if m in backends)  # canonical order = task labels
  head = HeadConfig(modules=modules,
                    num_queries=tuple(int(backends[m]["num_queries"]) for m in modules),
                    condition_shapes=tuple(tuple(backends[m]["condition_shape"])
                                           for m in modules), **hd)
  synergy = SynergyConfig(**_plain(cfg.synergy))
  return VitronConfig(llm_cfg, frontend, head, synergy, SlotIds.from_protocol(ids))
