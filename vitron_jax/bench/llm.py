"""LLM benchmark: our Flax Llama vs transformers' PyTorch LlamaForCausalLM, side by side.

    python -m vitron_jax.bench.llm                       # full run
    python -m vitron_jax.bench.llm --steps 1 --warmup 1 --new_tokens 16 --compile_layers 2,4

Prints, for one width (default hidden 512, 8 layers, 8 heads / 4 kv heads, ffn 1376, vocab
32000, batch 4 x 512 tokens, fp32, AdamW):
* train step seconds for ours (optax AdamW, jit, donated state) and PyTorch (torch AdamW),
  medians over steps timed alternately (ours, torch, ours, ...) so load changes hit both;
* our achieved GFLOP/s, counted as 6 * N * tokens + 12 * L * T * d_attn * tokens (N = matmul
  parameters incl. lm_head, embedding lookup excluded; attention score/value matmuls counted
  without the causal saving), and its fraction of a `jnp.dot` peak measured here;
* greedy decoding tokens/s at batch 1 (ours: `generate`; PyTorch: `generate`);
* compile seconds of our train step for two depths of the same width (scanned layers).
Our model runs with `--remat dots_saveable` and `--attention_chunk 128` by default (the fastest
settings measured on a 2-core CPU; both are exact). Wall-clock figures on a shared CPU are
noisy; this is a script, never a test.
"""
from __future__ import annotations

import argparse
import os
import time
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vitron_jax.models.decoding import generate
from vitron_jax.models.llama import Llama, LlamaConfig
from vitron_jax.train.losses import lm_loss, next_token_targets


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--hidden", type=int, default=512)
  p.add_argument("--layers", type=int, default=8)
  p.add_argument("--heads", type=int, default=8)
  p.add_argument("--kv_heads", type=int, default=4)
  p.add_argument("--ffn", type=int, default=1376)
  p.add_argument("--vocab", type=int, default=32000)
  p.add_argument("--batch", type=int, default=4)
  p.add_argument("--seq", type=int, default=512)
  p.add_argument("--steps", type=int, default=5, help="timed train steps")
  p.add_argument("--warmup", type=int, default=1, help="untimed train steps (after compile)")
  p.add_argument("--prompt", type=int, default=64)
  p.add_argument("--new_tokens", type=int, default=128)
  p.add_argument("--decode_runs", type=int, default=2)
  p.add_argument("--compile_layers", default="2,32", help="comma list of depths to compile")
  p.add_argument("--remat", default="dots_saveable",
                 help="remat policy of our model (dots_saveable: fastest here, less residual "
                 "memory traffic)")
  p.add_argument("--no_scan", action="store_true", help="unrolled layers instead of nn.scan")
  p.add_argument("--attention_chunk", type=int, default=128,
                 help="causal attention in query blocks (skips the masked triangle); 0 = off")
  p.add_argument("--skip_torch", action="store_true")
  return p.parse_args(argv)


def config(a, layers=None) -> LlamaConfig:
  return LlamaConfig(vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=a.ffn,
                     num_hidden_layers=layers or a.layers, num_attention_heads=a.heads,
                     num_key_value_heads=a.kv_heads, max_position_embeddings=4096,
                     rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                     scan_layers=not a.no_scan, remat_policy=a.remat,
                     attention_chunk=a.attention_chunk)


def matmul_params(cfg: LlamaConfig) -> int:
  d, hd = cfg.hidden_size, cfg.head_dim
  attn = d * hd * (2 * cfg.num_attention_heads + 2 * cfg.num_key_value_heads)
  mlp = 3 * d * cfg.intermediate_size
  return cfg.num_hidden_layers * (attn + mlp) + d * cfg.vocab_size


def train_flops(cfg: LlamaConfig, batch: int, seq: int) -> float:
  tokens = batch * seq
  d_attn = cfg.num_attention_heads * cfg.head_dim
  return 6.0 * matmul_params(cfg) * tokens + 12.0 * cfg.num_hidden_layers * seq * d_attn * tokens


def timeit(fn: Callable[[], Any], runs: int) -> float:
  t = time.perf_counter()
  for _ in range(runs):
    out = fn()
  jax.block_until_ready(out)
  return (time.perf_counter() - t) / max(runs, 1)


def dot_peak() -> float:
  """GFLOP/s of a large fp32 `jnp.dot` on this machine."""
  n = 2048
  x = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), jnp.float32)
  f = jax.jit(lambda a, b: a @ b)
  jax.block_until_ready(f(x, x))
  best = min(timeit(lambda: f(x, x), 3) for _ in range(3))
  return 2 * n ** 3 / best / 1e9


def make_train_step(module: Llama, tx):
  def loss_fn(params, ids):
    targets, mask = next_token_targets(ids)
    return lm_loss(module.apply({"params": params}, ids), targets, mask)[0]

  def step(params, opt_state, ids):
    loss, grads = jax.value_and_grad(loss_fn)(params, ids)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return step


class OursTrain:
  """Our jitted train step (donated params/optimizer state); `run()` does one step."""

  def __init__(self, a, ids_np):
    self.module = Llama(config(a))
    tx = optax.adamw(1e-4, weight_decay=0.0)
    self.ids = jnp.asarray(ids_np)
    self.params = jax.jit(
        lambda k: nn.meta.unbox(self.module.init(k, self.ids[:1, :8])["params"]))(
            jax.random.key(0))
    self.opt_state = tx.init(self.params)
    self.step = jax.jit(make_train_step(self.module, tx), donate_argnums=(0, 1))
    self.loss = None

  def run(self) -> float:
    self.params, self.opt_state, loss = self.step(self.params, self.opt_state, self.ids)
    self.loss = float(loss)  # blocks
    return self.loss


class TorchTrain:
  """transformers' LlamaForCausalLM with torch.optim.AdamW; `run()` does one step."""

  def __init__(self, a, ids_np):
    import torch  # pylint: disable=import-outside-toplevel
    import transformers  # pylint: disable=import-outside-toplevel
    torch.manual_seed(0)
    self.model = transformers.LlamaForCausalLM(config(a).to_hf()).train()
    self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4, weight_decay=0.0)
    self.ids = torch.tensor(ids_np, dtype=torch.long)
    self.loss = None

  def run(self) -> float:
    self.opt.zero_grad(set_to_none=True)
    loss = self.model(input_ids=self.ids, labels=self.ids).loss
    loss.backward()
    self.opt.step()
    self.loss = loss.item()
    return self.loss


def time_interleaved(runners: dict[str, Any], warmup: int, steps: int) -> dict[str, float]:
  """Median seconds per step of each runner, timing their steps alternately so that a load
  change on a shared machine hits all of them alike."""
  for r in runners.values():
    for _ in range(warmup):
      r.run()
  times: dict[str, list[float]] = {k: [] for k in runners}
  for _ in range(steps):
    for k, r in runners.items():
      t = time.perf_counter()
      r.run()
      times[k].append(time.perf_counter() - t)
  return {k: float(np.median(v)) for k, v in times.items()}


def bench_ours_decode(a, module, params, prompt):
  kw = dict(max_new_tokens=a.new_tokens, stop_tokens=())
  t = time.perf_counter()
  jax.block_until_ready(generate(module, params, prompt, **kw).tokens)
  first = time.perf_counter() - t
  sec = min(timeit(lambda: generate(module, params, prompt, **kw).tokens, 1)
            for _ in range(a.decode_runs))
  return a.new_tokens / sec, first


def bench_torch_decode(a, model, prompt):
  import torch  # pylint: disable=import-outside-toplevel
  model.eval()
  ids = torch.tensor(prompt, dtype=torch.long)
  kw = dict(max_new_tokens=a.new_tokens, min_new_tokens=a.new_tokens, do_sample=False,
            pad_token_id=0)
  with torch.no_grad():
    model.generate(ids, max_new_tokens=4, min_new_tokens=4, do_sample=False, pad_token_id=0)
    best = np.inf
    for _ in range(a.decode_runs):
      t = time.perf_counter()
      model.generate(ids, **kw)
      best = min(best, time.perf_counter() - t)
  return a.new_tokens / best


def compile_seconds(a, layers: int) -> float:
  cfg = config(a, layers)
  module = Llama(cfg)
  tx = optax.adamw(1e-4)
  ids = jax.ShapeDtypeStruct((a.batch, a.seq), jnp.int32)
  params = jax.eval_shape(
      lambda k: nn.meta.unbox(module.init(k, jnp.zeros((1, 8), jnp.int32))["params"]),
      jax.random.key(0))
  opt_state = jax.eval_shape(tx.init, params)
  step = jax.jit(make_train_step(module, tx), donate_argnums=(0, 1))
  t = time.perf_counter()
  step.lower(params, opt_state, ids).compile()
  return time.perf_counter() - t


def main(argv=None):
  a = parse_args(argv)
  cfg = config(a)
  rng = np.random.default_rng(0)
  ids = rng.integers(3, a.vocab, (a.batch, a.seq)).astype(np.int32)
  prompt = rng.integers(3, a.vocab, (1, a.prompt)).astype(np.int32)
  print(f"# devices: {jax.devices()} | cpu cores: {os.cpu_count()} | jax {jax.__version__}")
  print(f"# model: hidden {a.hidden}, layers {a.layers}, heads {a.heads}/{a.kv_heads} kv, ffn "
        f"{a.ffn}, vocab {a.vocab}; batch {a.batch} x {a.seq} tokens; fp32; AdamW; "
        f"scan_layers={cfg.scan_layers}, remat={cfg.remat_policy}, "
        f"attention_chunk={cfg.attention_chunk}")
  peak = dot_peak()
  print(f"jnp.dot peak (2048^3 fp32):           {peak:8.1f} GFLOP/s")

  ours = OursTrain(a, ids)
  t = time.perf_counter()
  ours.run()
  first = time.perf_counter() - t
  runners: dict[str, Any] = {"ours": ours}
  if not a.skip_torch:
    runners["torch"] = TorchTrain(a, ids)
  secs = time_interleaved(runners, a.warmup, a.steps)
  sec = secs["ours"]
  flops = train_flops(cfg, a.batch, a.seq)
  print(f"ours  train step:                     {sec:8.3f} s/step  (median of {a.steps}; first "
        f"call incl. compile {first:.1f} s; loss {ours.loss:.3f})")
  print(f"ours  achieved:                       {flops / sec / 1e9:8.1f} GFLOP/s = "
        f"{flops / sec / 1e9 / peak:.0%} of the jnp.dot peak  [6*N*tokens + "
        f"12*L*T*d_attn*tokens, N={matmul_params(cfg) / 1e6:.1f}M matmul params, "
        f"{flops / 1e9:.0f} GFLOP/step]")
  torch_model = None
  if not a.skip_torch:
    tsec = secs["torch"]
    torch_model = runners["torch"].model
    print(f"torch train step:                     {tsec:8.3f} s/step  (median, steps interleaved "
          f"with ours; loss {runners['torch'].loss:.3f})")
    print(f"ratio torch/ours (>1: ours faster):   {tsec / sec:8.2f}x")

  module, params = ours.module, ours.params
  tps, dfirst = bench_ours_decode(a, module, params, prompt)
  print(f"ours  greedy decode (B=1, prompt {a.prompt}, {a.new_tokens} new): {tps:8.1f} tokens/s "
        f"(first call incl. compile {dfirst:.1f} s)")
  if torch_model is not None:
    ttps = bench_torch_decode(a, torch_model, prompt)
    print(f"torch greedy decode (generate):       {ttps:8.1f} tokens/s   ratio ours/torch "
          f"{tps / ttps:.2f}x")

  depths = [int(x) for x in a.compile_layers.split(",") if x]
  times = {n: compile_seconds(a, n) for n in depths}
  for n, s in times.items():
    print(f"ours  train-step compile, {n:2d} layers:    {s:8.2f} s")
  if len(depths) >= 2:
    print(f"compile ratio {depths[-1]}/{depths[0]} layers:          "
          f"{times[depths[-1]] / times[depths[0]]:8.2f}x")


if __name__ == "__main__":
  main()
