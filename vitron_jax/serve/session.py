"""Chat with a trained VITRON: `Vitron.load(workdir).chat(messages, images=..., regions=...)`.

    from vitron_jax.serve import Vitron
    bot = Vitron.load("runs/pixelworld")                 # newest checkpoint of a vitron-train run
    reply = bot.chat([{"role": "user", "content": "<image>\\nSegment the red circle."}],
                     images=[rgb_uint8])
    reply.text          # the answer, invocation included
    reply.invocation    # protocol.invocation.Invocation | InvocationError | None
    reply.files         # what the backend wrote (PNG / GIF), when a backend ran

Messages alternate user / assistant and end with a user message; the user text holds the
placeholders ``<image>`` / ``<video>`` / ``<roi>`` (one per given image, video, region; a message
without a placeholder gets ``<image>`` / ``<video>`` prepended when media are given, as LLaVA
does). The model, its tokenizer and the compiled decoder stay loaded between turns. A malformed
invocation is answered in text with the parser's reason; a module whose backend is not loaded
says so in the reply instead of failing.

Backends: the run's attached backends are built in (`train.vitron_backends`), each given the
invocation and the condition made from the signal embeddings of the turn: the image segmenter
writes the mask as ``turn{N}_segment_image_mask.png`` and the image with the mask tinted as
``..._overlay.png``; the image generator writes ``turn{N}_generate_image.png`` (its command,
and GLIGEN boxes where the invocation has them), the image editor ``turn{N}_edit_image.png``;
the video backends (text -> video, image -> video, video editing) write the clip as
``turn{N}_<module>.gif``. `backends=` adds or overrides others by module name.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from vitron_jax.data.pipeline import BadSampleError
from vitron_jax.protocol import invocation as I
from vitron_jax.protocol import tokens as T
from vitron_jax.train import checkpoint as C
from vitron_jax.train.task import build_task
from vitron_jax.train.vitron_task import TOKENIZER_DIR

ROLES = {"user": "human", "assistant": "gpt"}


@dataclasses.dataclass
class Reply:
  text: str                                    # the model's answer, as generated
  invocation: I.Invocation | I.InvocationError | None
  files: list[str] = dataclasses.field(default_factory=list)
  note: str = ""                               # what happened to the invocation, in words


def latest_step_dir(workdir: str) -> str:
  """`<workdir>/checkpoints/<newest step>` (FileNotFoundError naming the folder otherwise)."""
  root = os.path.join(workdir, "checkpoints")
  steps = sorted(int(d) for d in os.listdir(root) if d.isdigit()) if os.path.isdir(root) else []
  if not steps:
    raise FileNotFoundError(f"{workdir!r} holds no checkpoint (expected {root}/<step>/ from "
                            f"vitron-train)")
  return os.path.join(root, str(steps[-1]))


def _image_array(x: Any, size: int, name: str) -> np.ndarray:
  if isinstance(x, (str, os.PathLike)):
    import PIL.Image  # pylint: disable=import-outside-toplevel
    with PIL.Image.open(x) as im:
      x = np.asarray(im.convert("RGB").resize((size, size), PIL.Image.BICUBIC))
  a = np.asarray(x)
  if a.dtype != np.uint8 or a.shape != (size, size, 3):
    raise ValueError(f"{name} must be a uint8 [{size}, {size}, 3] array or an image file, got "
                     f"{a.dtype} {a.shape}")
  return a


class Vitron:
  """A loaded model + tokenizer + decoder; `backends` maps a module name to a callable
  `(invocation, context) -> list of written file paths` (context: the signal embeddings
  and the inputs of the turn)."""

  def __init__(self, task: Any, params: Any, *, out_dir: str,
               backends: Mapping[str, Callable[..., list[str]]] | None = None):
    self.task, self.params = task, params
    self.out_dir = out_dir
    self.backends = dict(backends or {})
    self.turn = 0

  @classmethod
  def load(cls, workdir: str, *, step: int | None = None, out_dir: str | None = None,
           backends: Mapping[str, Callable[..., list[str]]] | None = None) -> "Vitron":
    step_dir = (latest_step_dir(workdir) if step is None
                else os.path.join(workdir, "checkpoints", str(step)))
    config = ml_collections.ConfigDict(C.read_config(step_dir))
    if config.task.name != "vitron":
      raise ValueError(f"{step_dir} is a checkpoint of task {config.task.name!r}, not 'vitron'")
    tok_dir = os.path.join(workdir, TOKENIZER_DIR)
    if not os.path.isdir(tok_dir):
      raise FileNotFoundError(f"{workdir!r} has no {TOKENIZER_DIR}/ folder (written by "
                              "vitron-train at the start of a run): the token ids of its "
                              "checkpoints are unknown")
    with config.unlocked():
      config.task.tokenizer = tok_dir
    task = build_task(config)
    abstract = nn.meta.unbox(jax.eval_shape(task.init, jax.random.key(0)))
    params, loaded = C.load_params(step_dir, abstract, task.components())
    missing = [p for p, x in jax.tree_util.tree_flatten_with_path(
        params, is_leaf=lambda x: x is None)[0] if x is None]
    if missing:
      raise C.CheckpointMismatchError(f"{step_dir} lacks {len(missing)} parameters of the model "
                                      f"(loaded {len(loaded)})")
    return cls(task, params, out_dir=out_dir or os.path.join(workdir, "chat"),
               backends=backends)

  # -- one turn ------------------------------------------------------------------------------
  def sample_of(self, messages: Sequence[Mapping[str, str]], images=(), videos=(),
                regions=()) -> dict[str, Any]:
    """Messages + media -> a sample dict (`pixelworld.sample` format) for the encoder."""
    if not messages or messages[-1].get("role") != "user":
      raise ValueError("messages must be a non-empty list ending with a user message")
    conv = []
    for k, m in enumerate(messages):
      role = m.get("role")
      if role not in ROLES or ROLES[role] != ("human" if k % 2 == 0 else "gpt"):
        raise ValueError(f"message {k}: roles must alternate user, assistant, ...; got {role!r}")
      if not isinstance(m.get("content"), str) or not m["content"].strip():
        raise ValueError(f"message {k}: content must be non-empty text")
      conv.append({"from": ROLES[role], "value": m["content"]})
    size = self.task.layout.image_size
    imgs = [_image_array(x, size, f"images[{i}]") for i, x in enumerate(images)]
    vids = [np.asarray(v) for v in videos]
    first = conv[0]["value"]
    if imgs and T.IMAGE not in " ".join(c["value"] for c in conv):
      first = (T.IMAGE + "\n") * len(imgs) + first
    if vids and T.VIDEO not in " ".join(c["value"] for c in conv):
      first = T.VIDEO + "\n" + first
    conv[0] = dict(conv[0], value=first)
    sample = {"id": f"chat/{self.turn}", "conversations": conv, "images": imgs,
              "regions": [dict(r) for r in regions]}
    if len(vids) > 1:
      raise ValueError(f"one video per conversation is supported, got {len(vids)}")
    if vids:
      sample["video"] = vids[0]
    return sample

  def chat(self, messages: Sequence[Mapping[str, str]], *, images=(), videos=(), regions=(),
           max_new_tokens: int = 64) -> Reply:
    sample, dropped = self.fitted_sample(messages, images, videos, regions)
    self.turn += 1
    trimmed = (f"dropped the {dropped} oldest turns after the first to fit seq_len "
               f"{self.task.layout.seq_len}; " if dropped else "")
    texts, signals = self.task.answer(self.params, [sample], batch_size=1,
                                      max_new_tokens=max_new_tokens, with_signals=True)
    text = texts[0]
    inv = I.find_invocation(text)
    if inv is None:
      return Reply(text, None, note=trimmed.rstrip("; "))
    if isinstance(inv, I.InvocationError):
      return Reply(f"{text}\n[the invocation could not be parsed: {inv.kind}: {inv.message}]",
                   inv, note=f"{trimmed}malformed invocation ({inv.kind})")
    backend = self.backends.get(inv.module)
    attached = getattr(self.task, "backends", {}).get(inv.module)
    if backend is None and attached is None:
      return Reply(text, inv, note=f"{trimmed}no backend loaded for module {inv.module!r}")
    os.makedirs(self.out_dir, exist_ok=True)
    if backend is None:
      files, note = self._run_attached(attached, sample, text, signals[0])
      return Reply(text, inv, files=files, note=f"{trimmed}{note}")
    files = backend(inv, {"sample": sample, "out_dir": self.out_dir, "turn": self.turn,
                          "signals": signals[0]})
    return Reply(text, inv, files=list(files), note=f"{trimmed}ran {inv.module}")

  def _run_attached(self, attached, sample, text: str, signal) -> tuple[list[str], str]:
    """The run's own backend (`train.vitron_backends`) on this turn: (files written, note)."""
    m = attached.module
    (given,), grounded = self.task.backend_answers(attached, self.params, [sample], [text])
    files, note = attached.chat_files(self.task.model, self.task.model_params(self.params),
                                      self.params["backends"][attached.params_of], sample,
                                      given, signal,
                                      os.path.join(self.out_dir, f"turn{self.turn}_{m}"))
    if grounded:
      note += f"; the boxes of what it names found by {self.task.grounder.module}"
    return files, note

  def fitted_sample(self, messages, images=(), videos=(), regions=()) -> tuple[dict, int]:
    """`sample_of`, with the oldest (assistant, user) pairs after the first message (which
    holds the media placeholders) dropped until the prompt fits `seq_len`; returns the sample
    and the number of messages dropped. A last message that alone does not fit raises the
    encoder's `BadSampleError`."""
    messages = list(messages)
    dropped = 0
    while True:
      sample = self.sample_of(messages, images, videos, regions)
      try:
        self.task.encoder.prompt(sample)
        return sample, dropped
      except BadSampleError as e:
        if e.reason != "longer than the sequence" or len(messages) < 3:
          raise
        messages = messages[:1] + messages[3:]
        dropped += 2
