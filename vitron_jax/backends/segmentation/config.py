"""Configuration of the SAM-style segmentation backend.

`SamConfig` mirrors transformers' `SamConfig` (vision encoder, prompt encoder, mask decoder) field
for field, so `SamConfig.from_hf_dict(json.load(open("config.json")))` and `to_hf_dict()` round
trip through a transformers `config.json`. `SegmentationConfig` adds what VITRON needs on top:
the signal prompt tokens (the hybrid head's condition), the text routing projection, the loss
weights and the tracking options.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

ROUTING_MODES = ("embedding", "text", "hybrid", "superlink")


def _int(d: Mapping[str, Any], key: str, default: int) -> int:
  v = d.get(key, default)
  if isinstance(v, (list, tuple)):
    if len(set(v)) != 1:
      raise ValueError(f"SAM config {key}={v!r}: only square sizes are supported")
    v = v[0]
  return int(v)


@dataclasses.dataclass(frozen=True)
class SamVisionConfig:
  """ViT image encoder (windowed + global attention with decomposed relative positions, neck)."""
  hidden_size: int = 768
  output_channels: int = 256
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  num_channels: int = 3
  image_size: int = 1024
  patch_size: int = 16
  hidden_act: str = "gelu"
  layer_norm_eps: float = 1e-6
  qkv_bias: bool = True
  mlp_dim: int = 3072
  use_abs_pos: bool = True
  use_rel_pos: bool = True
  window_size: int = 14
  global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
  num_pos_feats: int = 128

  @property
  def grid_size(self) -> int:
    """Side of the patch grid, `image_size // patch_size`."""
    return self.image_size // self.patch_size

  def window_for_layer(self, i: int) -> int:
    """Window size of layer `i` (0 = global attention)."""
    return 0 if i in self.global_attn_indexes else self.window_size


@dataclasses.dataclass(frozen=True)
class SamPromptEncoderConfig:
  hidden_size: int = 256
  image_size: int = 1024
  patch_size: int = 16
  mask_input_channels: int = 16
  num_point_embeddings: int = 4
  hidden_act: str = "gelu"
  layer_norm_eps: float = 1e-6

  @property
  def image_embedding_size(self) -> int:
    return self.image_size // self.patch_size


@dataclasses.dataclass(frozen=True)
class SamMaskDecoderConfig:
  hidden_size: int = 256
  hidden_act: str = "relu"
  mlp_dim: int = 2048
  num_hidden_layers: int = 2
  num_attention_heads: int = 8
  attention_downsample_rate: int = 2
  num_multimask_outputs: int = 3
  iou_head_depth: int = 3
  iou_head_hidden_dim: int = 256
  layer_norm_eps: float = 1e-6


@dataclasses.dataclass(frozen=True)
class SamConfig:
  """The three parts of SAM plus compute options (`dtype`, `remat` of the ViT layers)."""
  vision: SamVisionConfig = dataclasses.field(default_factory=SamVisionConfig)
  prompt: SamPromptEncoderConfig = dataclasses.field(default_factory=SamPromptEncoderConfig)
  decoder: SamMaskDecoderConfig = dataclasses.field(default_factory=SamMaskDecoderConfig)
  dtype: str = "float32"
  remat: bool = False

  def __post_init__(self):
    v, p, d = self.vision, self.prompt, self.decoder
    if v.image_size % v.patch_size:
      raise ValueError(f"SAM config: vision image_size {v.image_size} is not a multiple of "
                       f"patch_size {v.patch_size}")
    if (p.image_size, p.patch_size) != (v.image_size, v.patch_size):
      raise ValueError(
          f"SAM config: prompt encoder image_size/patch_size ({p.image_size}/{p.patch_size}) "
          f"must equal the vision encoder's ({v.image_size}/{v.patch_size})")
    if not v.output_channels == p.hidden_size == d.hidden_size == 2 * v.num_pos_feats:
      raise ValueError(
          "SAM config: vision output_channels, prompt hidden_size, decoder hidden_size and "
          f"2*num_pos_feats must agree; got {v.output_channels}, {p.hidden_size}, "
          f"{d.hidden_size}, {2 * v.num_pos_feats}")
    if v.hidden_size % v.num_attention_heads:
      raise ValueError(f"SAM config: vision hidden_size {v.hidden_size} is not divisible by "
                       f"num_attention_heads {v.num_attention_heads}")
    inner = d.hidden_size // d.attention_downsample_rate
    if d.hidden_size % d.num_attention_heads or inner % d.num_attention_heads:
      raise ValueError(
          f"SAM config: decoder hidden_size {d.hidden_size} (and /attention_downsample_rate = "
          f"{inner}) must be divisible by num_attention_heads {d.num_attention_heads}")
    if d.hidden_size % 8:
      raise ValueError(f"SAM config: decoder hidden_size {d.hidden_size} must be a multiple "
                       "of 8 (the mask upscaler divides it by 4 and 8)")
    if p.mask_input_channels % 4:
      raise ValueError(f"SAM config: mask_input_channels {p.mask_input_channels} must be a "
                       "multiple of 4")
    if p.num_point_embeddings != 4:
      raise ValueError(f"SAM config: num_point_embeddings must be 4, got "
                       f"{p.num_point_embeddings}")
    if d.iou_head_depth < 2:
      raise ValueError(f"SAM config: iou_head_depth must be >= 2, got {d.iou_head_depth}")
    bad = [i for i in v.global_attn_indexes if not 0 <= i < v.num_hidden_layers]
    if bad:
      raise ValueError(f"SAM config: global_attn_indexes {bad} are not layer indices "
                       f"(num_hidden_layers={v.num_hidden_layers})")

  # -- sizes -------------------------------------------------------------------------------
  @property
  def image_size(self) -> int:
    """Side of the (padded, square) model input."""
    return self.vision.image_size

  @property
  def embedding_size(self) -> int:
    """Side E of the image embedding grid."""
    return self.vision.grid_size

  @property
  def low_res_size(self) -> int:
    """Side of the decoder's mask logits and of mask prompts, `4 * E`."""
    return 4 * self.vision.grid_size

  @property
  def hidden_size(self) -> int:
    """Width of prompt tokens and image embeddings."""
    return self.decoder.hidden_size

  @property
  def num_mask_tokens(self) -> int:
    return self.decoder.num_multimask_outputs + 1

  # -- transformers config.json ------------------------------------------------------------
  @classmethod
  def from_hf_dict(cls, d: Mapping[str, Any], **overrides) -> "SamConfig":
    """From a transformers `SamConfig.to_dict()` / `config.json` dictionary."""
    if d.get("model_type", "sam") != "sam":
      raise ValueError(f"SAM config.json: model_type is {d.get('model_type')!r}, expected 'sam'")
    vd = dict(d.get("vision_config") or {})
    pd = dict(d.get("prompt_encoder_config") or {})
    md = dict(d.get("mask_decoder_config") or {})
    dv = SamVisionConfig()
    hidden = int(vd.get("hidden_size", dv.hidden_size))
    mlp_dim = vd.get("mlp_dim")
    if mlp_dim is None:
      mlp_dim = int(hidden * float(vd.get("mlp_ratio", 4.0)))
    vision = SamVisionConfig(
        hidden_size=hidden,
        output_channels=int(vd.get("output_channels", dv.output_channels)),
        num_hidden_layers=int(vd.get("num_hidden_layers", dv.num_hidden_layers)),
        num_attention_heads=int(vd.get("num_attention_heads", dv.num_attention_heads)),
        num_channels=int(vd.get("num_channels", dv.num_channels)),
        image_size=_int(vd, "image_size", dv.image_size),
        patch_size=_int(vd, "patch_size", dv.patch_size),
        hidden_act=str(vd.get("hidden_act", dv.hidden_act)),
        layer_norm_eps=float(vd.get("layer_norm_eps", dv.layer_norm_eps)),
        qkv_bias=bool(vd.get("qkv_bias", dv.qkv_bias)),
        mlp_dim=int(mlp_dim),
        use_abs_pos=bool(vd.get("use_abs_pos", dv.use_abs_pos)),
        use_rel_pos=bool(vd.get("use_rel_pos", dv.use_rel_pos)),
        window_size=int(vd.get("window_size", dv.window_size)),
        global_attn_indexes=tuple(int(i) for i in vd.get("global_attn_indexes",
                                                          dv.global_attn_indexes)),
        num_pos_feats=int(vd.get("num_pos_feats", dv.num_pos_feats)),
    )
    dp = SamPromptEncoderConfig()
    prompt = SamPromptEncoderConfig(
        hidden_size=int(pd.get("hidden_size", dp.hidden_size)),
        image_size=_int(pd, "image_size", dp.image_size),
        patch_size=_int(pd, "patch_size", dp.patch_size),
        mask_input_channels=int(pd.get("mask_input_channels", dp.mask_input_channels)),
        num_point_embeddings=int(pd.get("num_point_embeddings", dp.num_point_embeddings)),
        hidden_act=str(pd.get("hidden_act", dp.hidden_act)),
        layer_norm_eps=float(pd.get("layer_norm_eps", dp.layer_norm_eps)),
    )
    dm = SamMaskDecoderConfig()
    decoder = SamMaskDecoderConfig(**{
        f.name: type(getattr(dm, f.name))(md.get(f.name, getattr(dm, f.name)))
        for f in dataclasses.fields(SamMaskDecoderConfig)})
    return cls(vision=vision, prompt=prompt, decoder=decoder, **overrides)

  def to_hf_dict(self) -> dict[str, Any]:
    """A transformers-loadable `config.json` dictionary (`SamModel.from_pretrained`)."""
    vd = dataclasses.asdict(self.vision)
    vd["global_attn_indexes"] = list(self.vision.global_attn_indexes)
    vd.update(model_type="sam_vision_model",
              mlp_ratio=self.vision.mlp_dim / self.vision.hidden_size,
              attention_dropout=0.0, initializer_range=1e-10)
    pd = dataclasses.asdict(self.prompt)
    pd.update(model_type="sam_prompt_encoder")
    md = dataclasses.asdict(self.decoder)
    md.update(model_type="sam_mask_decoder")
    return {"architectures": ["SamModel"], "model_type": "sam", "vision_config": vd,
            "prompt_encoder_config": pd, "mask_decoder_config": md,
            "initializer_range": 0.02, "tie_word_embeddings": True, "dtype": self.dtype}

  @classmethod
  def tiny(cls, image_size: int = 64, patch_size: int = 8, hidden: int = 32, width: int = 32,
           layers: int = 2, window: int = 4, **overrides) -> "SamConfig":
    """A small config for tests and synthetic experiments (one windowed, one global layer)."""
    vision = SamVisionConfig(
        hidden_size=hidden, output_channels=width, num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 16), image_size=image_size, patch_size=patch_size,
        mlp_dim=2 * hidden, window_size=window, global_attn_indexes=(layers - 1,),
        num_pos_feats=width // 2)
    prompt = SamPromptEncoderConfig(hidden_size=width, image_size=image_size,
                                    patch_size=patch_size, mask_input_channels=16)
    decoder = SamMaskDecoderConfig(hidden_size=width, mlp_dim=2 * width, num_attention_heads=2,
                                   iou_head_hidden_dim=width)
    return cls(vision=vision, prompt=prompt, decoder=decoder, **overrides)


@dataclasses.dataclass(frozen=True)
class SegmentationConfig:
  """The VITRON segmentation backend: SAM plus signal prompts, routing, loss and tracking.

  * `num_signal_tokens`: K, the number of condition tokens the hybrid head produces; the
    condition is `[B, K, hidden]` (hidden = SAM's prompt width) and joins the sparse prompts.
  * `routing`: "embedding"/"superlink" (condition = signal tokens), "text" (condition = the
    command's text embedding through a learned projection), "hybrid" (both, concatenated).
  * `text_dim`: width D of the text embedding (`[B, D]` or `[B, L, D]`) for text routing.
  * `multimask_output`: decode 3 masks and train with the minimum loss (SAM's ambiguity
    handling); False decodes the single-mask token (unambiguous referring prompts).
  * `mask_prompt_logit`: magnitude of the logits a binary mask becomes as a dense prompt.
  * `prompt_dilation`: tracking dilates the previous mask by this many low-res cells before it
    becomes the next frame's dense prompt (the decoder has no local spatial mixing, so the
    prompt must cover where the object moved); the video loss does the same to its prompts.
  """
  sam: SamConfig = dataclasses.field(default_factory=SamConfig)
  num_signal_tokens: int = 4
  routing: str = "embedding"
  text_dim: int = 512
  text_heads: int = 4
  multimask_output: bool = False
  bce_weight: float = 1.0
  dice_weight: float = 1.0
  iou_weight: float = 1.0
  mask_threshold: float = 0.0
  mask_prompt_logit: float = 10.0
  prompt_dilation: int = 0

  def __post_init__(self):
    if self.routing not in ROUTING_MODES:
      raise ValueError(f"segmentation config routing={self.routing!r}; expected one of "
                       f"{ROUTING_MODES}")
    if self.num_signal_tokens < 1:
      raise ValueError(f"segmentation config num_signal_tokens must be >= 1, got "
                       f"{self.num_signal_tokens}")
    if self.sam.hidden_size % self.text_heads:
      raise ValueError(f"segmentation config text_heads={self.text_heads} must divide the "
                       f"prompt width {self.sam.hidden_size}")

  @property
  def width(self) -> int:
    return self.sam.hidden_size

  @property
  def num_condition_tokens(self) -> int:
    """Tokens joined to the sparse prompts: K, or 2K in hybrid routing."""
    return 2 * self.num_signal_tokens if self.routing == "hybrid" else self.num_signal_tokens
