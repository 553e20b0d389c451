"""Submit a config (or its whole sweep, as a job array) to a SLURM GPU cluster.

    python launch/slurm.py --config=experiments/phase1_2_invocation.py --workdir=/shared/runs/p12 \
        --nodes=4 --gpus_per_node=8 --partition=gpu --time=48:00:00 [--sweep] [--dry_run] \
        -- --config.optim.lr=2e-5

Writes `<workdir>/slurm/<job>.sbatch` and submits it with `sbatch`. One task per node sees all
the node's GPUs; `srun` starts the same command on every node with `VITRON_MULTIHOST=1`, and
`jax.distributed.initialize()` reads the coordinator, process count and ids from SLURM's
environment. With --sweep the runs become a job array (`--array=0-(n-1)`), run i taking the
i-th override set and the workdir `<workdir>/<run name>`. The workdir must be on a file
system every node sees.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys

from absl import app, flags

from vitron_jax.train import sweep as SW

FLAGS = flags.FLAGS
flags.DEFINE_string("config", None, "config file[:arg]")
flags.DEFINE_string("workdir", None, "shared run folder")
flags.DEFINE_bool("sweep", False, "submit every run of the config's sweep as a job array")
flags.DEFINE_integer("nodes", 1, "nodes per run")
flags.DEFINE_integer("gpus_per_node", 8, "GPUs per node")
flags.DEFINE_integer("cpus_per_task", 32, "CPUs per node (data loading)")
flags.DEFINE_string("partition", None, "SLURM partition")
flags.DEFINE_string("account", None, "SLURM account")
flags.DEFINE_string("time", "24:00:00", "wall-clock limit")
flags.DEFINE_string("job_name", "vitron", "job name")
flags.DEFINE_string("repo_dir", os.getcwd(), "the repository on the nodes")
flags.DEFINE_string("python", sys.executable, "python on the nodes")
flags.DEFINE_string("setup", "", "shell lines run before srun (module load ..., source venv)")
flags.DEFINE_bool("dry_run", False, "print the sbatch script, submit nothing")
flags.mark_flags_as_required(["config", "workdir"])


def script(spec: str, workdir: str, sweep: bool, extra: list[str], *, nodes: int,
           gpus_per_node: int, cpus_per_task: int, partition: str | None,
           account: str | None, time: str, job_name: str, repo_dir: str, python: str,
           setup: str = "") -> str:
  runs = SW.sweep_runs(spec) if sweep else [("run", {})]
  lines = ["#!/bin/bash", f"#SBATCH --job-name={job_name}", f"#SBATCH --nodes={nodes}",
           "#SBATCH --ntasks-per-node=1", f"#SBATCH --gpus-per-node={gpus_per_node}",
           f"#SBATCH --cpus-per-task={cpus_per_task}", f"#SBATCH --time={time}",
           f"#SBATCH --output={workdir}/slurm/%x-%A_%a.out", "#SBATCH --signal=TERM@120"]
  if partition:
    lines.append(f"#SBATCH --partition={partition}")
  if account:
    lines.append(f"#SBATCH --account={account}")
  if sweep:
    lines.append(f"#SBATCH --array=0-{len(runs) - 1}")
  lines += ["set -euo pipefail", f"cd {shlex.quote(repo_dir)}"]
  if setup:
    lines.append(setup)
  lines += ["export VITRON_MULTIHOST=1 TF_CPP_MIN_LOG_LEVEL=3 TOKENIZERS_PARALLELISM=false"]
  if sweep:
    lines.append("RUNS=(")
    for name, overrides in runs:
      wd = os.path.join(workdir, name)
      argv = SW.train_argv(spec, wd, overrides, extra, python)
      lines.append("  " + shlex.quote(" ".join(shlex.quote(a) for a in argv)))
    lines += [")", 'CMD="${RUNS[$SLURM_ARRAY_TASK_ID]}"']
  else:
    argv = SW.train_argv(spec, workdir, {}, extra, python)
    lines.append("CMD=" + shlex.quote(" ".join(shlex.quote(a) for a in argv)))
  # SIGTERM (preemption, time limit via --signal) reaches every task: the trainer checkpoints
  lines.append('srun --kill-on-bad-exit=1 bash -c "$CMD"')
  return "\n".join(lines) + "\n"


def main(argv):
  text = script(FLAGS.config, os.path.abspath(FLAGS.workdir), FLAGS.sweep, list(argv[1:]),
                nodes=FLAGS.nodes, gpus_per_node=FLAGS.gpus_per_node,
                cpus_per_task=FLAGS.cpus_per_task, partition=FLAGS.partition,
                account=FLAGS.account, time=FLAGS.time, job_name=FLAGS.job_name,
                repo_dir=FLAGS.repo_dir, python=FLAGS.python, setup=FLAGS.setup)
  if FLAGS.dry_run:
    print(text)
    return
  folder = os.path.join(os.path.abspath(FLAGS.workdir), "slurm")
  os.makedirs(folder, exist_ok=True)
  path = os.path.join(folder, f"{FLAGS.job_name}.sbatch")
  with open(path, "w", encoding="utf-8") as f:
    f.write(text)
  print(f"wrote {path}", flush=True)
  sys.exit(subprocess.call(["sbatch", path]))


if __name__ == "__main__":
  app.run(main)
