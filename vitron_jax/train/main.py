"""`vitron-train`: the training entry point.

    vitron-train --config=experiments/lm_synthetic.py[:arg] --workdir=/tmp/run \
                 [--config.optim.lr=1e-4 --config.train.steps=500 ...]
    python -m vitron_jax.train.main ...            (the same, without the console script)

`--config` is an `ml_collections` config file (`get_config(arg)`); any field can be overridden
with `--config.a.b=value`. A run in an existing workdir resumes from its newest readable
checkpoint (`--config.checkpoint.resume=False` to start over in place). Exit status: 0 when the
run finished or was stopped by SIGTERM after saving; non-zero on an error.
"""
from __future__ import annotations

import logging
import os

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "experiment config file (experiments/*.py[:arg])",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "run folder: checkpoints, metrics, TensorBoard, PNGs")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.getLogger().setLevel(logging.INFO)
  from vitron_jax.train import loop, metrics_log  # pylint: disable=import-outside-toplevel
  metrics_log.quiet_library_logs()  # (after flags)
  workdir = os.path.abspath(FLAGS.workdir)
  summary = loop.train(FLAGS.config, workdir)
  logging.info("done: %s", {k: summary[k] for k in ("start_step", "final_step", "preempted")})


def run():
  """Console-script target (`vitron-train = "vitron_jax.train.main:run"`)."""
  app.run(main)


if __name__ == "__main__":
  run()
