"""A tfds builder for real conversation data in the LLaVA / Vitron JSON format.

Input: a local folder (tfds "manual dir") holding one or more `<split>.json` files, each a
JSON list of items, and the media they name (paths relative to the folder):

    {"id": "000001", "image": "coco/0001.jpg" | ["a.jpg", "b.jpg"], "video": "clips/v1.gif",
     "conversations": [{"from": "human", "value": "<image>\\nWhat is this?"},
                       {"from": "gpt", "value": "A cat."}], ...any other fields...}

Each `<split>.json` becomes a split (`train.json` -> "train"). Records keep the media *as
their file bytes* (decoding, resizing and frame sampling happen in the input pipeline, so a
broken file is one bad sample there, named by its id, not a failed build). A file that does not
exist is recorded in `missing` for the same reason. Fields other than id / image / video /
conversations are kept as JSON in `extra`.

    from vitron_jax.data import llava_json
    llava_json.build("/data/tfds/llava_mix", "/data/llava_folder")
    ds = llava_json.dataset("/data/tfds/llava_mix", "train")          # grain MapDataset
    ds = ds.map(llava_json.DecodeMedia(image_size=336, num_frames=8))   # -> sample dicts

`DecodeMedia` gives samples in the format of `vitron_jax.data.pixelworld.sample` (images
uint8 `[S, S, 3]`, video uint8 `[T, S, S, 3]`) and raises `BadSampleError` for an
undecodable image, a missing or undecodable video, or a missing file. Video containers:
animated GIF / WebP / TIFF (PIL), `.npy` uint8 `[T, H, W, 3]` (no pickle) and folders of
frame images; other containers (mp4, ...) need a video decoder, which this package does not
depend on: they are reported as undecodable.
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
import re
from typing import Any, Mapping

import grain.python as grain
import numpy as np
import tensorflow_datasets as tfds

from vitron_jax.data.pipeline import BadSampleError, decode_image

FRAME_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
_KNOWN = ("id", "image", "video", "conversations")

FEATURES = {
    "id": tfds.features.Text(),
    "conversations": tfds.features.Text(),       # JSON list of {"from", "value"}
    "image_paths": tfds.features.Sequence(tfds.features.Text()),
    "images": tfds.features.Sequence(tfds.features.Tensor(shape=(), dtype=np.object_)),
    "video_path": tfds.features.Text(),          # "" when none
    "video_kind": tfds.features.Text(),          # "file" | "frames" | ""
    "video": tfds.features.Sequence(tfds.features.Tensor(shape=(), dtype=np.object_)),
    "missing": tfds.features.Sequence(tfds.features.Text()),
    "extra": tfds.features.Text(),               # JSON of the other fields
}


@dataclasses.dataclass(eq=False)
class LlavaJsonConfig(tfds.core.BuilderConfig):
  """`splits` maps split name -> JSON file (relative to the manual dir); empty = every
  `*.json` in it, named by stem."""
  splits: tuple[tuple[str, str], ...] = ()


def _read(path: str) -> bytes:
  with open(path, "rb") as f:
    return f.read()


def _split_files(root: str, cfg: LlavaJsonConfig) -> dict[str, str]:
  if cfg.splits:
    return {name: os.path.join(root, f) for name, f in cfg.splits}
  out = {}
  for f in sorted(os.listdir(root)):
    if f.endswith(".json"):
      name = re.sub(r"[^A-Za-z0-9_]", "_", f[:-5])
      out[name] = os.path.join(root, f)
  if not out:
    raise FileNotFoundError(f"no *.json files in {root}; expected <split>.json lists of "
                            f"LLaVA items")
  return out


def record_of(item: Mapping[str, Any], index: int, root: str, where: str) -> dict[str, Any]:
  """One JSON item -> a record (media as bytes; absent files listed in `missing`)."""
  if not isinstance(item, Mapping):
    raise ValueError(f"{where}: item {index} is a {type(item).__name__}, expected an object")
  sid = str(item.get("id", f"{os.path.basename(where)}:{index}"))
  missing: list[str] = []
  paths = item.get("image") or []
  paths = [paths] if isinstance(paths, str) else list(paths)
  images = []
  for p in paths:
    full = os.path.join(root, p)
    if os.path.isfile(full):
      images.append(_read(full))
    else:
      missing.append(f"image:{p}")
      images.append(b"")
  video, kind, vpath = [], "", item.get("video") or ""
  if vpath:
    full = os.path.join(root, vpath)
    if os.path.isdir(full):
      kind = "frames"
      frames = sorted(f for f in os.listdir(full) if f.lower().endswith(FRAME_EXTS))
      video = [_read(os.path.join(full, f)) for f in frames]
      if not video:
        missing.append(f"video frames:{vpath}")
    elif os.path.isfile(full):
      kind, video = "file", [_read(full)]
    else:
      missing.append(f"video:{vpath}")
  conv = item.get("conversations")
  extra = {k: v for k, v in item.items() if k not in _KNOWN}
  return {"id": sid, "conversations": json.dumps(conv if conv is not None else []),
          "image_paths": paths, "images": images, "video_path": vpath, "video_kind": kind,
          "video": video, "missing": missing, "extra": json.dumps(extra, default=str)}


class LlavaJson(tfds.core.GeneratorBasedBuilder):
  """Conversation data in the LLaVA / Vitron JSON format from a local folder."""

  name = "llava_json"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = ("Point manual_dir at a folder with <split>.json files (LLaVA "
                                  "lists) and the images / videos they reference.")
  BUILDER_CONFIGS = [LlavaJsonConfig(name="default", description="every *.json is a split")]
  DEFAULT_CONFIG_NAME = "default"

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):
    return None  # nothing to download, no checksums to find (see tfds_pixelworld)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=self, description=__doc__.split("\n")[0],
                                 features=tfds.features.FeaturesDict(dict(FEATURES)),
                                 disable_shuffling=True)

  def _split_generators(self, dl_manager):
    root = os.fspath(dl_manager.manual_dir)
    return {name: self._generate_examples(path, root)
            for name, path in _split_files(root, self.builder_config).items()}

  def _generate_examples(self, path: str, root: str):
    with open(path, encoding="utf-8") as f:
      items = json.load(f)
    if not isinstance(items, list):
      raise ValueError(f"{path} must hold a JSON list of items, got {type(items).__name__}")
    for i, item in enumerate(items):
      yield i, record_of(item, i, root, path)


def builder(data_dir: str, config: str | LlavaJsonConfig = "default") -> LlavaJson:
  """The builder over `data_dir` (one built folder per data_dir)."""
  return LlavaJson(config=config, data_dir=data_dir, file_format="array_record")


def build(data_dir: str, folder: str, *, config: str | LlavaJsonConfig = "default"
          ) -> LlavaJson:
  """Write every split of `folder` under `data_dir` as array_record (no-op when built)."""
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"LLaVA folder {folder} does not exist")
  b = builder(data_dir, config)
  b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=folder))
  return b


def dataset(data_dir: str, split: str, *, config: str = "default") -> grain.MapDataset:
  """grain MapDataset of raw records of a built split (decode with `DecodeMedia`)."""
  b = builder(data_dir, config)
  if not b.is_prepared():
    raise FileNotFoundError(f"the LLaVA tfds data set is not built under {data_dir}; run "
                            f"llava_json.build(data_dir, folder) first")
  if split not in b.info.splits:
    raise ValueError(f"split {split!r} not in the LLaVA data set under {data_dir}; it has "
                     f"{sorted(b.info.splits)}")
  return grain.MapDataset.source(b.as_data_source(split=split))


# ------------------------------------------------------------------------------ decoding


def _text(x: Any) -> str:
  return x.decode("utf-8") if isinstance(x, (bytes, np.bytes_)) else str(x)


def _frames_of_file(data: bytes, path: str, sid: str) -> list[np.ndarray]:
  ext = os.path.splitext(path)[1].lower()
  if ext == ".npy":
    try:
      arr = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as e:  # numpy raises ValueError / OSError for broken files
      raise BadSampleError(sid, "undecodable video", f"{path}: {e}") from e
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
      raise BadSampleError(sid, "undecodable video", f"{path}: need uint8 [T, H, W, 3], got "
                           f"{arr.dtype} {arr.shape}")
    return list(arr)
  import PIL.Image  # pylint: disable=import-outside-toplevel
  try:
    im = PIL.Image.open(io.BytesIO(data))
    frames = []
    for k in range(getattr(im, "n_frames", 1)):
      im.seek(k)
      frames.append(np.asarray(im.convert("RGB")))
  except Exception as e:  # PIL: UnidentifiedImageError, OSError, EOFError ...
    raise BadSampleError(sid, "undecodable video",
                         f"{path}: {type(e).__name__}: {e} (supported: animated GIF/WebP/TIFF, "
                         f".npy, a folder of frames)") from e
  return frames


def sample_frames(n_avail: int, num_frames: int) -> np.ndarray:
  """`num_frames` indices spread uniformly over `n_avail` frames (repeats when fewer)."""
  return np.linspace(0, n_avail - 1, num_frames).round().astype(int)


class DecodeMedia(grain.MapTransform):
  """Raw record -> sample dict (id, task, subtask, conversations, images, video?).

  Images are resized to `image_size` squares; videos to `num_frames` frames (uniformly
  sampled) of the same size. Raises `BadSampleError` naming the record for a missing file, an
  undecodable image or video, or conversations that are not a list."""

  def __init__(self, image_size: int | None = 336, num_frames: int = 8,
               task: str = "understanding", subtask: str = "llava"):
    self.image_size, self.num_frames = image_size, num_frames
    self.task, self.subtask = task, subtask

  def map(self, record: Mapping[str, Any]) -> dict[str, Any]:
    sid = _text(record["id"])
    missing = [_text(m) for m in record.get("missing", [])]
    if missing:
      kind = "missing video file" if any(m.startswith("video") for m in missing) else \
          "missing image file"
      raise BadSampleError(sid, kind, ", ".join(missing))
    conv = json.loads(_text(record["conversations"]))
    if not isinstance(conv, list):
      raise BadSampleError(sid, "malformed conversation", "conversations is not a list")
    paths = [_text(p) for p in record.get("image_paths", [])]
    images = [decode_image(b, self.image_size, sid, name=p)
              for b, p in zip(record.get("images", []), paths)]
    sample = {"id": sid, "task": self.task, "subtask": self.subtask, "conversations": conv,
              "images": images, "regions": [], "targets": {}, "objects": [], "truth": {},
              "extra": json.loads(_text(record.get("extra", "{}")) or "{}")}
    vpath = _text(record.get("video_path", ""))
    if vpath:
      kind = _text(record.get("video_kind", ""))
      blobs = list(record.get("video", []))
      if kind == "frames":
        frames = [decode_image(b, None, sid, name=f"{vpath}[{k}]") for k, b in enumerate(blobs)]
      else:
        frames = _frames_of_file(bytes(blobs[0]), vpath, sid)
      if not frames:
        raise BadSampleError(sid, "undecodable video", f"{vpath}: no frames")
      pick = sample_frames(len(frames), self.num_frames)
      sample["video"] = np.stack([decode_image(frames[k], self.image_size, sid, name=vpath)
                                  for k in pick])
    return sample
