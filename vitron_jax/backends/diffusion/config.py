"""Config dataclasses that read and write diffusers' `config.json` dicts.

Each network config is a frozen dataclass whose fields are the diffusers constructor
arguments (same names, same defaults). `from_diffusers(d)` accepts a diffusers config dict
(lists become tuples, `_`-prefixed metadata is skipped) and refuses keys it does not know and
known options this port does not implement with a non-default value, so no checkpoint is
ever loaded into a network that silently differs from the reference.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Mapping

#: written into exported `config.json` files (the diffusers version these ports match).
DIFFUSERS_VERSION = "0.42.1"


def _freeze(v: Any) -> Any:
  if isinstance(v, (list, tuple)):
    return tuple(_freeze(a) for a in v)
  return v


def _thaw(v: Any) -> Any:
  if isinstance(v, tuple):
    return [_thaw(a) for a in v]
  return v


@dataclasses.dataclass(frozen=True)
class DiffusersConfig:
  """Base: subclasses set `_class_name` and list `_unsupported` {key: the only value allowed}."""
  _class_name: ClassVar[str] = ""
  _unsupported: ClassVar[Mapping[str, Any]] = {}
  #: fields of this port that are not diffusers options (read if present, never written).
  _local_fields: ClassVar[tuple[str, ...]] = ()

  def validate(self) -> None:
    """Raise ValueError for inconsistent settings (subclasses extend)."""

  def __post_init__(self):
    for f in dataclasses.fields(self):
      v = getattr(self, f.name)
      if isinstance(v, list):
        object.__setattr__(self, f.name, _freeze(v))

  @classmethod
  def from_diffusers(cls, d: Mapping[str, Any]):
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs, unknown, unsupported = {}, [], []
    for k, v in d.items():
      if k.startswith("_"):
        continue
      if k in names:
        kwargs[k] = _freeze(v)
      elif k in cls._unsupported:
        allowed = cls._unsupported[k]
        if _freeze(v) != allowed and not (v in (None, False) and allowed in (None, False)):
          unsupported.append(f"{k}={v!r} (only {allowed!r} is implemented)")
      else:
        unknown.append(k)
    if unknown:
      raise ValueError(f"{cls._class_name} config has keys this port does not know: "
                       f"{sorted(unknown)}")
    if unsupported:
      raise ValueError(f"{cls._class_name} config uses options this port does not implement: "
                       + "; ".join(unsupported))
    cfg = cls(**kwargs)
    cfg.validate()
    return cfg

  def to_diffusers(self) -> dict[str, Any]:
    out: dict[str, Any] = {"_class_name": self._class_name,
                           "_diffusers_version": DIFFUSERS_VERSION}
    for f in dataclasses.fields(self):
      if f.name not in self._local_fields:
        out[f.name] = _thaw(getattr(self, f.name))
    return out

  def to_dict(self) -> dict[str, Any]:
    """This port's own JSON-able form (every field, including local ones)."""
    return {f.name: _thaw(getattr(self, f.name)) for f in dataclasses.fields(self)}

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]):
    """Inverse of `to_dict` (unknown keys raise TypeError naming them)."""
    cfg = cls(**{k: _freeze(v) for k, v in d.items()})
    cfg.validate()
    return cfg
