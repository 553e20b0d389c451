"""Shared helpers of the VITRON model tests: a tiny tokenizer, configs, params and batches."""
from __future__ import annotations

import functools
import pathlib
import sys

import flax.linen as nn
import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from experiments import vitron_tiny  # noqa: E402
from test_protocol_tokenizer import byte_level_tokenizer  # noqa: E402
from vitron_jax.models.region_inputs import prepare_image_regions  # noqa: E402
from vitron_jax.models.vitron import Vitron, dummy_batch, dummy_natives  # noqa: E402
from vitron_jax.models.vitron_config import vitron_config_from  # noqa: E402
from vitron_jax.protocol.tokenizer import (SequenceBuilder, Slot, add_protocol_tokens,  # noqa: E402
                                           protocol_ids)


@functools.lru_cache(maxsize=1)
def tokenizer():
  tok = byte_level_tokenizer()
  add_protocol_tokens(tok)
  return tok


def config(routing: str = "hybrid", **head_overrides):
  cfg = vitron_tiny.get_config(routing)
  for k, v in head_overrides.items():
    cfg.model.head[k] = v
  tok = tokenizer()
  return vitron_config_from(cfg.model, protocol_ids(tok), len(tok))


@functools.lru_cache(maxsize=8)
def params(cfg, seed: int = 0):
  """jit-initialised plain params of the tiny model (cached per config)."""
  b = dummy_batch(cfg, 1)
  nat = dummy_natives(cfg, 1)
  init = jax.jit(lambda k: nn.meta.unbox(Vitron(cfg).init(k, b, natives=nat)["params"]))
  return init(jax.random.key(seed))


def builder(cfg, routing=None):
  fe = cfg.frontend
  return SequenceBuilder(tokenizer(), {"image": fe.image_tokens, "video": fe.video_token_count,
                                       "roi": fe.region_token_count},
                         cfg.head.query_counts, routing or cfg.head.routing, cfg.head.modules)


ANSWERS = {
    "segment_image": "sure <inv><seg_image><cmd>the red circle</cmd></inv> here it is",
    "generate_image": "ok <inv><gen_image><cmd>a blue square</cmd><region><loc0010><loc0020>"
                      "<loc0500><loc0600></region></inv> done",
}
SUPERLINK_ANSWERS = {"segment_image": "sure <seg_image> here it is",
                     "generate_image": "ok <gen_image> done"}


def conversation(cfg, module: str | None, question: str, with_region: bool = False):
  """(prompt sequence, full sequence) for one row; the answer invokes `module` (or none)."""
  tok = tokenizer()
  b = builder(cfg)
  seq = b.start()
  b.add_ids(seq, [tok.bos_token_id])
  parts = ["USER: ", Slot("image"), " " + question]
  if with_region:
    parts += [" in ", Slot("roi")]
  b.add_user(seq, parts + [" ASSISTANT:"])
  prompt = {k: (list(v) if isinstance(v, list) else v) for k, v in seq.items()}
  answers = SUPERLINK_ANSWERS if cfg.head.routing == "superlink" else ANSWERS
  b.add_assistant(seq, " " + (answers[module] if module else "a red circle"))
  b.add_ids(seq, [tok.eos_token_id], loss=True)
  return prompt, seq


def images(n: int, cfg, seed: int = 0):
  s = cfg.frontend.vision.image_size
  return np.random.default_rng(seed).normal(size=(n, 1, s, s, 3)).astype(np.float32)


def training_batch(cfg, modules, length: int, seed: int = 0, with_region=False):
  """Right-padded batch: one image (and one region) per row, row i invokes modules[i]."""
  seqs = [conversation(cfg, m, f"question {i}", with_region)[1] for i, m in enumerate(modules)]
  batch = builder(cfg).pack(seqs, length, side="right")
  s = cfg.frontend.vision.image_size
  batch["images"] = images(len(modules), cfg, seed)
  if with_region:
    regs = [[{"box": (2 + i, 4, 20, 28)}] for i in range(len(modules))]
    r = prepare_image_regions(regs, s, s, max_regions=1)
    batch["image_regions"] = r
  return batch
