"""Task "lm_conversations": a Llama trained on LLaVA / Vitron JSON conversations (text part).

The real-data path of the input pipeline end to end: a local LLaVA folder is built into tfds
array_record (`vitron_jax.data.llava_json`, once), read through grain, its media decoded and
resized (`DecodeMedia`: a broken image or a missing video is a *bad sample*, counted and named,
or fatal with `data.strict`), the conversation tokenised with the Vicuna template (answers
under the loss), padded to `model.seq_len` (longer samples are bad, never clipped), mixed by
weights over several splits and sharded per host. Images are decoded but not fed to the LM;
the VITRON phases reuse this pipeline with the frontend attached. With `task.pack` the samples
are not padded but packed first-fit into rows of `model.seq_len` (`pipeline.Batcher`) with
`segment_ids` / `positions`: each sample attends only to itself and never predicts the next.

Config (`config.task`): folder (the LLaVA folder), data_dir (tfds output; built on first use),
splits (tuple of split names), weights (same length or empty), tokenizer ("bytes" or a local
Hugging Face tokenizer folder), image_size, num_frames, pack (default False).
`config.model` as lm_synthetic.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vitron_jax.data import llava_json, pipeline
from vitron_jax.models.llama import Llama, LlamaConfig
from vitron_jax.train.losses import lm_loss, next_token_targets
from vitron_jax.train.task import register_task


class ByteTokenizer:
  """UTF-8 bytes as ids 3..258 (0 pad, 1 BOS, 2 EOS): no files needed (tests, smoke runs)."""
  pad_id, bos_id, eos_id, vocab_size = 0, 1, 2, 259

  def encode(self, text: str) -> list[int]:
    return [b + 3 for b in text.encode("utf-8")]


class HFTokenizer:
  """A local Hugging Face tokenizer folder (picklable: loaded lazily in each worker)."""

  def __init__(self, path: str):
    self.path = path
    self._tok = None
    tok = self._load()
    self.bos_id, self.eos_id = tok.bos_token_id, tok.eos_token_id
    self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    self.vocab_size = len(tok)

  def _load(self):
    if self._tok is None:
      from transformers import AutoTokenizer  # pylint: disable=import-outside-toplevel
      self._tok = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
    return self._tok

  def __getstate__(self):
    return {**self.__dict__, "_tok": None}

  def encode(self, text: str) -> list[int]:
    return self._load().encode(text, add_special_tokens=False)


class TokenizeAndPad:
  """Sample -> {"id", "input_ids", "loss_mask", "attention_mask"} of length `length`; with
  `pad=False` (packing) just {"id", "input_ids", "loss_mask"} of the sample's own length.
  Either way a sample longer than `length` is a bad sample (never clipped)."""

  def __init__(self, tokenizer: Any, length: int, pad: bool = True):
    self.tok, self.length, self.pad = tokenizer, length, pad

  def __call__(self, sample):
    out = pipeline.tokenize_conversation(sample, self.tok.encode, bos_id=self.tok.bos_id,
                                         eos_id=self.tok.eos_id)
    out["id"] = sample["id"]
    if self.pad:
      return pipeline.pad_to_length(out, self.length, pad_id=self.tok.pad_id)
    n = len(out["input_ids"])
    if n > self.length:  # the same reason as padding (and as the Batcher's own check)
      raise pipeline.BadSampleError(out["id"], "longer than the sequence",
                                    f"{n} tokens > seq_len {self.length}")
    return out


def make_tokenizer(spec: str):
  return ByteTokenizer() if spec == "bytes" else HFTokenizer(spec)


class LmConversationsTask:
  """See the module docstring."""

  name = "lm_conversations"

  def __init__(self, config: Any):
    t, m = config.task, config.model
    self.cfg = config
    self.tokenizer = make_tokenizer(t.get("tokenizer", "bytes"))
    self.seq_len = int(m.seq_len)
    self.pack = bool(t.get("pack", False))
    vocab = int(m.get("vocab_size", 0) or self.tokenizer.vocab_size)
    if vocab < self.tokenizer.vocab_size:
      raise ValueError(f"model.vocab_size={vocab} is smaller than the tokenizer's "
                       f"{self.tokenizer.vocab_size}")
    self.model = Llama(LlamaConfig(
        vocab_size=vocab, hidden_size=int(m.hidden_size),
        intermediate_size=int(m.intermediate_size), num_hidden_layers=int(m.num_layers),
        num_attention_heads=int(m.num_heads), num_key_value_heads=int(m.num_kv_heads),
        max_position_embeddings=self.seq_len, scan_layers=bool(m.get("scan_layers", True)),
        remat_policy=str(m.get("remat_policy", "none")),
        dtype=str(config.train.compute_dtype), param_dtype="float32"))

  def init(self, rng):
    return self.model.init(rng, jnp.zeros((1, self.seq_len), jnp.int32))["params"]

  def batch_spec(self):
    spec = {"input_ids": ((self.seq_len,), np.int32), "loss_mask": ((self.seq_len,), bool),
            "attention_mask": ((self.seq_len,), bool)}
    if self.pack:
      spec.update(segment_ids=((self.seq_len,), np.int32), positions=((self.seq_len,), np.int32))
    return spec

  def loss(self, params, batch, rng):
    del rng
    seg = batch["segment_ids"] if self.pack else None
    logits = self.model.apply({"params": params}, batch["input_ids"],
                              attention_mask=batch["attention_mask"],
                              positions=batch["positions"] if self.pack else None,
                              segment_ids=seg)
    targets, mask = next_token_targets(batch["input_ids"],
                                       batch["loss_mask"] & batch["attention_mask"], seg)
    loss, num = lm_loss(logits, targets, mask)
    return loss, {"weight": num}

  def sources(self) -> list:
    t = self.cfg.task
    data_dir = t.data_dir or os.path.join(t.folder, "_tfds")
    if not llava_json.builder(data_dir).is_prepared():
      if jax.process_index() == 0:
        llava_json.build(data_dir, t.folder)
      if jax.process_count() > 1:
        from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
        multihost_utils.sync_global_devices("llava_json_build")
    return [llava_json.dataset(data_dir, s) for s in t.splits]

  def make_data(self, global_batch, process_index, process_count):
    t, d = self.cfg.task, self.cfg.data
    weights: Sequence[float] | None = tuple(t.get("weights", ())) or None
    return pipeline.make_pipeline(
        self.sources(), global_batch=global_batch, process_index=process_index,
        process_count=process_count, weights=weights, seed=int(d.seed),
        shuffle=bool(t.get("shuffle", True)),
        transforms=[llava_json.DecodeMedia(int(t.image_size), int(t.num_frames)).map,
                    TokenizeAndPad(self.tokenizer, self.seq_len, pad=not self.pack)],
        num_workers=int(d.num_workers), strict=bool(d.strict),
        max_bad_fraction=float(d.max_bad_fraction),
        pack_length=self.seq_len if self.pack else None)

  def components(self):
    return {"llm": r".*"}


@register_task("lm_conversations")
def build(config: Any) -> LmConversationsTask:
  return LmConversationsTask(config)
