"""A short demo of the training stack: a tiny Llama learns a synthetic token language.

    python -m vitron_jax.demo [--steps=150] [--batch=16] [--seq_len=64]

Each sequence is an arithmetic progression modulo the vocabulary (random start and stride);
once the stride has been seen, every next token is predictable, so the loss must fall from
log(vocab) towards zero. Printed: the loss every few steps and the final next-token accuracy
on fresh sequences. This is a smoke test of model, loss, optimiser and jit on any machine;
the PixelWorld main job replaces it once training on PixelWorld exists.
"""
from __future__ import annotations

import math
import time

from absl import app, flags
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vitron_jax.models.llama import Llama, LlamaConfig
from vitron_jax.train.losses import lm_loss

FLAGS = flags.FLAGS
flags.DEFINE_integer("steps", 150, "training steps")
flags.DEFINE_integer("batch", 16, "sequences per step")
flags.DEFINE_integer("seq_len", 64, "tokens per sequence")
flags.DEFINE_integer("vocab", 128, "vocabulary size of the synthetic language")
flags.DEFINE_integer("seed", 0, "random seed")
flags.DEFINE_float("lr", 3e-3, "peak learning rate")


def synthetic_batch(rng: np.random.Generator, batch: int, seq_len: int, vocab: int):
  """Arithmetic progressions mod `vocab`: [batch, seq_len] int32 tokens."""
  start = rng.integers(0, vocab, size=(batch, 1))
  stride = rng.integers(1, 8, size=(batch, 1))
  return ((start + stride * np.arange(seq_len)[None]) % vocab).astype(np.int32)


def main(argv):
  del argv
  config = LlamaConfig(vocab_size=FLAGS.vocab, hidden_size=128, intermediate_size=344,
                       num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                       max_position_embeddings=FLAGS.seq_len, scan_layers=True)
  model = Llama(config)
  rng = np.random.default_rng(FLAGS.seed)
  params = nn.meta.unbox(model.init(jax.random.key(FLAGS.seed),
                                    jnp.zeros((1, FLAGS.seq_len), jnp.int32))["params"])
  schedule = optax.warmup_cosine_decay_schedule(0.0, FLAGS.lr, 10, FLAGS.steps, FLAGS.lr / 10)
  opt = optax.adamw(schedule, weight_decay=0.01)
  opt_state = opt.init(params)
  n_params = sum(x.size for x in jax.tree_util.tree_leaves(params))
  print(f"tiny Llama: {n_params / 1e6:.2f}M parameters, {jax.device_count()} "
        f"{jax.default_backend()} device(s); chance loss = log({FLAGS.vocab}) = "
        f"{math.log(FLAGS.vocab):.3f}")

  def loss_fn(p, tokens):
    logits = model.apply({"params": p}, tokens[:, :-1])
    loss, _ = lm_loss(logits, tokens[:, 1:], jnp.ones_like(tokens[:, 1:], bool))
    return loss

  @jax.jit
  def train_step(p, s, tokens):
    loss, grads = jax.value_and_grad(loss_fn)(p, tokens)
    updates, s = opt.update(grads, s, p)
    return optax.apply_updates(p, updates), s, loss

  @jax.jit
  def accuracy(p, tokens):
    logits = model.apply({"params": p}, tokens[:, :-1])
    # positions >= 2 are determined by the first two tokens
    return jnp.mean(jnp.argmax(logits, -1)[:, 1:] == tokens[:, 2:])

  t0 = time.perf_counter()
  first = None
  for step in range(1, FLAGS.steps + 1):
    tokens = synthetic_batch(rng, FLAGS.batch, FLAGS.seq_len + 1, FLAGS.vocab)
    params, opt_state, loss = train_step(params, opt_state, tokens)
    if step == 1 or step % 10 == 0 or step == FLAGS.steps:
      loss = float(loss)
      first = loss if first is None else first
      print(f"step {step:4d}  loss {loss:.4f}  ({time.perf_counter() - t0:.1f}s)", flush=True)
  acc = float(accuracy(params, synthetic_batch(rng, 64, FLAGS.seq_len + 1, FLAGS.vocab)))
  print(f"loss {first:.3f} -> {loss:.3f}; next-token accuracy on fresh sequences: {acc:.3f} "
        f"(chance {1 / FLAGS.vocab:.3f})")


def run():
  app.run(main)


if __name__ == "__main__":
  run()
