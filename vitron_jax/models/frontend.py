"""VITRON's frontend encoders: images, videos and user-drawn regions -> LLM-width tokens.

* image encoder: the CLIP vision tower (`vision_tower`, HF names), hidden states of
  `select_layer` (default -2, LLaVA's penultimate layer), patch tokens (or CLS + patches with
  `select_feature="cls_patch"`), frozen (`stop_gradient`, no backward through the ViT) or
  trainable by config; then the projector (`mm_projector`, "linear" or "mlp2x_gelu").
  `[B, I, H, W, 3] -> [B, I, image_tokens, D]`.
* video encoder: the T frames through the same tower; `video_tokens="per_frame"` keeps every
  frame's tokens (`T * N`), `"pooled"` averages (Video-ChatGPT): T frame tokens (spatial mean)
  followed by N patch tokens (temporal mean). `[B, V, T, H, W, 3] -> [B, V, video_tokens, D]`.
* region encoder (`region_encoder`): mask pooling of the ViT layers `region_layers` plus a box
  encoding (`vitron_jax.models.region_encoder`), for image regions (on one of the sample's
  images) and video regions (per-frame masks on one of its videos).

`Frontend.__call__` returns, per placeholder kind ("image", "video", "roi"), flat tokens
`[B, N, D]` with validity `[B, N]`, ready for `vitron_jax.models.assembly.place_tokens`; roi
tokens are the image regions' tokens followed by the video regions'.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from vitron_jax.models.clip import CLIPVisionModel, layer_index
from vitron_jax.models.clip_config import CLIPVisionConfig
from vitron_jax.models.projector import Projector, projector_depth
from vitron_jax.models.region_encoder import RegionEncoder, tokens_per_region

VIDEO_TOKEN_MODES = ("per_frame", "pooled")
SELECT_FEATURES = ("patch", "cls_patch")
Tokens = tuple[jax.Array, jax.Array]  # ([B, N, D], [B, N] valid)


@dataclasses.dataclass(frozen=True)
class FrontendConfig:
  """Frontend options. `llm_hidden` is the LLM width the projector and region encoder map to."""
  vision: CLIPVisionConfig
  llm_hidden: int
  select_layer: int = -2
  select_feature: str = "patch"
  freeze_vision: bool = True
  projector: str = "mlp2x_gelu"
  num_frames: int = 8
  video_tokens: str = "per_frame"
  region_layers: tuple[int, ...] = (-2,)
  region_tokens: str = "fused"
  box_freqs: int = 8
  dtype: str = "float32"
  param_dtype: str = "float32"

  def __post_init__(self):
    if isinstance(self.vision, Mapping):
      object.__setattr__(self, "vision", CLIPVisionConfig(**self.vision))
    object.__setattr__(self, "region_layers", tuple(int(i) for i in self.region_layers))
    n = self.vision.num_hidden_layers
    layer_index(self.select_layer, n)
    for i in self.region_layers:
      layer_index(i, n)
    if not self.region_layers:
      raise ValueError("FrontendConfig.region_layers must name at least one ViT layer")
    if self.select_feature not in SELECT_FEATURES:
      raise ValueError(f"FrontendConfig.select_feature must be one of {SELECT_FEATURES}, got "
                       f"{self.select_feature!r}")
    if self.video_tokens not in VIDEO_TOKEN_MODES:
      raise ValueError(f"FrontendConfig.video_tokens must be one of {VIDEO_TOKEN_MODES}, got "
                       f"{self.video_tokens!r}")
    if self.num_frames < 1:
      raise ValueError(f"FrontendConfig.num_frames must be >= 1, got {self.num_frames}")
    projector_depth(self.projector)
    tokens_per_region(self.region_tokens, len(self.region_layers))

  @property
  def grid(self) -> int:
    return self.vision.grid_size

  @property
  def image_tokens(self) -> int:
    """Slots per `<image>`."""
    return self.grid ** 2 + (self.select_feature == "cls_patch")

  @property
  def video_token_count(self) -> int:
    """Slots per `<video>`."""
    if self.video_tokens == "per_frame":
      return self.num_frames * self.image_tokens
    return self.num_frames + self.image_tokens

  @property
  def region_token_count(self) -> int:
    """Slots per `<roi>` (one region)."""
    return tokens_per_region(self.region_tokens, len(self.region_layers))

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def _flatten_tokens(tokens: jax.Array, valid: jax.Array | None) -> Tokens:
  """`[B, S, n, D]` tokens, `[B, S]` validity -> `([B, S*n, D], [B, S*n])`."""
  b, s, n, d = tokens.shape
  v = jnp.ones((b, s), bool) if valid is None else valid.astype(bool)
  if v.shape != (b, s):
    raise ValueError(f"validity mask must be [batch, items] = {(b, s)}, got {v.shape}")
  return tokens.reshape(b, s * n, d), jnp.repeat(v, n, axis=1)


class Frontend(nn.Module):
  """Images, videos and regions -> LLM-width tokens (see the module docstring)."""
  config: FrontendConfig

  def setup(self):
    c = self.config
    kw = dict(dtype=jnp.dtype(c.dtype), param_dtype=jnp.dtype(c.param_dtype))
    self.vision_tower = CLIPVisionModel(c.vision, **kw)
    self.mm_projector = Projector(c.projector, c.llm_hidden, **kw)
    self.region_encoder = RegionEncoder(c.llm_hidden, len(c.region_layers), c.region_tokens,
                                        c.box_freqs, **kw)

  def vision_features(self, pixels: jax.Array) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    """`[N, H, W, 3]` -> (`[N, n, C]` selected-layer tokens, region maps `[N, gh, gw, C]` per
    region layer). One ViT pass up to the deepest layer asked for."""
    c = self.config
    if self.is_initializing():  # create every tower parameter (HF checkpoints carry them all)
      self.vision_tower(pixels[:1])
    layers = [c.select_layer, *c.region_layers]
    feats = self.vision_tower.features(pixels, layers, with_cls=True)
    if c.freeze_vision:
      feats = jax.lax.stop_gradient(feats)
    sel = feats[0] if c.select_feature == "cls_patch" else feats[0][:, 1:]
    g = c.grid
    maps = tuple(f[:, 1:].reshape(f.shape[0], g, g, f.shape[-1]) for f in feats[1:])
    return sel, maps

  def encode_images(self, images: jax.Array) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    """`[B, I, H, W, 3]` -> (tokens `[B, I, image_tokens, D]`, maps `[B, I, 1, g, g, C]`)."""
    if images.ndim != 5:
      raise ValueError(f"images must be [batch, images, H, W, 3], got shape "
                       f"{tuple(images.shape)}")
    b, i = images.shape[:2]
    sel, maps = self.vision_features(images.reshape(b * i, *images.shape[2:]))
    tokens = self.mm_projector(sel).reshape(b, i, sel.shape[1], -1)
    return tokens, tuple(m.reshape(b, i, 1, *m.shape[1:]) for m in maps)

  def encode_videos(self, videos: jax.Array) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    """`[B, V, T, H, W, 3]` -> (tokens `[B, V, video_token_count, D]`, maps
    `[B, V, T, g, g, C]`)."""
    c = self.config
    if videos.ndim != 6 or videos.shape[2] != c.num_frames:
      raise ValueError(f"videos must be [batch, videos, frames={c.num_frames}, H, W, 3], got "
                       f"shape {tuple(videos.shape)}")
    b, v, t = videos.shape[:3]
    sel, maps = self.vision_features(videos.reshape(b * v * t, *videos.shape[3:]))
    sel = sel.reshape(b * v, t, sel.shape[1], sel.shape[2])
    if c.video_tokens == "per_frame":
      feats = sel.reshape(b * v, t * sel.shape[2], sel.shape[3])
    else:  # Video-ChatGPT: per-frame spatial means, then per-patch temporal means
      feats = jnp.concatenate([sel.mean(axis=2), sel.mean(axis=1)], axis=1)
    tokens = self.mm_projector(feats).reshape(b, v, feats.shape[1], -1)
    return tokens, tuple(m.reshape(b, v, t, *m.shape[1:]) for m in maps)

  def encode_regions(self, maps: tuple[jax.Array, ...],
                     regions: Mapping[str, jax.Array]) -> Tokens:
    """Region arrays (`region_inputs.prepare_*_regions`) on the given maps ->
    (`[B, R * n_tok, D]`, `[B, R * n_tok]`)."""
    missing = {"masks", "boxes", "frame_valid", "valid", "source"} - set(regions)
    if missing:
      raise ValueError(f"regions are missing {sorted(missing)}")
    tok = self.region_encoder(maps, regions["masks"], regions["boxes"], regions["frame_valid"],
                              regions["source"], regions["valid"])
    return _flatten_tokens(tok, regions["valid"])

  def __call__(self, images: jax.Array | None = None, image_valid: jax.Array | None = None,
               videos: jax.Array | None = None, video_valid: jax.Array | None = None,
               image_regions: Mapping[str, jax.Array] | None = None,
               video_regions: Mapping[str, jax.Array] | None = None) -> dict[str, Tokens]:
    """Encode what is given; returns `{kind: (tokens [B, N, D], valid [B, N])}`."""
    out: dict[str, Tokens] = {}
    rois = []
    if images is not None:
      tok, maps = self.encode_images(images)
      out["image"] = _flatten_tokens(tok, image_valid)
      if image_regions is not None:
        rois.append(self.encode_regions(maps, image_regions))
    elif image_regions is not None:
      raise ValueError("image_regions were given without images")
    if videos is not None:
      tok, maps = self.encode_videos(videos)
      out["video"] = _flatten_tokens(tok, video_valid)
      if video_regions is not None:
        rois.append(self.encode_regions(maps, video_regions))
    elif video_regions is not None:
      raise ValueError("video_regions were given without videos")
    if rois:
      out["roi"] = (jnp.concatenate([r[0] for r in rois], 1),
                    jnp.concatenate([r[1] for r in rois], 1))
    return out
