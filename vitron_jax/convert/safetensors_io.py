"""Reading and writing weight folders in Hugging Face layout, safetensors only.

A folder holds either one `model.safetensors` (or `diffusion_pytorch_model.safetensors`) or
shards listed by a `*.safetensors.index.json`. Pickle files (`*.bin`, `*.pt`, `*.pth`,
`*.ckpt`) are refused: they can run code when loaded, and this project never unpickles.
"""
from __future__ import annotations

import json
import os
import pathlib
import tempfile
from typing import Mapping

import numpy as np
from safetensors.numpy import load_file, save_file

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
_SAFETENSORS_MAGIC_MAX_HEADER = 100 * 1024 * 1024


class WeightsError(ValueError):
  """A weight file or folder does not hold what was expected."""


def _looks_like_pickle(path: pathlib.Path) -> bool:
  """True for a zip (torch.save) or raw pickle (protocol 2+ opcode 0x80) file.

  A safetensors file starts with its header length (u64 little-endian) followed by `{`; that
  length's low byte may itself be 0x80, so the JSON brace is checked first.
  """
  with open(path, "rb") as f:
    head = f.read(9)
  if len(head) == 9 and head[8:9] == b"{":
    return False
  return head[:2] == b"PK" or (len(head) > 0 and head[0] == 0x80)


def check_safetensors_file(path: str | os.PathLike) -> pathlib.Path:
  """Reject anything that is not a readable safetensors file, by name."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise WeightsError(f"weight file {str(path)!r} does not exist")
  if path.suffix in PICKLE_SUFFIXES or _looks_like_pickle(path):
    raise WeightsError(
        f"{str(path)!r} is a pickle/torch.save file; only safetensors weights are accepted "
        "(convert it with `safetensors` first; pickles are never loaded)")
  with open(path, "rb") as f:
    head = f.read(9)
  n = int.from_bytes(head[:8], "little") if len(head) == 9 else -1
  if n <= 0 or n > _SAFETENSORS_MAGIC_MAX_HEADER or head[8:9] != b"{":
    raise WeightsError(f"{str(path)!r} is not a safetensors file (bad header)")
  return path


def find_weight_files(folder: str | os.PathLike, stem: str | None = None) -> list[pathlib.Path]:
  """The safetensors files of a HF-format folder (following a shard index if present)."""
  folder = pathlib.Path(folder)
  if not folder.is_dir():
    raise WeightsError(f"weights folder {str(folder)!r} does not exist or is not a folder")
  indexes = sorted(folder.glob("*.safetensors.index.json"))
  if stem:
    indexes = [p for p in indexes if p.name.startswith(stem)]
  if indexes:
    with open(indexes[0]) as f:
      weight_map = json.load(f).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
      raise WeightsError(f"shard index {str(indexes[0])!r} has no 'weight_map'")
    files = sorted({folder / name for name in weight_map.values()})
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
      raise WeightsError(f"shard index {str(indexes[0])!r} names missing files: {missing}")
    return files
  files = sorted(folder.glob("*.safetensors"))
  if stem:
    files = [p for p in files if p.name.startswith(stem)]
  if not files:
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    hint = (f"; found pickle weights {pickles}, which are never loaded — convert them to "
            "safetensors") if pickles else ""
    raise WeightsError(f"no *.safetensors weights in folder {str(folder)!r}{hint}")
  return files


def read_weights(folder: str | os.PathLike, stem: str | None = None) -> dict[str, np.ndarray]:
  """All tensors of a folder as numpy arrays (name -> array)."""
  out: dict[str, np.ndarray] = {}
  for path in find_weight_files(folder, stem):
    check_safetensors_file(path)
    for k, v in load_file(str(path)).items():
      if k in out:
        raise WeightsError(f"tensor {k!r} appears in more than one file of {str(folder)!r}")
      out[k] = v
  return out


def _atomic_save(tensors: Mapping[str, np.ndarray], path: pathlib.Path, metadata=None):
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
  os.close(fd)
  try:
    save_file({k: np.asarray(v, order="C") for k, v in tensors.items()}, tmp, metadata=metadata)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_text(text: str, path: str | os.PathLike) -> pathlib.Path:
  """Write `text` atomically (temp file + rename), creating the folder."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      f.write(text)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return path


def write_json(obj, path: str | os.PathLike) -> pathlib.Path:
  """Write `obj` as indented JSON atomically (temp file + rename), creating the folder."""
  return write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", path)


def write_weights(tensors: Mapping[str, np.ndarray], folder: str | os.PathLike,
                  filename: str = "model.safetensors",
                  max_shard_bytes: int | None = None) -> list[pathlib.Path]:
  """Write tensors as one file, or as shards plus a `<filename>.index.json` when larger."""
  folder = pathlib.Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  meta = {"format": "pt"}
  total = sum(int(v.nbytes) for v in tensors.values())
  if max_shard_bytes is None or total <= max_shard_bytes:
    path = folder / filename
    _atomic_save(tensors, path, meta)
    return [path]
  shards: list[dict[str, np.ndarray]] = [{}]
  size = 0
  for k in sorted(tensors):
    v = tensors[k]
    if shards[-1] and size + v.nbytes > max_shard_bytes:
      shards.append({})
      size = 0
    shards[-1][k] = v
    size += int(v.nbytes)
  stem = filename[: -len(".safetensors")]
  paths, weight_map = [], {}
  for i, shard in enumerate(shards):
    name = f"{stem}-{i + 1:05d}-of-{len(shards):05d}.safetensors"
    _atomic_save(shard, folder / name, meta)
    paths.append(folder / name)
    weight_map.update({k: name for k in shard})
  index = {"metadata": {"total_size": total}, "weight_map": weight_map}
  write_json(index, folder / f"{filename}.index.json")
  return paths
