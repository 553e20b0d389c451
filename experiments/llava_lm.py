"""A Llama on LLaVA / Vitron JSON conversations (the real-data text path of the pipeline).

    vitron-train --config=experiments/llava_lm.py --workdir=/tmp/llava_lm \
        --config.task.folder=/data/llava_folder [--config.task.tokenizer=/models/vicuna]

The folder holds `<split>.json` LLaVA lists plus their images / videos; it is built into
tfds array_record under `task.data_dir` (default `<folder>/_tfds`) on first use. Argument
"tiny": a small model with the byte tokenizer (smoke runs and tests).
"""
from vitron_jax.train.defaults import base_config


def get_config(arg: str = ""):
  c = base_config()
  c.task.name = "lm_conversations"
  c.task.folder = ""
  c.task.data_dir = ""
  c.task.splits = ("train",)
  c.task.weights = ()
  c.task.tokenizer = "bytes"
  c.task.image_size = 336
  c.task.num_frames = 8
  c.task.pack = False                  # True: pack several conversations per row (segment_ids)
  c.task.shuffle = True
  c.model = dict(vocab_size=0, hidden_size=256, intermediate_size=688, num_layers=4,
                 num_heads=4, num_kv_heads=4, seq_len=512, scan_layers=True,
                 remat_policy="none")
  c.data.global_batch = 16
  c.train.steps = 1000
  c.optim.lr = 1e-3
  c.optim.warmup_steps = 50
  if arg == "tiny":
    c.model.update(dict(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2,
                        num_kv_heads=1, seq_len=320))  # the system prompt is ~170 bytes
    c.task.image_size = 16
    c.task.num_frames = 2
    c.task.shuffle = False
    c.data.global_batch = 2
    c.train.steps = 3
    c.train.log_every = 1
    c.train.eval_at_end = False
    c.train.matmul_precision = "highest"
    c.optim.warmup_steps = 1
    c.checkpoint.every_steps = 100
    c.log.progress = False
  elif arg:
    raise ValueError(f"llava_lm: unknown argument {arg!r}; expected '' or 'tiny'")
  return c
