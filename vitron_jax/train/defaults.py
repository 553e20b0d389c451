"""The trainer's configuration fields and their defaults (one `ml_collections.ConfigDict`).

Experiment files (`experiments/*.py`) start from `base_config()` and change what they need;
every field can be overridden on the command line (`--config.optim.lr=1e-4`). Sections:

task        `name` (a registered task, `vitron_jax.train.task`) + task-specific fields
train       steps, seed, accumulation, compute dtype, logging/eval cadence
data        global batch, seed, workers, strict handling of bad samples
optim       optimizer, schedule (warmup + cosine), clipping, freezing and per-module LR
lora        optional low-rank adapters on matching kernels
mesh        device mesh shape and logical-axis rule preset (`vitron_jax.nn.partitioning`)
checkpoint  cadence, how many to keep, async saves, save on SIGTERM
distributed multi-host (`jax.distributed.initialize`) from config or environment
log         JSONL / TensorBoard / PNG / progress bar
debug       fault injection for tests
"""
from __future__ import annotations

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()

  c.task = ml_collections.ConfigDict({"name": ""})

  c.train = ml_collections.ConfigDict()
  c.train.steps = 100                  # total optimizer steps
  c.train.seed = 0                     # parameter init and per-step rng (fold_in(step))
  c.train.accum_steps = 1              # micro-batches per step (gradient accumulation)
  c.train.compute_dtype = "float32"    # "bfloat16": params stay fp32, compute in bf16
  c.train.log_every = 10               # steps between logged metrics (1 = every step)
  c.train.eval_every = 0               # steps between evaluations (0 = only at the end, if any)
  c.train.eval_at_end = True
  c.train.matmul_precision = "default"  # jax_default_matmul_precision ("highest" for tests)
  c.train.parallel_stages = 1          # config.stages trained at once, each a process pinned to
                                       # its share of the CPUs (1: in turn; CPU hosts only)

  c.data = ml_collections.ConfigDict()
  c.data.global_batch = 8              # sequences per optimizer step, over all hosts
  c.data.seed = 0
  c.data.num_workers = 0               # grain worker processes (0 = in the main process)
  c.data.strict = False                # True: a bad sample stops the run with its name
  c.data.max_bad_fraction = 0.05       # non-strict: more than this fraction of bad samples stops

  c.optim = ml_collections.ConfigDict()
  c.optim.name = "adamw"               # adamw | sgd | lion
  c.optim.lr = 1e-3                    # peak learning rate
  c.optim.schedule = "cosine"          # cosine | linear | constant (each after a linear warmup)
  c.optim.warmup_steps = 10
  c.optim.decay_steps = -1             # -1: train.steps
  c.optim.end_lr_ratio = 0.1           # final lr = lr * end_lr_ratio
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999
  c.optim.eps = 1e-8
  c.optim.momentum = 0.9               # sgd only
  c.optim.weight_decay = 0.0
  c.optim.no_decay = r"(^|/)(bias|weight|embedding|scale)$"  # paths without weight decay
  c.optim.clip_norm = 1.0              # global-norm clipping of the trainable gradients (0 = off)
  c.optim.freeze = ()                  # regexes over parameter paths ("a/b/kernel"): frozen
  c.optim.trainable = ()               # if set: only paths matching one of these train
  c.optim.lr_multipliers = ()          # ((regex, multiplier), ...): first match wins

  c.lora = ml_collections.ConfigDict()
  c.lora.enabled = False
  c.lora.rank = 8
  c.lora.alpha = 16.0
  c.lora.targets = r"self_attn/(q_proj|k_proj|v_proj|o_proj)/kernel$"
  c.lora.freeze_base = True

  c.mesh = ml_collections.ConfigDict()
  c.mesh.shape = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
  c.mesh.rules = "data"                # data | fsdp | fsdp_tensor
  c.mesh.num_devices = -1              # use the first N devices (-1: all)

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every_steps = 100
  c.checkpoint.keep = 3
  c.checkpoint.async_save = True
  c.checkpoint.save_on_sigterm = True
  c.checkpoint.resume = True           # continue from the latest good checkpoint in workdir
  c.checkpoint.init_from = ""          # checkpoint step folder(s), comma-separated, to take params from
  c.checkpoint.init_from_stages = ""   # a stage's: earlier stages (comma-separated) it starts from

  c.distributed = ml_collections.ConfigDict()
  c.distributed.enabled = False        # or VITRON_MULTIHOST=1 in the environment
  c.distributed.coordinator_address = ""
  c.distributed.num_processes = -1     # -1: from the environment / auto-detection
  c.distributed.process_id = -1

  c.log = ml_collections.ConfigDict()
  c.log.jsonl = True
  c.log.tensorboard = True
  c.log.png = True
  c.log.progress = True                # tqdm bar (primary host, when stderr is a terminal)

  c.debug = ml_collections.ConfigDict()
  c.debug.sigkill_after_step = -1      # kill -9 itself after this step (resume tests)
  c.debug.sleep_per_step = 0.0         # seconds (signal tests)
  return c


def sweep_from(overrides: list[dict]) -> list[dict]:
  """Validate a sweep (a list of {dotted.field: value} dicts) and return it."""
  if not isinstance(overrides, list) or not all(isinstance(o, dict) for o in overrides):
    raise ValueError(f"a sweep must be a list of dicts of overrides, got {overrides!r}")
  return overrides
