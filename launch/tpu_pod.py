"""Run a config (or its sweep, run after run) on every worker of a Cloud TPU pod slice.

    python launch/tpu_pod.py --tpu=my-v5p-64 --zone=us-east5-a [--project=my-proj] \
        --repo_dir='~/vitron_jax' --config=experiments/phase1_1_alignment.py \
        --workdir=gs://my-bucket/runs/p11 [--sweep] [--setup] [--dry_run] -- --config.train.steps=100

Each run is one `gcloud compute tpus tpu-vm ssh <tpu> --worker=all --command=...`: the same
command on every host, with the environment multi-host JAX needs (`VITRON_MULTIHOST=1`: the
trainer calls `jax.distributed.initialize()`, which finds the coordinator and the process ids
from the TPU metadata itself). --setup first installs the repository on every worker
(`pip install -e .`). The workdir must be shared by all hosts (a gs:// bucket). Orbax writes
each host's shards; the data-iterator state is one file per host.
"""
from __future__ import annotations

import shlex
import subprocess
import sys

from absl import app, flags

from vitron_jax.train import sweep as SW

FLAGS = flags.FLAGS
flags.DEFINE_string("tpu", None, "TPU VM (pod slice) name")
flags.DEFINE_string("zone", None, "its zone")
flags.DEFINE_string("project", None, "GCP project (default: gcloud's)")
flags.DEFINE_string("repo_dir", "~/vitron_jax", "the repository on the workers")
flags.DEFINE_string("python", "python3", "python on the workers")
flags.DEFINE_string("config", None, "config file[:arg] (path relative to repo_dir)")
flags.DEFINE_string("workdir", None, "shared run folder (gs://...)")
flags.DEFINE_bool("sweep", False, "run every entry of the config's sweep, one after another")
flags.DEFINE_bool("setup", False, "pip install the repository on every worker first")
flags.DEFINE_list("env", [], "extra NAME=VALUE for every worker")
flags.DEFINE_bool("dry_run", False, "print the gcloud commands, run nothing")
flags.mark_flags_as_required(["tpu", "zone", "config", "workdir"])

ENV = {"VITRON_MULTIHOST": "1", "TF_CPP_MIN_LOG_LEVEL": "3", "TOKENIZERS_PARALLELISM": "false"}


def ssh_command(tpu: str, zone: str, project: str | None, remote: str) -> list[str]:
  cmd = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", tpu, f"--zone={zone}", "--worker=all"]
  if project:
    cmd.append(f"--project={project}")
  return cmd + [f"--command={remote}"]


def remote_command(repo_dir: str, argv: list[str], env: dict[str, str]) -> str:
  exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
  return f"cd {repo_dir} && {exports} " + " ".join(shlex.quote(a) for a in argv)


def plan(spec, workdir, sweep, extra, *, tpu, zone, project, repo_dir, python, env, setup
         ) -> list[tuple[str, list[str]]]:
  runs = SW.sweep_runs(spec) if sweep else [("run", {})]
  all_env = dict(ENV, **dict(e.split("=", 1) for e in env))
  out = []
  if setup:
    out.append(("setup", ssh_command(tpu, zone, project,
                                     f"cd {repo_dir} && {python} -m pip install -q -e .")))
  for name, overrides in runs:
    wd = f"{workdir.rstrip('/')}/{name}" if sweep else workdir
    argv = SW.train_argv(spec, wd, overrides, extra, python)
    out.append((name, ssh_command(tpu, zone, project, remote_command(repo_dir, argv, all_env))))
  return out


def main(argv):
  commands = plan(FLAGS.config, FLAGS.workdir, FLAGS.sweep, list(argv[1:]), tpu=FLAGS.tpu,
                  zone=FLAGS.zone, project=FLAGS.project, repo_dir=FLAGS.repo_dir,
                  python=FLAGS.python, env=FLAGS.env, setup=FLAGS.setup)
  for name, cmd in commands:
    print(f"[{name}] " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    if FLAGS.dry_run:
      continue
    rc = subprocess.call(cmd)
    if rc:
      print(f"[{name}] failed with exit status {rc}", flush=True)
      sys.exit(rc)


if __name__ == "__main__":
  app.run(main)
