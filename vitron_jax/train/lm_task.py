"""Task "lm_synthetic": the tiny Llama learns a synthetic token language (trainer tests, demo).

Sequence i of the stream is an arithmetic progression modulo the vocabulary whose start and
stride come from `np.random.default_rng([data.seed, i])`: deterministic per index, so any host
can produce any row and a resumed run sees exactly the same data. Once the stride is seen
every next token is predictable; chance loss is log(vocab).

Config fields (`config.model`): vocab_size, hidden_size, intermediate_size, num_layers,
num_heads, num_kv_heads, seq_len, scan_layers, remat_policy; `config.train.compute_dtype`
sets the compute dtype (params stay float32).
"""
from __future__ import annotations

from typing import Any

import grain.python as grain
import jax
import jax.numpy as jnp
import numpy as np

from vitron_jax.data import pipeline
from vitron_jax.models.llama import Llama, LlamaConfig
from vitron_jax.nn.partitioning import replicate_like
from vitron_jax.train.losses import lm_loss
from vitron_jax.train.task import register_task


class SyntheticSequences(grain.RandomAccessDataSource):
  """index -> {"id", "tokens": int32 [length]} (an arithmetic progression mod `vocab`)."""

  def __init__(self, vocab: int, length: int, seed: int, size: int = 2**31 - 1,
               max_stride: int = 8):
    self.vocab, self.length, self.seed, self.size = vocab, length, seed, size
    self.max_stride = max_stride

  def __len__(self) -> int:
    return self.size

  def __getitem__(self, index: int) -> dict[str, Any]:
    rng = np.random.default_rng([self.seed, int(index)])
    start = int(rng.integers(0, self.vocab))
    stride = int(rng.integers(1, self.max_stride))
    tokens = (start + stride * np.arange(self.length)) % self.vocab
    return {"id": f"synthetic/{self.seed}/{int(index)}", "tokens": tokens.astype(np.int32)}


class LmSyntheticTask:
  """See the module docstring."""

  name = "lm_synthetic"

  def __init__(self, config: Any):
    m = config.model
    self.seq_len = int(m.seq_len)
    self.data_seed = int(config.data.seed)
    self.num_workers = int(config.data.get("num_workers", 0))
    self.llama_config = LlamaConfig(
        vocab_size=int(m.vocab_size), hidden_size=int(m.hidden_size),
        intermediate_size=int(m.intermediate_size), num_hidden_layers=int(m.num_layers),
        num_attention_heads=int(m.num_heads), num_key_value_heads=int(m.num_kv_heads),
        max_position_embeddings=self.seq_len, scan_layers=bool(m.get("scan_layers", True)),
        remat_policy=str(m.get("remat_policy", "none")),
        dtype=str(config.train.compute_dtype), param_dtype="float32")
    self.model = Llama(self.llama_config)
    self._accuracy = None

  # -- contract ----------------------------------------------------------------------------
  def init(self, rng: jax.Array) -> Any:
    return self.model.init(rng, jnp.zeros((1, self.seq_len), jnp.int32))["params"]

  def batch_spec(self) -> dict[str, tuple[tuple[int, ...], Any]]:
    return {"tokens": ((self.seq_len + 1,), np.int32)}

  def loss(self, params: Any, batch: Any, rng: jax.Array) -> tuple[jax.Array, dict]:
    del rng  # deterministic model (no dropout)
    tokens = batch["tokens"]
    logits = self.model.apply({"params": params}, tokens[:, :-1])
    mask = jnp.ones(tokens[:, 1:].shape, bool)
    loss, num = lm_loss(logits, tokens[:, 1:], mask)
    return loss, {"weight": num}

  def make_data(self, global_batch: int, process_index: int, process_count: int
                ) -> pipeline.Batcher:
    source = grain.MapDataset.source(
        SyntheticSequences(self.llama_config.vocab_size, self.seq_len + 1, self.data_seed))
    return pipeline.make_pipeline([source], global_batch=global_batch,
                                  process_index=process_index, process_count=process_count,
                                  shuffle=False, num_workers=self.num_workers)

  def components(self) -> dict[str, str]:
    return {"llm": r".*"}

  # -- evaluation --------------------------------------------------------------------------
  def evaluate(self, params: Any, step: int, workdir: str | None = None) -> dict[str, float]:
    """Next-token accuracy on 64 fresh sequences (positions >= 2 are determined)."""
    del step, workdir
    src = SyntheticSequences(self.llama_config.vocab_size, self.seq_len + 1,
                             self.data_seed + 10**6)
    tokens = np.stack([src[i]["tokens"] for i in range(64)])
    if self._accuracy is None:
      def acc(p, t):
        logits = self.model.apply({"params": p}, t[:, :-1])
        return jnp.mean(jnp.argmax(logits, -1)[:, 1:] == t[:, 2:])
      self._accuracy = jax.jit(acc)
    tokens = replicate_like(params, tokens)  # the same on every process (multi-host safe)
    chance = 1.0 / self.llama_config.vocab_size
    return {"next_token_accuracy": float(self._accuracy(params, tokens)),
            "chance_accuracy": chance}


@register_task("lm_synthetic")
def build(config: Any) -> LmSyntheticTask:
  return LmSyntheticTask(config)
