"""Grain data sources and transforms for conversation samples (PixelWorld and real data).

Every source yields samples in the one format of `vitron_jax.data.pixelworld.sample` (LLaVA
style `conversations` + numpy arrays), so the training pipeline has a single path:

* `PixelWorldSource`: on-the-fly generation, index -> sample, deterministic, unlimited length;
  `PairedPixelWorldSource`: the same, each sample carrying one of a second task from an
  independent stream (a stage that learns two tasks from one batch);
* `tfds_source(...)` + `DecodeRecord`: PixelWorld written by `tfds_pixelworld` as array_record;
* `LlavaJsonSource`: a LLaVA / Vitron-style JSON list with image paths.

Record codec (what the tfds builder writes): ``{"id", "task", "subtask": text, "json": the
sample with every array replaced by a reference, "rgb": list of PNG frames, "masks": list of
PNG bool frames}``. uint8 `[..., H, W, 3]` arrays go to "rgb" and bool arrays with >= 2 dims to
"masks" (one PNG per `[H, W]` frame), other arrays and numpy scalars inline in the JSON with
their dtype and shape; `decode_record(encode_sample(s))` equals `s` exactly.
"""
from __future__ import annotations

import io
import json
import os
from typing import Any, Mapping, Sequence

import grain.python as grain
import numpy as np
import PIL.Image

from vitron_jax.data import pipeline
from vitron_jax.data.pixelworld import context as CX
from vitron_jax.data.pixelworld import world as PW

# ---------------------------------------------------------------------------------- codec


def png_bytes(image: np.ndarray) -> bytes:
  """uint8 `[H, W, 3]` or `[H, W]` -> PNG bytes (lossless)."""
  buf = io.BytesIO()
  PIL.Image.fromarray(image).save(buf, format="PNG", compress_level=1)
  return buf.getvalue()


def _encode(x: Any, rgb: list[bytes], masks: list[bytes], where: str) -> Any:
  if isinstance(x, np.ndarray):
    shape = list(x.shape)
    if x.dtype == np.uint8 and x.ndim >= 3 and shape[-1] == 3:
      start = len(rgb)
      rgb.extend(png_bytes(f) for f in x.reshape(-1, *shape[-3:]))
      return {"__rgb__": start, "shape": shape}
    if x.dtype == np.bool_ and x.ndim >= 2:
      start = len(masks)
      masks.extend(png_bytes(f.astype(np.uint8)) for f in x.reshape(-1, *shape[-2:]))
      return {"__mask__": start, "shape": shape}
    return {"__nd__": x.ravel().tolist(), "dtype": x.dtype.str, "shape": shape}
  if isinstance(x, np.generic):
    return {"__nd__": [x.item()], "dtype": x.dtype.str, "shape": None}
  if isinstance(x, Mapping):
    bad = [k for k in x if not isinstance(k, str) or k.startswith("__")]
    if bad:
      raise ValueError(f"sample{where} has keys the codec cannot store (need str, not "
                       f"starting with '__'): {bad}")
    return {k: _encode(v, rgb, masks, f"{where}[{k!r}]") for k, v in x.items()}
  if isinstance(x, list):
    return [_encode(v, rgb, masks, f"{where}[{i}]") for i, v in enumerate(x)]
  if x is None or isinstance(x, (str, bool, int, float)):
    return x
  raise TypeError(f"sample{where} holds a {type(x).__name__}; the codec stores dicts, lists, "
                  f"str, int, float, bool, None and numpy arrays")


def encode_sample(sample: Mapping[str, Any]) -> dict[str, Any]:
  """Sample dict -> tfds record dict (features of `tfds_pixelworld.FEATURES`)."""
  for key in ("id", "task", "subtask", "conversations"):
    if key not in sample:
      raise ValueError(f"sample lacks {key!r}; keys: {sorted(sample)}")
  rgb: list[bytes] = []
  masks: list[bytes] = []
  body = _encode(dict(sample), rgb, masks, "")
  return {"id": sample["id"], "task": sample["task"], "subtask": sample["subtask"],
          "json": json.dumps(body, separators=(",", ":")), "rgb": rgb, "masks": masks}


def _as_text(x) -> str:
  return x.decode("utf-8") if isinstance(x, (bytes, np.bytes_)) else str(x)


def _frames(seq, kind: str, start: int, shape: list[int]) -> np.ndarray:
  n = int(np.prod(shape[:-3 if kind == "rgb" else -2]))
  if start + n > len(seq):
    raise ValueError(f"record references {kind} frames {start}..{start + n - 1} but has "
                     f"{len(seq)}")
  frames = [np.asarray(seq[i]) for i in range(start, start + n)]
  if kind == "rgb":
    return np.stack(frames).reshape(shape).astype(np.uint8)
  return np.stack([f.reshape(shape[-2:]) for f in frames]).reshape(shape).astype(bool)


def _decode(x: Any, rgb, masks) -> Any:
  if isinstance(x, dict):
    if "__rgb__" in x:
      return _frames(rgb, "rgb", x["__rgb__"], x["shape"])
    if "__mask__" in x:
      return _frames(masks, "masks", x["__mask__"], x["shape"])
    if "__nd__" in x:
      if x["shape"] is None:
        return np.array(x["__nd__"], dtype=np.dtype(x["dtype"]))[0]
      return np.array(x["__nd__"], dtype=np.dtype(x["dtype"])).reshape(x["shape"])
    return {k: _decode(v, rgb, masks) for k, v in x.items()}
  if isinstance(x, list):
    return [_decode(v, rgb, masks) for v in x]
  return x


def decode_record(record: Mapping[str, Any]) -> dict[str, Any]:
  """tfds record (as read by `tfds.data_sources`, or `encode_sample` output) -> sample."""
  for key in ("json", "rgb", "masks"):
    if key not in record:
      raise ValueError(f"record lacks {key!r}; keys: {sorted(record)}")
  rgb = [PIL_decode(f) if isinstance(f, (bytes, np.bytes_)) else f for f in record["rgb"]]
  masks = [PIL_decode(f) if isinstance(f, (bytes, np.bytes_)) else f for f in record["masks"]]
  return _decode(json.loads(_as_text(record["json"])), rgb, masks)


def PIL_decode(data: bytes) -> np.ndarray:  # noqa: N802 (reads as what it does)
  with PIL.Image.open(io.BytesIO(data)) as im:
    return np.asarray(im)


# --------------------------------------------------------------------------------- sources


class PixelWorldSource(grain.RandomAccessDataSource):
  """On-the-fly PixelWorld: index -> sample. `length` defaults to 2**31 - 1 (unlimited)."""

  def __init__(self, config: CX.WorldConfig | None = None, *, split: str = "train",
               seed: int = 0, tasks=None, length: int = 2**31 - 1):
    if length <= 0:
      raise ValueError(f"length must be positive, got {length}")
    self.world = PW.PixelWorld(config, split=split, seed=seed, tasks=tasks)
    self.length = int(length)

  def __len__(self) -> int:
    return self.length

  def __getitem__(self, index: int) -> dict[str, Any]:
    if not 0 <= int(index) < self.length:
      raise IndexError(f"index {index} out of range for a source of length {self.length}")
    return self.world[int(index)]

  def __repr__(self) -> str:
    return f"PixelWorldSource({self.world!r}, length={self.length})"


PAIRED_SEED_OFFSET = 1_000_003  # the paired stream's world seed offset


class PairedPixelWorldSource(PixelWorldSource):
  """PixelWorld samples of `tasks`, each carrying under `key` (the paired task's name) the
  sample at the same index of `paired` from an independent stream: the world seeded
  `seed + PAIRED_SEED_OFFSET`, so the two scenes are unrelated. Deterministic per index, so a
  resumed pipeline sees the same pairs."""

  def __init__(self, config: CX.WorldConfig | None = None, *, split: str = "train",
               seed: int = 0, tasks=None, paired: str, length: int = 2**31 - 1):
    super().__init__(config, split=split, seed=seed, tasks=tasks, length=length)
    self.key = paired
    self.paired = PW.PixelWorld(config, split=split, seed=seed + PAIRED_SEED_OFFSET,
                                tasks=(paired,))

  def __getitem__(self, index: int) -> dict[str, Any]:
    sample = super().__getitem__(index)
    sample[self.key] = self.paired.sample(int(index), task=self.key)
    return sample


class DecodeRecord(grain.MapTransform):
  """tfds array_record record -> sample dict."""

  def map(self, element):
    return decode_record(element)


class SelectTasks(grain.FilterTransform):
  """Keep samples whose `task` (cluster) or `subtask` is in `names`."""

  def __init__(self, names: Sequence[str]):
    self.names = frozenset(names)

  def filter(self, element) -> bool:
    return element["task"] in self.names or element["subtask"] in self.names


def tfds_source(data_dir: str, split: str, *, config: Any = "default"):
  """The array_record data source of a built PixelWorld tfds split (records, not decoded).

  config: a config name of `PixelWorldTfds` or a `PixelWorldConfig`.
  """
  from vitron_jax.data import tfds_pixelworld  # tfds import is slow; only when needed
  builder = tfds_pixelworld.PixelWorldTfds(config=config, data_dir=data_dir,
                                           file_format="array_record")
  if not builder.is_prepared():
    raise FileNotFoundError(f"PixelWorld tfds config {config!r} is not built under {data_dir}; "
                            f"run tfds_pixelworld.build(data_dir, config={config!r}) first")
  return builder.as_data_source(split=split)


def records_dataset(data_dir: str, split: str, *, config: Any = "default") -> grain.MapDataset:
  """grain MapDataset of decoded samples from a built tfds split (index i = generated i)."""
  return grain.MapDataset.source(tfds_source(data_dir, split, config=config)).map(DecodeRecord())


def pixelworld_dataset(config: CX.WorldConfig | None = None, *, split: str = "train",
                       seed: int = 0, tasks=None, length: int = 2**31 - 1) -> grain.MapDataset:
  """grain MapDataset generating PixelWorld samples on the fly."""
  return grain.MapDataset.source(PixelWorldSource(config, split=split, seed=seed, tasks=tasks,
                                                  length=length))


def pixelworld_stage_data(data_config: Any, world: CX.WorldConfig, seed: int, task: str,
                          transform, *, global_batch: int, process_index: int,
                          process_count: int, paired: str | None = None):
  """The batches of a PixelWorld pretraining stage: one subtask's training samples through
  `transform`, with the stage's `data` options (num_workers, strict, max_bad_fraction);
  `paired`: each sample also carries one of that subtask (`PairedPixelWorldSource`)."""
  d = data_config
  if paired:
    src = grain.MapDataset.source(PairedPixelWorldSource(world, split="train", seed=seed,
                                                         tasks=(task,), paired=paired))
  else:
    src = pixelworld_dataset(world, split="train", seed=seed, tasks=(task,))
  return pipeline.make_pipeline(
      [src], global_batch=global_batch, process_index=process_index,
      process_count=process_count, shuffle=False, transforms=[transform],
      num_workers=int(d.get("num_workers", 0)), strict=bool(d.get("strict", False)),
      max_bad_fraction=float(d.get("max_bad_fraction", 0.05)))


class LlavaJsonSource(grain.RandomAccessDataSource):
  """A LLaVA / Vitron-style JSON list (``id``, ``image`` path(s), ``conversations``) as samples.

  Image paths are relative to `image_root`; `task` / `subtask` label every sample.
  """

  def __init__(self, json_path: str, image_root: str, *, task: str = "understanding",
               subtask: str = "llava"):
    with open(json_path, encoding="utf-8") as f:
      self.items = json.load(f)
    if not isinstance(self.items, list):
      raise ValueError(f"{json_path} must hold a JSON list of samples, got "
                       f"{type(self.items).__name__}")
    self.image_root, self.task, self.subtask = image_root, task, subtask

  def __len__(self) -> int:
    return len(self.items)

  def __getitem__(self, index: int) -> dict[str, Any]:
    item = self.items[index]
    if "conversations" not in item:
      raise ValueError(f"LLaVA item {index} has no 'conversations': keys {sorted(item)}")
    paths = item.get("image") or []
    paths = [paths] if isinstance(paths, str) else list(paths)
    images = []
    for p in paths:
      with PIL.Image.open(os.path.join(self.image_root, p)) as im:
        images.append(np.asarray(im.convert("RGB")))
    return {"id": str(item.get("id", index)), "task": self.task, "subtask": self.subtask,
            "conversations": [{"from": c["from"], "value": c["value"]}
                              for c in item["conversations"]],
            "images": images, "regions": [], "targets": {}, "objects": [], "truth": {}}
