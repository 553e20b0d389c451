"""Run a config (or each run of its sweep) on this machine, one after the other.

    python launch/local.py --config=experiments/lm_synthetic.py --workdir=/tmp/runs/lm
    python launch/local.py --config=experiments/lm_synthetic.py --workdir=/tmp/runs/lm \
        --sweep [--dry_run] [--keep_going] -- --config.train.steps=50

Without --sweep: one run in --workdir. With --sweep: every run of the config file's
`get_sweep(arg)` / `sweep()` in `<workdir>/<run name>`. Flags after `--` go to every run.
A run that exists already resumes (the trainer continues from its newest checkpoint). A sweep
ends with `<workdir>/sweep_report.md`: a row per run, a column per evaluated metric. Exit
status: 0 when every run succeeded; otherwise that of the first failure.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from absl import app, flags

from vitron_jax.eval.sweep_report import write_sweep_report
from vitron_jax.train import sweep as SW

FLAGS = flags.FLAGS
flags.DEFINE_string("config", None, "config file[:arg]")
flags.DEFINE_string("workdir", None, "run folder (a sweep gets one sub-folder per run)")
flags.DEFINE_bool("sweep", False, "run every entry of the config file's sweep")
flags.DEFINE_bool("dry_run", False, "print the commands, run nothing")
flags.DEFINE_bool("keep_going", False, "continue the sweep after a failed run")
flags.DEFINE_string("python", sys.executable, "python interpreter of the runs")
flags.mark_flags_as_required(["config", "workdir"])


def plan(spec: str, workdir: str, sweep: bool, extra: list[str], python: str
         ) -> list[tuple[str, list[str]]]:
  runs = SW.sweep_runs(spec) if sweep else [("run", {})]
  out = []
  for name, overrides in runs:
    wd = os.path.join(workdir, name) if sweep else workdir
    out.append((name, SW.train_argv(spec, wd, overrides, extra, python)))
  return out


def main(argv):
  extra = list(argv[1:])
  commands = plan(FLAGS.config, os.path.abspath(FLAGS.workdir), FLAGS.sweep, extra,
                  FLAGS.python)
  first_failure = 0
  results = []
  for name, cmd in commands:
    print(f"[{name}] " + " ".join(cmd), flush=True)
    if FLAGS.dry_run:
      continue
    t0 = time.time()
    rc = subprocess.call(cmd)
    results.append({"run": name, "returncode": rc, "seconds": round(time.time() - t0, 1)})
    print(f"[{name}] exit {rc} after {results[-1]['seconds']}s", flush=True)
    if rc and not first_failure:
      first_failure = rc
      if not FLAGS.keep_going:
        break
  if results:
    os.makedirs(FLAGS.workdir, exist_ok=True)
    with open(os.path.join(FLAGS.workdir, "launch_local.json"), "w", encoding="utf-8") as f:
      json.dump(results, f, indent=1)
    if FLAGS.sweep:  # one row per run: its overrides and final evaluation
      path = write_sweep_report(os.path.abspath(FLAGS.workdir), SW.sweep_runs(FLAGS.config))
      print(f"sweep report: {path}", flush=True)
  sys.exit(first_failure)


if __name__ == "__main__":
  app.run(main)
