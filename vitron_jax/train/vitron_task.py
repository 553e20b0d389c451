"""Task "vitron": the VITRON model trained on PixelWorld and/or LLaVA / Vitron JSON data.

Configs: `experiments/pixelworld.py` (the built-in world), `experiments/phase*.py` (the
paper's phases), `experiments/vitron_tiny.py` / `vitron_7b.py` (model sections).

* data: `config.data.sources` is a weighted mixture of ``(kind, where, weight)``: kind
  "pixelworld" (where = tasks: "image", "video", clusters or subtasks joined by commas, None =
  all) generates samples on the fly from `config.data.pixelworld` (image_size, num_frames,
  max_objects, seed); kind "llava_json" (where = a local LLaVA / Vitron JSON folder, built to
  tfds on first use); kind "repeat" (where = "phrases" / "words" / "boxes", optionally
  ":MIN-MAX", or None: drills that copy a text or drawn boxes back, `data.repeat_drill`;
  "boxes" needs `task.region_boxes`; trained, never evaluated). Samples become static-shape
  examples (`data.vitron_examples`).
* loss: `models.objective.vitron_loss` with `config.loss` weights (lm, align, synergy,
  backend); attached backends (`train.vitron_backends`: `model.segmenter` attaches the
  frozen image segmenter, parameters under `backends/segment_image/`) join the same jitted
  step through their hooks.
* evaluation: PixelWorld samples of every trained subtask from each split of `eval.split`
  ("heldout", or several joined by commas, e.g. "val,heldout"; the first is the primary one:
  unprefixed metrics, the others as ``{split}/...``), answered by free-running greedy decoding
  (never teacher-forced), scored per subtask by `eval.answers` against the chance level of the
  same samples; pictures of a few answers (and GIFs of the videos backends made of them);
  answers written as JSONL under ``{workdir}/eval/`` and one table per split with the
  pictures as ``{workdir}/report.md``.

Task fields (`config.task`): tokenizer ("pixelworld" = the word-level PixelWorld tokenizer, or
a local Hugging Face tokenizer folder), seq_len, system (chat system prompt; None = Vicuna's),
max_regions (default: PixelWorld's max_objects), videos (None = whenever the mixture has video
tasks or real data), components (checkpoint items), ground_with_segmenter (the segmenter finds
the objects that edit / image -> video invocations name before their backends run;
`train.phrase_grounding`), constrained_decoding (default True: free-running answers keep to
the invocation grammar, `protocol.grammar`; False decodes without it), max_invocation_boxes
(the grammar's cap on one region's boxes; None: the token budget only), region_boxes (default
False: each ``<roi>`` of a prompt is also written as its box's location tokens, Ferret's hybrid
region; `data.vitron_examples`). `config.eval`: split,
num_samples, pictures, batch_size, max_new_tokens.
"""
from __future__ import annotations

import io
import json
import os
from typing import Any, Sequence

import jax
import numpy as np

from vitron_jax.convert.safetensors_io import write_text
from vitron_jax.data import pipeline
from vitron_jax.data import pixelworld_tokenizer as PT
from vitron_jax.data import repeat_drill as RD
from vitron_jax.data import vitron_examples as VE
from vitron_jax.data.pixelworld import VIDEO_TASKS, PixelWorld, WorldConfig, task_weights
from vitron_jax.data.pixelworld.splits import check_split
from vitron_jax.data.sources import pixelworld_dataset
from vitron_jax.eval import answers as EA
from vitron_jax.eval.report import write_report
from vitron_jax.models.objective import LossWeights, vitron_loss
from vitron_jax.models.vitron import Vitron, dummy_batch, dummy_natives
from vitron_jax.models.vitron_config import vitron_config_from
from vitron_jax.models.vitron_decoding import generate
from vitron_jax.protocol.grammar import InvocationGrammar
from vitron_jax.protocol.tokenizer import decode_text, protocol_ids
from vitron_jax.train.phrase_grounding import PhraseGrounder
from vitron_jax.train.segmentation_attachment import SegmentationAttachment
from vitron_jax.train.task import register_task
from vitron_jax.train.vitron_backends import attachments

SOURCE_KINDS = ("pixelworld", "llava_json", RD.KIND)
TOKENIZER_DIR = "tokenizer"  # under the workdir (`save_assets`)


def _tasks_of(where: Any) -> Any:
  if where is None or where in ("image", "video"):
    return where
  if isinstance(where, str):
    return tuple(w.strip() for w in where.split(",") if w.strip())
  return tuple(where)


def parse_sources(sources: Sequence[Sequence[Any]]) -> list[tuple[str, Any, float]]:
  out = []
  for i, src in enumerate(sources):
    if len(src) != 3:
      raise ValueError(f"data.sources[{i}] must be (kind, where, weight), got {src!r}")
    kind, where, weight = src
    if kind not in SOURCE_KINDS:
      raise ValueError(f"data.sources[{i}]: kind must be one of {SOURCE_KINDS}, got {kind!r}")
    if kind == "llava_json" and not (isinstance(where, str) and os.path.isdir(where)):
      raise ValueError(f"data.sources[{i}]: a llava_json source needs a folder, got {where!r}")
    if kind == RD.KIND:
      try:
        RD.parse_where(where)
      except ValueError as e:
        raise ValueError(f"data.sources[{i}]: {e}") from None
    out.append((kind, _tasks_of(where) if kind == "pixelworld" else where, float(weight)))
  if not out:
    raise ValueError("data.sources is empty")
  return out


class VitronTask:
  """See the module docstring."""

  name = "vitron"

  def __init__(self, config: Any):
    self.cfg = config
    t = config.task
    self.tokenizer = PT.load(t.get("tokenizer", "pixelworld"))
    self.vcfg = vitron_config_from(config.model, protocol_ids(self.tokenizer),
                                   len(self.tokenizer))
    self.model = Vitron(self.vcfg)
    self.sources = parse_sources(config.data.sources)
    pw = config.data.get("pixelworld") or {}
    self.world_config = WorldConfig.from_config(config.data)
    self.world_seed = int(pw.get("seed", 0))
    fe = self.vcfg.frontend
    if fe.vision.image_size != self.world_config.image_size or (
        fe.num_frames != self.world_config.num_frames):
      raise ValueError(f"data.pixelworld (image_size={self.world_config.image_size}, num_frames="
                       f"{self.world_config.num_frames}) must match the frontend (vision "
                       f"image_size={fe.vision.image_size}, num_frames={fe.num_frames})")
    self.subtasks = self._subtasks()
    videos = t.get("videos", None)
    if videos is None:
      videos = any(k == "llava_json" for k, _, _ in self.sources) or any(
          s in VIDEO_TASKS for s in self.subtasks)
    self.layout = VE.Layout.from_config(
        self.vcfg, seq_len=int(t.get("seq_len", 128)), videos=bool(videos),
        max_regions=int(t.get("max_regions", 0) or self.world_config.max_objects),
        system=t.get("system", None), region_boxes=bool(t.get("region_boxes", False)))
    self.encoder = VE.VitronEncoder(self.tokenizer, self.layout)
    for i, (kind, where, _) in enumerate(self.sources):
      style, (_, most) = RD.parse_where(where) if kind == RD.KIND else (None, (0, 0))
      if style == "boxes" and not self.layout.region_boxes:
        raise ValueError(f"data.sources[{i}]: a 'boxes' repeat drill needs task.region_boxes "
                         "(its regions' boxes are written only as location tokens)")
      if style == "boxes" and most > self.layout.max_regions:
        raise ValueError(f"data.sources[{i}]: a 'boxes' drill of up to {most} boxes needs "
                         f"task.max_regions >= {most}, got {self.layout.max_regions}")
    self.weights = LossWeights(**{k: float(v) for k, v in config.get("loss", {}).items()})
    self.backends = attachments(config, self.world_config.image_size,
                                self.world_config.num_frames, self.tokenizer, self.vcfg.head)
    self.hooks = tuple(b.hook for b in self.backends.values())
    self.grounder = None  # the segmenter finding what edits and animations name
    if t.get("ground_with_segmenter", False):
      seg = self.backends.get(SegmentationAttachment.module)
      if seg is None:
        raise ValueError("task.ground_with_segmenter needs the image segmenter attached "
                         "(model.segmenter)")
      self.grounder = PhraseGrounder(seg)
    # answers decode under the invocation grammar: an invocation the LLM opens is parseable
    self.grammar = None
    if t.get("constrained_decoding", True):
      boxes = t.get("max_invocation_boxes", None)
      self.grammar = InvocationGrammar.from_tokenizer(
          self.tokenizer, self.vcfg.llm.vocab_size, stop_tokens=(self.tokenizer.eos_token_id,),
          max_boxes=None if boxes is None else int(boxes))

  def _subtasks(self) -> tuple[str, ...]:
    names: list[str] = []
    for kind, where, _ in self.sources:
      if kind == "pixelworld":
        names += [n for n in task_weights(where) if n not in names]
    return tuple(names)

  # -- model ---------------------------------------------------------------------------------
  def init(self, rng):
    params = dict(self.model.init(rng, dummy_batch(self.vcfg, 1),
                                  natives=dummy_natives(self.vcfg, 1))["params"])
    if self.backends:  # (replaced by their stage's checkpoint in a run with stages)
      owners = {m: b for m, b in self.backends.items() if b.params_of == m}
      keys = jax.random.split(jax.random.fold_in(rng, 1), len(owners))
      params["backends"] = {m: b.init_boxed(k) for (m, b), k in zip(owners.items(), keys)}
    return params

  def frozen(self) -> tuple[str, ...]:
    """The attached backends never train (they are loaded from their pretraining stage)."""
    return (r"^backends/",) if self.backends else ()

  def batch_spec(self):
    s = self.layout.image_size
    probe = {"id": "batch_spec", "conversations": [
        {"from": "human", "value": "<image>"}, {"from": "gpt", "value": "."}],
             "images": [np.zeros((s, s, 3), np.uint8)], "regions": []}
    spec = {k: (np.shape(v), np.asarray(v).dtype) for k, v in self.encoder(probe).items()}
    for b in self.backends.values():
      spec.update(b.batch_spec())
    return spec

  def example(self, sample) -> dict[str, np.ndarray]:
    """A training example: the encoded conversation plus each attached backend's fields."""
    out = self.encoder(sample)
    for b in self.backends.values():
      out.update(b.example(sample))
    return out

  def loss(self, params, batch, rng):
    batch = VE.nest(batch)
    params = dict(params)
    backend_params = params.pop("backends", {})
    counts = {}
    if self.backends:
      batch["backend"], batch["backend_rows"] = {}, {}
      for m, b in self.backends.items():
        batch["backend"][m], batch["backend_rows"][m], c = b.gather(batch.pop(m))
        counts.update(c)
    backend_params = {m: backend_params[b.params_of] for m, b in self.backends.items()}
    loss, metrics = vitron_loss(self.model, params, batch, rng, hooks=self.hooks,
                                backend_params=backend_params, weights=self.weights)
    metrics.update(counts)
    return loss, metrics

  def components(self):
    backends = {f"backend_{m}": rf"^backends/{m}/" for m, b in self.backends.items()
                if b.params_of == m}
    comps = self.cfg.task.get("components", None)
    if comps:
      return {**{k: v.replace("(model/)?", "") for k, v in dict(comps).items()}, **backends}
    return {"llm": r"^llm/", "vision": r"^frontend/vision_tower/",
            "frontend": r"^frontend/(mm_projector|region_encoder)/", "head": r"^head/",
            "discriminator": r"^discriminator/", **backends}

  # -- data ----------------------------------------------------------------------------------
  def _datasets(self) -> list:
    out = []
    size, frames = self.world_config.image_size, self.world_config.num_frames
    for kind, where, _ in self.sources:
      if kind == "pixelworld":
        out.append(pixelworld_dataset(self.world_config, split="train", seed=self.world_seed,
                                      tasks=where))
      elif kind == RD.KIND:
        out.append(RD.repeat_dataset(where, seed=self.world_seed, image_size=size))
      else:
        from vitron_jax.data import llava_json  # pylint: disable=import-outside-toplevel
        data_dir = os.path.join(where, "_tfds")
        if not llava_json.builder(data_dir).is_prepared():
          llava_json.build(data_dir, where)
        out.append(llava_json.dataset(data_dir, "train").map(
            llava_json.DecodeMedia(size, frames)))
    return out

  def make_data(self, global_batch, process_index, process_count):
    d = self.cfg.data
    return pipeline.make_pipeline(
        self._datasets(), global_batch=global_batch, process_index=process_index,
        process_count=process_count, weights=[w for _, _, w in self.sources],
        seed=int(d.seed), shuffle=any(k == "llava_json" for k, _, _ in self.sources),
        transforms=[self.example], num_workers=int(d.num_workers), strict=bool(d.strict),
        max_bad_fraction=float(d.max_bad_fraction))

  def save_assets(self, workdir: str) -> None:
    """The tokenizer goes to `{workdir}/tokenizer`: a served run uses its own ids."""
    PT.save(self.tokenizer, os.path.join(workdir, TOKENIZER_DIR))

  # -- evaluation ----------------------------------------------------------------------------
  def model_params(self, params):
    """The Vitron model's part of the task's parameters (attached backends left out)."""
    return {k: v for k, v in dict(params).items() if k != "backends"}

  def answer(self, params, samples: Sequence[dict], *, batch_size: int = 16,
             max_new_tokens: int = 48, with_signals: bool = False):
    """Free-running greedy answers to the first human turn of each sample (under the invocation
    grammar unless `task.constrained_decoding` is False); with_signals also
    gives, per answer, its first invocation's (query-slot hidden states [K, D], validity [K],
    head module index or -1)."""
    prompts = [self.encoder.prompt(s) for s in samples]
    texts: list[str] = []
    signals: list[tuple[np.ndarray, np.ndarray, int]] = []
    eos = self.tokenizer.eos_token_id
    model_params = self.model_params(params)
    for i in range(0, len(prompts), batch_size):
      chunk = prompts[i:i + batch_size]
      n = len(chunk)
      chunk = chunk + [chunk[-1]] * (batch_size - n)  # static batch: one compilation
      out = generate(self.model, model_params, VE.nest(VE.stack(chunk)),
                     max_new_tokens=max_new_tokens, stop_tokens=(eos,),
                     pad_token_id=self.tokenizer.pad_token_id, grammar=self.grammar)
      tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
      if with_signals:
        sig, valid, mods = (np.asarray(x)[:, 0] for x in (out.signals, out.signal_valid,
                                                          out.signal_modules))
        signals += [(sig[r], valid[r], int(mods[r])) for r in range(n)]
      for r in range(n):
        ids = [int(x) for x in tokens[r, :lengths[r]] if int(x) != eos]
        texts.append(decode_text(self.tokenizer, ids).strip())
    return (texts, signals) if with_signals else texts

  def backend_answers(self, backend, params, samples: Sequence[dict], answers: Sequence[str]
                      ) -> tuple[list[str], int]:
    """The answers `backend` runs, and how many of them the segmenter grounded: as the LLM
    wrote them, or with `task.ground_with_segmenter` the boxes of the objects their
    invocations name found by the segmenter (`train.phrase_grounding`)."""
    if self.grounder is None or not getattr(backend, "grounds", False):
      return list(answers), 0
    seg = self.backends[self.grounder.module]
    return self.grounder.ground(backend, params["backends"][seg.params_of], samples, answers)

  def eval_splits(self) -> tuple[str, ...]:
    """`eval.split`: one PixelWorld split or several joined by commas ("val,heldout"); the
    first is the primary one (unprefixed metrics, `beats_chance_all`)."""
    raw = self.cfg.get("eval", {}).get("split", "heldout")
    splits = tuple(x.strip() for x in str(raw).split(",") if x.strip())
    for x in splits:
      check_split(x)
    if not splits or len(set(splits)) != len(splits):
      raise ValueError(f"eval.split must name distinct PixelWorld splits, got {raw!r}")
    return splits

  def eval_samples(self, split: str | None = None) -> list[dict]:
    e = self.cfg.get("eval", {})
    world = PixelWorld(self.world_config, split=split or self.eval_splits()[0],
                       seed=self.world_seed)
    per = max(1, int(e.get("num_samples", 64)) // max(1, len(self.subtasks)))
    return [world.sample(i, task=t) for t in self.subtasks for i in range(per)]

  def _evaluate_split(self, params, split: str):
    e = self.cfg.get("eval", {})
    samples, kept = self.eval_samples(split), []
    for s in samples:  # the layout may not fit a held-out sample: say so, never drop silently
      try:
        self.encoder.prompt(s)
        kept.append(s)
      except pipeline.BadSampleError:
        pass
    answers, signals = self.answer(params, kept, batch_size=int(e.get("batch_size", 16)),
                                   max_new_tokens=int(e.get("max_new_tokens", 48)),
                                   with_signals=True)
    rows = []
    for s, a in zip(kept, answers):
      scores, chance = EA.score_answer(s, a, max_objects=self.world_config.max_objects)
      rows.append((s["subtask"], scores, chance))
    outputs, made = [], {}  # what the attached backends make of the answers, and pictures
    grounded = {}  # module -> answers whose boxes the segmenter found
    for b in self.backends.values():
      given, grounded[b.module] = self.backend_answers(b, params, kept, answers)
      scored, pics = b.score(self.model, self.model_params(params),
                             params["backends"][b.params_of], kept, given, signals)
      outputs += scored
      for i, pic in pics.items():
        made.setdefault(i, []).append(pic)
    return (kept, answers, rows, EA.summarize(rows + outputs), len(samples) - len(kept), made,
            grounded)

  def evaluate(self, params, step, workdir=None):
    if not self.subtasks:
      return {}
    e = self.cfg.get("eval", {})
    n_pic = int(e.get("pictures", 0))
    metrics: dict[str, Any] = {}
    tables, written, pictures, skipped, notes = {}, [], {}, 0, []
    notes.append("Answers were decoded under the invocation grammar (`protocol.grammar`): "
                 "every invocation the LLM opened is well formed and closed within the token "
                 "budget; the LLM chose module, command and boxes." if self.grammar is not None
                 else "Answers were decoded without the invocation grammar "
                 "(`task.constrained_decoding=False`): malformed invocations count as such.")
    for i, split in enumerate(self.eval_splits()):
      kept, answers, rows, table, n_skip, made, grounded = self._evaluate_split(params, split)
      pre = "" if i == 0 else f"{split}/"
      metrics[f"{pre}eval_skipped"] = float(n_skip)
      counts = {m: n for m, n in grounded.items()
                if self.grounder is not None and getattr(self.backends[m], "grounds", False)}
      if counts:  # (none without the grounder or a backend whose invocations name objects)
        metrics.update({f"{pre}grounded/{m}": float(n) for m, n in counts.items()})
        notes.append(_grounding_note(split, counts))
      for sub, row in table.items():
        for k, v in row.items():
          metrics[f"{pre}{sub}/{k}"] = v
      metrics[f"{pre}beats_chance_all"] = float(all(r["beats_chance"] for r in table.values()))
      tables[split], skipped = table, skipped + n_skip
      written += [(split, s, a, r) for s, a, r in zip(kept, answers, rows)]
      if n_pic:
        pictures.update(_pictures(kept, answers, n_pic, pre, made))
    if n_pic:
      metrics["pictures"] = pictures
    if workdir and jax.process_index() == 0:
      _write_answers(os.path.join(workdir, "eval", f"answers_{int(step):08d}.jsonl"), written)
      write_report(workdir, step, tables, pictures=pictures or None, skipped=skipped,
                   notes=notes)
    return metrics


def _grounding_note(split: str, counts: dict[str, int]) -> str:
  """The report's line on what the segmenter grounded in one split's evaluation."""
  found = ", ".join(f"{n} `{m}`" for m, n in counts.items())
  return (f"`{split}`: the segmenter found the objects named by {found} answers' invocations "
          "in the image (`task.ground_with_segmenter`): the rows of what those backends made "
          "use its boxes; the text rows score the answers as written.")


def _write_answers(path: str, written) -> None:
  lines = [json.dumps({"split": split, "id": s["id"], "subtask": s["subtask"],
                       "prompt": s["conversations"][0]["value"],
                       "expected": s["conversations"][1]["value"], "answer": a,
                       "scores": scores, "chance": chance})
           for split, s, a, (_, scores, chance) in written]
  write_text("\n".join(lines) + "\n", path)


def _pictures(samples, answers, per_subtask: int, prefix: str = "", made=None
              ) -> dict[str, tuple[bytes, int, int]]:
  """PNGs of the first `per_subtask` answers of every subtask, with what the backends made of
  them (`made`: sample index -> PIL images and `eval.pictures.Animation`s); each Animation is
  also a GIF of its own, tagged `answers/{prefix}{subtask}/{k}/video{j}` (j-th of the answer's
  Animations). Values: (PNG or GIF bytes, height, width)."""
  from vitron_jax.eval import pictures  # pylint: disable=import-outside-toplevel
  out, seen, made = {}, {}, made or {}
  for i, (s, a) in enumerate(zip(samples, answers)):
    k = seen.get(s["subtask"], 0)
    if k >= per_subtask:
      continue
    seen[s["subtask"]] = k + 1
    tag = f"answers/{prefix}{s['subtask']}/{k}"
    pic = pictures.answer_picture(s, a, made=made.get(i, ()))
    buf = io.BytesIO()
    pic.save(buf, format="PNG")
    out[tag] = (buf.getvalue(), pic.height, pic.width)
    videos = [m for m in made.get(i, ()) if isinstance(m, pictures.Animation)]
    for j, v in enumerate(videos):
      w, h = v.size
      out[f"{tag}/video{j}"] = (v.gif_bytes(), h, w)
  return out


@register_task("vitron")
def build(config: Any) -> VitronTask:
  return VitronTask(config)
