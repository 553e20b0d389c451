"""World configuration and the per-sample context handed to task generators."""
from __future__ import annotations

import dataclasses

import numpy as np

from vitron_jax.data.pixelworld import scene as SC
from vitron_jax.data.pixelworld import video as VI
from vitron_jax.protocol import tokens as T


@dataclasses.dataclass(frozen=True)
class WorldConfig:
  """Knobs of the world. image_size in [32, 256]; num_frames in [2, 64] (time tokens)."""
  image_size: int = 64
  num_frames: int = 8
  min_objects: int = 1
  max_objects: int = 4
  textured_prob: float = 0.35
  static_prob: float = 0.2
  curved_prob: float = 0.4
  event_prob: float = 0.3
  colour_change_prob: float = 0.25

  def __post_init__(self):
    if not 32 <= self.image_size <= 256:
      raise ValueError(f"image_size must be in [32, 256], got {self.image_size}")
    if not 2 <= self.num_frames <= T.NUM_TIME_TOKENS:
      raise ValueError(f"num_frames must be in [2, {T.NUM_TIME_TOKENS}], got {self.num_frames}")
    if not 1 <= self.min_objects <= self.max_objects <= 8:
      raise ValueError(f"need 1 <= min_objects <= max_objects <= 8, got "
                       f"{self.min_objects}..{self.max_objects}")
    for name in ("textured_prob", "static_prob", "curved_prob", "event_prob",
                 "colour_change_prob"):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")

  @classmethod
  def from_config(cls, data_config) -> "WorldConfig":
    """From a training config's `data` section: `data.pixelworld` (image_size, num_frames,
    max_objects; `seed` is the task's, not the world's)."""
    pw = data_config.get("pixelworld") or {}
    return cls(image_size=int(pw.get("image_size", 64)), num_frames=int(pw.get("num_frames", 8)),
               max_objects=int(pw.get("max_objects", 4)))


@dataclasses.dataclass
class Ctx:
  """What a task generator gets: its random stream, the config and the split's rule."""
  rng: np.random.Generator
  config: WorldConfig
  heldout: bool

  @property
  def size(self) -> int:
    return self.config.image_size

  def image_scene(self, *, heldout_focus: bool | None = None) -> tuple[SC.Scene, SC.Rendered]:
    """An image scene (focus held out by the split's rule unless overridden) and its render."""
    c = self.config
    scene = SC.sample_image_scene(
        self.rng, size=c.image_size, min_objects=c.min_objects, max_objects=c.max_objects,
        textured_prob=c.textured_prob,
        heldout_focus=self.heldout if heldout_focus is None else heldout_focus)
    return scene, SC.render_scene(scene)

  def video_scene(self) -> tuple[SC.Scene, SC.Rendered]:
    c = self.config
    return VI.sample_video_scene(
        self.rng, size=c.image_size, num_frames=c.num_frames, min_objects=c.min_objects,
        max_objects=c.max_objects, textured_prob=c.textured_prob, heldout_focus=self.heldout,
        static_prob=c.static_prob, curved_prob=c.curved_prob, event_prob=c.event_prob,
        colour_change_prob=c.colour_change_prob)
