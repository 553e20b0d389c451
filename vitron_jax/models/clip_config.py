"""Configurations of the CLIP vision and text towers, convertible to and from HF configs.

`CLIPVisionConfig` / `CLIPTextConfig` hold exactly the fields that shape the network (plus the
token ids the text pooler needs). `from_hf` accepts a transformers config object or a
`config.json` dict — of the tower itself or of a full `CLIPModel` (then the tower's sub-config
is taken and the top-level `projection_dim`, which `CLIPModel`'s projections use, wins).
`to_hf(architecture)` gives a `config.json` dict that transformers' `from_pretrained` reads.

Presets (`vision_preset(name)` / `text_preset(name)`) carry the published configs:

* vision `"vit_l14"` (openai/clip-vit-large-patch14, 224 px), `"vit_l14_336"` (VITRON's
  frontend, openai/clip-vit-large-patch14-336), `"vit_h14"` (OpenCLIP ViT-H/14, the
  I2VGen-XL image encoder);
* text `"sd1"` (the SD-1.x text encoder = CLIP-L text, 77 tokens, width 768) and
  `"openclip_h"` (OpenCLIP-H text as in SD-2 / ZeroScope / I2VGen-XL: width 1024, 23 layers,
  i.e. the 24-layer tower without its last layer, gelu). Both keep the Hub configs' legacy
  `eos_token_id = 2`, so pooling takes the argmax of the ids (see `CLIPTextConfig`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from vitron_jax.nn.mlp import ACTIVATIONS

VISION_MODEL_TYPE = "clip_vision_model"
TEXT_MODEL_TYPE = "clip_text_model"


def _as_dict(cfg: Any) -> dict[str, Any]:
  if isinstance(cfg, Mapping):
    return dict(cfg)
  if hasattr(cfg, "to_dict"):
    return dict(cfg.to_dict())
  raise TypeError(f"expected a HF config object or a config dict, got {type(cfg).__name__}")


def _tower_dict(cfg: Any, sub: str) -> dict[str, Any]:
  """The tower's config dict; from a full CLIPModel config take `sub` and its projection_dim."""
  d = _as_dict(cfg)
  if sub in d:
    inner = _as_dict(d[sub] or {})
    if d.get("projection_dim") is not None:
      inner["projection_dim"] = d["projection_dim"]
    return inner
  return d


def _square(value: Any, name: str) -> int:
  if isinstance(value, (list, tuple)):
    if len(value) != 2 or value[0] != value[1]:
      raise ValueError(f"CLIP {name} must be square (an int or [n, n]), got {value!r}")
    value = value[0]
  return int(value)


def _common_checks(cfg: Any, kind: str) -> None:
  if cfg.hidden_size % cfg.num_attention_heads:
    raise ValueError(f"{kind}: hidden_size ({cfg.hidden_size}) must be a multiple of "
                     f"num_attention_heads ({cfg.num_attention_heads})")
  if cfg.hidden_act not in ACTIVATIONS:
    raise ValueError(f"{kind}: hidden_act {cfg.hidden_act!r} is not supported; expected one of "
                     f"{sorted(ACTIVATIONS)}")
  for f in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"):
    if int(getattr(cfg, f)) < 1:
      raise ValueError(f"{kind}: {f} must be positive, got {getattr(cfg, f)}")


def _pick(cls, d: Mapping[str, Any]) -> dict[str, Any]:
  names = {f.name for f in dataclasses.fields(cls)}
  return {k: v for k, v in d.items() if k in names}


@dataclasses.dataclass(frozen=True)
class CLIPVisionConfig:
  """CLIP ViT: `image_size` / `patch_size` square, `projection_dim` used only with projection."""
  hidden_size: int = 768
  intermediate_size: int = 3072
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  num_channels: int = 3
  image_size: int = 224
  patch_size: int = 32
  hidden_act: str = "quick_gelu"
  layer_norm_eps: float = 1e-5
  projection_dim: int = 512

  def __post_init__(self):
    object.__setattr__(self, "image_size", _square(self.image_size, "image_size"))
    object.__setattr__(self, "patch_size", _square(self.patch_size, "patch_size"))
    _common_checks(self, "CLIPVisionConfig")
    if self.image_size % self.patch_size:
      raise ValueError(f"CLIPVisionConfig: image_size ({self.image_size}) must be a multiple of "
                       f"patch_size ({self.patch_size})")

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_attention_heads

  @property
  def grid_size(self) -> int:
    return self.image_size // self.patch_size

  @property
  def num_positions(self) -> int:
    return self.grid_size ** 2 + 1

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "CLIPVisionConfig":
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
      raise ValueError(f"CLIPVisionConfig.from_dict: unknown fields {sorted(unknown)}")
    return cls(**d)

  @classmethod
  def from_hf(cls, cfg: Any) -> "CLIPVisionConfig":
    """From a transformers `CLIPVisionConfig`/`CLIPConfig` or their `config.json` dicts."""
    d = _tower_dict(cfg, "vision_config")
    mt = d.get("model_type", VISION_MODEL_TYPE)
    if mt not in (VISION_MODEL_TYPE, "clip"):
      raise ValueError(f"config has model_type {mt!r}; expected {VISION_MODEL_TYPE!r} or 'clip'")
    d = _pick(cls, d)
    if d.get("projection_dim") is None:
      d.pop("projection_dim", None)
    return cls(**d)

  def to_hf(self, architecture: str = "CLIPVisionModel") -> dict[str, Any]:
    """A `config.json` dict for transformers (`CLIPVisionModel[WithProjection]`)."""
    return {"architectures": [architecture], "model_type": VISION_MODEL_TYPE,
            "attention_dropout": 0.0, "initializer_factor": 1.0, "initializer_range": 0.02,
            "dtype": "float32", **self.to_dict()}


@dataclasses.dataclass(frozen=True)
class CLIPTextConfig:
  """CLIP text transformer (causal). Pooling uses `eos_token_id` with HF's exact rule.

  HF rule: if `eos_token_id == 2` (legacy configs, e.g. SD-1.x/2.x text encoders) the pooled
  token is at `argmax(input_ids)` (the EOT token has the largest id in the original vocab);
  otherwise it is the first position whose id equals `eos_token_id`.
  """
  vocab_size: int = 49408
  hidden_size: int = 512
  intermediate_size: int = 2048
  num_hidden_layers: int = 12
  num_attention_heads: int = 8
  max_position_embeddings: int = 77
  hidden_act: str = "quick_gelu"
  layer_norm_eps: float = 1e-5
  projection_dim: int = 512
  pad_token_id: int | None = 1
  bos_token_id: int | None = 49406
  eos_token_id: int = 49407

  def __post_init__(self):
    eos = self.eos_token_id
    if isinstance(eos, (list, tuple)):
      if len(eos) != 1:
        raise ValueError(f"CLIPTextConfig: eos_token_id must be one id, got {eos!r}")
      object.__setattr__(self, "eos_token_id", int(eos[0]))
    if self.eos_token_id is None:
      raise ValueError("CLIPTextConfig: eos_token_id is required (the pooler needs it)")
    _common_checks(self, "CLIPTextConfig")
    if self.vocab_size < 1 or self.max_position_embeddings < 1:
      raise ValueError("CLIPTextConfig: vocab_size and max_position_embeddings must be positive")

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_attention_heads

  @property
  def legacy_eos(self) -> bool:
    """True when pooling takes argmax(input_ids) (HF's behaviour for eos_token_id == 2)."""
    return self.eos_token_id == 2

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "CLIPTextConfig":
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
      raise ValueError(f"CLIPTextConfig.from_dict: unknown fields {sorted(unknown)}")
    return cls(**d)

  @classmethod
  def from_hf(cls, cfg: Any) -> "CLIPTextConfig":
    """From a transformers `CLIPTextConfig`/`CLIPConfig` or their `config.json` dicts."""
    d = _tower_dict(cfg, "text_config")
    mt = d.get("model_type", TEXT_MODEL_TYPE)
    if mt not in (TEXT_MODEL_TYPE, "clip"):
      raise ValueError(f"config has model_type {mt!r}; expected {TEXT_MODEL_TYPE!r} or 'clip'")
    d = _pick(cls, d)
    if d.get("projection_dim") is None:
      d.pop("projection_dim", None)
    return cls(**d)

  def to_hf(self, architecture: str = "CLIPTextModel") -> dict[str, Any]:
    """A `config.json` dict for transformers (`CLIPTextModel[WithProjection]`)."""
    return {"architectures": [architecture], "model_type": TEXT_MODEL_TYPE,
            "attention_dropout": 0.0, "initializer_factor": 1.0, "initializer_range": 0.02,
            "dtype": "float32", **self.to_dict()}


_VIT_L = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
              num_attention_heads=16, patch_size=14, hidden_act="quick_gelu",
              projection_dim=768)
VISION_PRESETS: dict[str, CLIPVisionConfig] = {
    "vit_l14": CLIPVisionConfig(image_size=224, **_VIT_L),
    "vit_l14_336": CLIPVisionConfig(image_size=336, **_VIT_L),
    "vit_h14": CLIPVisionConfig(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                                num_attention_heads=16, image_size=224, patch_size=14,
                                hidden_act="gelu", projection_dim=1024),
}
_LEGACY_IDS = dict(pad_token_id=1, bos_token_id=0, eos_token_id=2)
TEXT_PRESETS: dict[str, CLIPTextConfig] = {
    "sd1": CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                          num_attention_heads=12, max_position_embeddings=77,
                          hidden_act="quick_gelu", projection_dim=768, **_LEGACY_IDS),
    "openclip_h": CLIPTextConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                                 num_attention_heads=16, max_position_embeddings=77,
                                 hidden_act="gelu", projection_dim=512, **_LEGACY_IDS),
}


def vision_preset(name: str) -> CLIPVisionConfig:
  if name not in VISION_PRESETS:
    raise ValueError(f"unknown CLIP vision preset {name!r}; expected one of "
                     f"{sorted(VISION_PRESETS)}")
  return VISION_PRESETS[name]


def text_preset(name: str) -> CLIPTextConfig:
  if name not in TEXT_PRESETS:
    raise ValueError(f"unknown CLIP text preset {name!r}; expected one of {sorted(TEXT_PRESETS)}")
  return TEXT_PRESETS[name]
