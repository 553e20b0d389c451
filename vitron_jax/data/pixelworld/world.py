"""PixelWorld: index -> sample, deterministic in (seed, split, index).

Each sample draws its own random stream from `SeedSequence([seed, split code, index])`, so any
index is generated independently (random access for grain) and the same (seed, split, index)
gives byte-identical arrays and text on every run.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Sequence

import numpy as np

from vitron_jax.data.pixelworld import context as CX
from vitron_jax.data.pixelworld import sample as SP
from vitron_jax.data.pixelworld import splits as S
from vitron_jax.data.pixelworld import tasks_edit as TE
from vitron_jax.data.pixelworld import tasks_generate as TG
from vitron_jax.data.pixelworld import tasks_ground as TGR
from vitron_jax.data.pixelworld import tasks_understand as TU


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  cluster: str
  fn: Callable[[CX.Ctx], dict]
  video: bool  # whether the task needs a video scene
  weight: float = 1.0


#: subtask name -> spec. Order is fixed (it is part of the random stream).
TASKS: dict[str, TaskSpec] = {
    "image_caption": TaskSpec("understanding", TU.image_caption, False),
    "image_qa": TaskSpec("understanding", TU.image_qa, False, 2.0),
    "region_caption": TaskSpec("understanding", TU.region_caption, False),
    "grounded_qa": TaskSpec("understanding", TU.grounded_qa, False),
    "video_caption": TaskSpec("understanding", TU.video_caption, True, 0.5),
    "video_qa": TaskSpec("understanding", TU.video_qa, True),
    "ref_box": TaskSpec("grounding", TGR.ref_box, False),
    "video_grounding": TaskSpec("grounding", TGR.video_grounding, True),
    "ref_seg": TaskSpec("segmentation", TGR.ref_seg, False),
    "video_seg": TaskSpec("segmentation", TGR.video_seg, True),
    "text_to_image": TaskSpec("generation", TG.text_to_image, False),
    "text_to_video": TaskSpec("generation", TG.text_to_video, True),
    "image_to_video": TaskSpec("generation", TG.image_to_video, True),
    "image_edit": TaskSpec("editing", TE.image_edit, False),
    "video_edit": TaskSpec("editing", TE.video_edit, True),
}
IMAGE_TASKS: tuple[str, ...] = tuple(k for k, v in TASKS.items() if not v.video)
VIDEO_TASKS: tuple[str, ...] = tuple(k for k, v in TASKS.items() if v.video)


def task_weights(tasks: Sequence[str] | Mapping[str, float] | str | None) -> dict[str, float]:
  """Normalise a task selection: None (all, default weights), "image", "video", a list of
  subtask or cluster names (default weights), or a {subtask: weight} mapping."""
  if tasks is None:
    return {k: v.weight for k, v in TASKS.items()}
  if isinstance(tasks, str):
    tasks = {"image": IMAGE_TASKS, "video": VIDEO_TASKS}.get(tasks, (tasks,))
  if isinstance(tasks, Mapping):
    items = dict(tasks)
  else:
    items = {}
    for name in tasks:
      if name in SP.TASK_CLUSTERS:
        items.update({k: v.weight for k, v in TASKS.items() if v.cluster == name})
      else:
        items[name] = TASKS[name].weight if name in TASKS else 1.0
  unknown = sorted(k for k in items if k not in TASKS)
  if unknown:
    raise ValueError(f"unknown PixelWorld tasks {unknown}; expected subtasks {list(TASKS)}, "
                     f"clusters {list(SP.TASK_CLUSTERS)}, 'image' or 'video'")
  if not items or any(w < 0 for w in items.values()) or sum(items.values()) <= 0:
    raise ValueError(f"task weights must be >= 0 with a positive sum, got {items}")
  return {k: float(items[k]) for k in TASKS if k in items and items[k] > 0}


class PixelWorld:
  """Deterministic generator of task samples (format: `sample.py`).

  world = PixelWorld(WorldConfig(image_size=64), split="train", seed=0, tasks="image")
  sample = world[123]      # same dict (byte-identical arrays) on every call and machine
  """

  def __init__(self, config: CX.WorldConfig | None = None, *, split: str = "train",
               seed: int = 0, tasks: Sequence[str] | Mapping[str, float] | str | None = None):
    self.config = config or CX.WorldConfig()
    self.split = S.check_split(split)
    if not isinstance(seed, (int, np.integer)) or seed < 0:
      raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    self.seed = int(seed)
    weights = task_weights(tasks)
    self.task_names = tuple(weights)
    p = np.array([weights[k] for k in self.task_names])
    self._cdf = np.cumsum(p / p.sum())

  def rng(self, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(
        [self.seed, S.SPLIT_CODES[self.split], int(index)]))

  def task_of(self, rng: np.random.Generator) -> str:
    i = int(np.searchsorted(self._cdf, rng.random(), side="right"))
    return self.task_names[min(i, len(self.task_names) - 1)]

  def sample(self, index: int, task: str | None = None) -> dict:
    """The sample at `index` (>= 0); `task` forces a subtask (same stream otherwise)."""
    if not isinstance(index, (int, np.integer)) or index < 0:
      raise ValueError(f"index must be a non-negative int, got {index!r}")
    rng = self.rng(index)
    chosen = self.task_of(rng)
    task = task or chosen
    if task not in TASKS:
      raise ValueError(f"unknown task {task!r}; expected one of {list(TASKS)}")
    spec = TASKS[task]
    ctx = CX.Ctx(rng, self.config, self.split == "heldout")
    parts = spec.fn(ctx)
    return SP.make_sample(sample_id=f"pixelworld/{self.split}/{self.seed}/{int(index):09d}",
                          task=spec.cluster, subtask=task, **parts)

  __getitem__ = sample

  def __repr__(self) -> str:
    return (f"PixelWorld(split={self.split!r}, seed={self.seed}, tasks={len(self.task_names)}, "
            f"config={self.config})")
