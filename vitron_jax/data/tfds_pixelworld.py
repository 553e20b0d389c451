"""tfds builder writing PixelWorld as array_record, without TensorFlow.

Images go in as PNG bytes (tfds encodes numpy images with TensorFlow, bytes it stores as they
are), everything else as the JSON text of `sources.encode_sample`. Shuffling is disabled, so
record i of a split is sample i of `PixelWorld(split=..., seed=config.seed)`.

  from vitron_jax.data import tfds_pixelworld, sources
  tfds_pixelworld.build("/data/tfds", config="default")
  ds = sources.records_dataset("/data/tfds", "train")     # grain MapDataset of samples

Configs: "default" (64 px, 8 frames, all tasks; train 20000 / val 1000 / heldout 1000),
"image" (image tasks only, same sizes), "tiny" (32 px, 4 frames, 24 / 8 / 8; for tests), or a
`PixelWorldConfig` of your own.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import tensorflow_datasets as tfds

from vitron_jax.data import sources
from vitron_jax.data.pixelworld import context as CX
from vitron_jax.data.pixelworld import splits as S
from vitron_jax.data.pixelworld import world as PW

FEATURES = {
    "id": tfds.features.Text(),
    "task": tfds.features.Text(),
    "subtask": tfds.features.Text(),
    "json": tfds.features.Text(),
    "rgb": tfds.features.Sequence(tfds.features.Image(shape=(None, None, 3))),
    "masks": tfds.features.Sequence(tfds.features.Image(shape=(None, None, 1))),
}


@dataclasses.dataclass(eq=False)
class PixelWorldConfig(tfds.core.BuilderConfig):
  """World settings and split sizes of one built variant. `tasks` as in `task_weights`
  (None = all tasks, "image", "video", or a tuple of names)."""
  image_size: int = 64
  num_frames: int = 8
  max_objects: int = 4
  seed: int = 0
  tasks: Any = None
  train_examples: int = 20000
  val_examples: int = 1000
  heldout_examples: int = 1000

  def world_config(self) -> CX.WorldConfig:
    return CX.WorldConfig(image_size=self.image_size, num_frames=self.num_frames,
                          max_objects=self.max_objects)

  def num_examples(self, split: str) -> int:
    return {"train": self.train_examples, "val": self.val_examples,
            "heldout": self.heldout_examples}[S.check_split(split)]


class PixelWorldTfds(tfds.core.GeneratorBasedBuilder):
  """PixelWorld task samples (all clusters) with exact ground truth."""

  name = "pixelworld"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = [
      PixelWorldConfig(name="default", description="64 px, 8 frames, all tasks"),
      PixelWorldConfig(name="image", tasks="image", description="64 px, image tasks only"),
      PixelWorldConfig(name="tiny", image_size=32, num_frames=4, max_objects=3,
                       train_examples=24, val_examples=8, heldout_examples=8,
                       description="32 px, 4 frames, a few samples (tests)"),
  ]
  DEFAULT_CONFIG_NAME = "default"

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):
    # tfds locates the module file to look for download checksums; for a class inside a
    # package that needs `importlib_resources`, which tfds does not install. There is nothing
    # to download, so there are no checksums to find.
    return None

  def _info(self) -> tfds.core.DatasetInfo:
    # DatasetInfo directly: `dataset_info_from_configs` reads metadata files next to the module.
    return tfds.core.DatasetInfo(
        builder=self, description=__doc__.split("\n")[0],
        features=tfds.features.FeaturesDict(dict(FEATURES)), disable_shuffling=True)

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    return {split: self._generate_examples(split) for split in S.SPLITS}

  def _generate_examples(self, split: str):
    cfg: PixelWorldConfig = self.builder_config
    world = PW.PixelWorld(cfg.world_config(), split=split, seed=cfg.seed, tasks=cfg.tasks)
    for i in range(cfg.num_examples(split)):
      yield i, sources.encode_sample(world[i])


def build(data_dir: str, config: str | PixelWorldConfig = "default") -> PixelWorldTfds:
  """Generate every split of `config` under `data_dir` as array_record (no-op when built)."""
  builder = PixelWorldTfds(config=config, data_dir=data_dir, file_format="array_record")
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(verify_ssl=False))
  return builder
