"""`vitron-convert`: Hugging Face / diffusers folders <-> orbax checkpoints.

    vitron-convert import KIND SRC_HF_FOLDER DST_CHECKPOINT
    vitron-convert export KIND SRC_CHECKPOINT DST_HF_FOLDER
    vitron-convert export vitron VITRON_TRAIN_WORKDIR DST_FOLDER   (LLM, vision, heads, tokenizer)
    vitron-convert kinds

A checkpoint folder holds `params/` (orbax) and `model.json` (`{"kind", "format_version",
"description"}`: everything needed to rebuild the Flax module). Export refuses a checkpoint
of another kind by name.
"""
from __future__ import annotations

import json
import os
import pathlib
import sys

from vitron_jax.convert.kinds import KINDS, get_kind
from vitron_jax.convert.safetensors_io import write_json

FORMAT_VERSION = 1
USAGE = __doc__


def import_folder(kind: str, src: str | os.PathLike, dst: str | os.PathLike) -> pathlib.Path:
  """HF folder -> orbax checkpoint folder `dst` (params + model.json)."""
  import orbax.checkpoint as ocp
  k = get_kind(kind)
  module, params = k.load_fn()(src)
  dst = pathlib.Path(dst).absolute()
  if (dst / "params").exists():
    raise FileExistsError(f"checkpoint folder {str(dst)!r} already holds params/; choose a new "
                          "destination")
  dst.mkdir(parents=True, exist_ok=True)
  ckptr = ocp.StandardCheckpointer()
  ckptr.save(dst / "params", params)
  ckptr.wait_until_finished()
  write_json({"kind": kind, "format_version": FORMAT_VERSION,
              "description": k.describe(module)}, dst / "model.json")
  return dst


def load_checkpoint(src: str | os.PathLike, kind: str | None = None):
  """Orbax checkpoint folder written by `import_folder` -> (module, params)."""
  import jax
  import orbax.checkpoint as ocp
  src = pathlib.Path(src).absolute()
  meta_path = src / "model.json"
  if not meta_path.is_file():
    raise FileNotFoundError(f"{str(src)!r} is not a vitron-convert checkpoint (no model.json)")
  meta = json.loads(meta_path.read_text())
  if kind is not None and meta.get("kind") != kind:
    raise ValueError(f"checkpoint {str(src)!r} holds a {meta.get('kind')!r} model, not {kind!r}")
  module = get_kind(meta["kind"]).build(meta["description"])
  params = ocp.StandardCheckpointer().restore(src / "params")
  return module, jax.tree_util.tree_map(jax.numpy.asarray, params)


def export_folder(kind: str, src: str | os.PathLike, dst: str | os.PathLike) -> pathlib.Path:
  """Orbax checkpoint folder -> HF folder loadable with `from_pretrained`; kind "vitron": a
  `vitron-train` run folder -> its parts (`convert.vitron_run`)."""
  if kind == "vitron":
    from vitron_jax.convert.vitron_run import export_run  # pylint: disable=import-outside-toplevel
    return export_run(src, dst)
  module, params = load_checkpoint(src, kind)
  get_kind(kind).save_fn()(module, params, dst)
  return pathlib.Path(dst)


def main(argv: list[str]) -> int:
  if len(argv) == 1 and argv[0] == "kinds":
    for k in KINDS.values():
      print(f"{k.name:12s} {k.doc}")
    print(f"{'vitron':12s} export only: a vitron-train run -> llm/, vision/, heads/, tokenizer/")
    return 0
  if len(argv) != 4 or argv[0] not in ("import", "export"):
    print(USAGE, file=sys.stderr)
    return 2
  verb, kind, src, dst = argv
  try:
    out = (import_folder if verb == "import" else export_folder)(kind, src, dst)
  except (ValueError, FileNotFoundError, FileExistsError, TypeError) as e:
    print(f"vitron-convert {verb} {kind}: {e}", file=sys.stderr)
    return 1
  print(f"vitron-convert: wrote {out}")
  return 0


def run() -> None:
  sys.exit(main(sys.argv[1:]))


if __name__ == "__main__":
  run()
