"""The tiny Llama on synthetic token sequences (the trainer's test and smoke-run config).

    python -m vitron_jax.train.main --config=experiments/lm_synthetic.py --workdir=/tmp/lm
    python -m vitron_jax.train.main --config=experiments/lm_synthetic.py:test --workdir=/tmp/t

Arguments (after the colon): "" (a short run that learns: loss from log(64) towards 0),
"test" (a handful of steps of a smaller model; what the trainer's tests use).
Sweep: `get_sweep(arg)` -> learning rate x accumulation (see `launch/local.py`).
"""
from vitron_jax.train.defaults import base_config


def get_config(arg: str = ""):
  c = base_config()
  c.task.name = "lm_synthetic"
  c.model = dict(vocab_size=64, hidden_size=64, intermediate_size=128, num_layers=2,
                 num_heads=4, num_kv_heads=2, seq_len=32, scan_layers=True,
                 remat_policy="none")
  c.data.global_batch = 16
  c.train.steps = 200
  c.train.log_every = 10
  c.train.eval_every = 100
  c.optim.lr = 3e-3
  c.optim.warmup_steps = 10
  c.optim.weight_decay = 0.01
  c.checkpoint.every_steps = 100
  if arg == "test":
    c.model.update(dict(vocab_size=32, hidden_size=32, intermediate_size=64, num_layers=2,
                        num_heads=2, num_kv_heads=1, seq_len=16))
    c.data.global_batch = 8
    c.train.steps = 8
    c.train.log_every = 1
    c.train.eval_every = 0
    c.train.eval_at_end = False
    c.train.matmul_precision = "highest"
    c.optim.warmup_steps = 2
    c.optim.decay_steps = 8          # the schedule does not depend on train.steps
    c.checkpoint.every_steps = 3
    c.log.progress = False
  elif arg:
    raise ValueError(f"lm_synthetic: unknown argument {arg!r}; expected '' or 'test'")
  return c


def get_sweep(arg: str = ""):
  """Overrides for each run of the sweep (dotted config paths): learning rate x gradient
  accumulation; with "test" two very short runs (the launcher's test)."""
  if arg == "test":
    return [{"optim.lr": lr, "train.steps": 2} for lr in (1e-3, 3e-3)]
  return [{"optim.lr": lr, "train.accum_steps": a} for lr in (1e-3, 3e-3) for a in (1, 2)]
