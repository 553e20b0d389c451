"""Benchmark of PixelWorld generation: samples/s and the time for 10,000 image samples.

  python -m vitron_jax.bench.pixelworld [--num_image=10000] [--num_video=1000] [--size=64]

Single process, one core; prints one line per measurement.
"""
from __future__ import annotations

import collections
import time

from absl import app, flags

from vitron_jax.data.pixelworld import PixelWorld, WorldConfig

_NUM_IMAGE = flags.DEFINE_integer("num_image", 10000, "image-task samples to generate")
_NUM_VIDEO = flags.DEFINE_integer("num_video", 1000, "video-task samples to generate")
_SIZE = flags.DEFINE_integer("size", 64, "image size in pixels")
_FRAMES = flags.DEFINE_integer("frames", 8, "video frames")


def measure(world: PixelWorld, n: int) -> tuple[float, dict[str, int]]:
  counts: collections.Counter = collections.Counter()
  start = time.perf_counter()
  for i in range(n):
    counts[world[i]["subtask"]] += 1
  return time.perf_counter() - start, dict(sorted(counts.items()))


def main(argv):
  del argv
  config = WorldConfig(image_size=_SIZE.value, num_frames=_FRAMES.value)
  for kind, n in (("image", _NUM_IMAGE.value), ("video", _NUM_VIDEO.value)):
    if n <= 0:
      continue
    secs, counts = measure(PixelWorld(config, split="train", seed=0, tasks=kind), n)
    print(f"pixelworld {kind} tasks, {config.image_size}px"
          f"{'' if kind == 'image' else f' x {config.num_frames} frames'}: {n} samples in "
          f"{secs:.1f} s = {n / secs:.0f} samples/s (one process)")
    print(f"  per subtask: {counts}")


if __name__ == "__main__":
  app.run(main)
