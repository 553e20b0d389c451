"""Stages trained at once: each in its own process, pinned to its share of the host's CPUs.

`config.train.parallel_stages = N` (N > 1) makes `train.stages.run_stages` hand the stages
that have not finished to `run_parallel`: N worker processes (spawned, so each starts its own
XLA runtime), each pinned with `sched_setaffinity` to one of N disjoint groups of the CPUs
this process may use, before JAX is imported (XLA sizes its CPU thread pool by them). A stage
takes the next free group, in the order given, once the stages it starts from have finished
(`after`); its output goes to `<stage workdir>/stage.log`.

Why: a small model's step does not keep a multi-core host busy (a PixelWorld diffusion stage
alone uses ~1.4 of 2 cores); two stages pinned to one core each train ~1.2-1.4x faster together
than in turn (BUILD_NOTES.md). For CPU hosts: on a GPU or TPU host the processes would share one
accelerator, and a multi-host run trains its stages in turn (both refused with an error).

A stage that fails stops the others (SIGTERM: they save a checkpoint and exit) and raises with
the end of its log. SIGTERM to this process is passed on to the running stages the same way;
the first preempted stage's summary is returned so the run stops there, as with stages in turn.
A rerun resumes each stage from its own checkpoint.
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
from typing import Any, Callable, Mapping, Sequence

log = logging.getLogger(__name__)

STAGE_LOG = "stage.log"


def cpu_groups(workers: int, cpus: Any = None) -> list[tuple[int, ...]]:
  """`workers` disjoint, non-empty groups of `cpus` (default: the CPUs this process may use),
  round-robin: 4 CPUs for 2 workers -> (0, 2), (1, 3)."""
  cpus = sorted(os.sched_getaffinity(0) if cpus is None else cpus)
  if workers < 1:
    raise ValueError(f"train.parallel_stages must be >= 1, got {workers}")
  if workers > len(cpus):
    raise ValueError(f"train.parallel_stages={workers} but this process may use only "
                     f"{len(cpus)} CPUs ({cpus}); each stage needs at least one")
  return [tuple(cpus[i::workers]) for i in range(workers)]


def check_allowed(config: Any, workers: int) -> None:
  """Parallel stages are local processes on a CPU host (module docstring)."""
  if workers <= 1:
    return
  multihost = bool(config.distributed.enabled) or os.environ.get("VITRON_MULTIHOST") == "1"
  if multihost:
    raise ValueError(f"train.parallel_stages={workers}: a multi-host run trains its stages in "
                     f"turn; set it to 1")
  platforms = os.environ.get("JAX_PLATFORMS", "")
  if platforms and platforms.split(",")[0] not in ("cpu", ""):
    raise ValueError(f"train.parallel_stages={workers} runs stages as processes sharing this "
                     f"host's CPUs; JAX_PLATFORMS={platforms!r} would put them all on one "
                     f"accelerator; set it to 1")


def _stage_main(config: Any, workdir: str, cpus: tuple[int, ...], log_path: str) -> None:
  """A worker process: pin, send output to the stage's log, train the stage."""
  os.sched_setaffinity(0, cpus)  # before jax is imported: XLA's thread pool follows it
  fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
  sys.stdout.flush()
  sys.stderr.flush()
  os.dup2(fd, 1)
  os.dup2(fd, 2)
  os.close(fd)
  logging.basicConfig(level=logging.INFO, stream=sys.stderr, force=True,
                      format="%(asctime)s %(levelname)s %(name)s: %(message)s")
  from absl import flags  # pylint: disable=import-outside-toplevel
  flags.FLAGS.mark_as_parsed()  # grain's worker processes read absl flags
  from vitron_jax.train import loop, metrics_log  # pylint: disable=import-outside-toplevel
  metrics_log.quiet_library_logs()
  loop.train(config, workdir)


def _tail(path: str, n: int = 4000) -> str:
  try:
    with open(path, "rb") as f:
      f.seek(0, os.SEEK_END)
      f.seek(max(0, f.tell() - n))
      return f.read().decode("utf-8", "replace")
  except OSError as e:
    return f"(could not read {path}: {e})"


def read_summary(workdir: str) -> dict | None:
  """A run's `summary.json` (written by `loop.train` when it stops), or None before that."""
  path = os.path.join(workdir, "summary.json")
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def run_parallel(pending: list[tuple[str, Any, str]], workers: int,
                 after: Mapping[str, Sequence[str]] | None = None,
                 prepare: Callable[[str, Any], Any] | None = None) -> dict | None:
  """Train `pending` stages `(name, config, workdir)` in `workers` pinned processes (module
  docstring). A stage starts once the stages `after[name]` are neither queued nor running
  (`prepare(name, config)`, called then, gives the config it trains with). Returns None when
  every stage finished, else the summary of a preempted one."""
  groups = cpu_groups(workers)
  ctx = multiprocessing.get_context("spawn")
  queue, free = list(pending), list(range(len(groups)))
  after = after or {}

  def next_ready():
    busy = {n for n, _, _ in queue} | {n for n, _, _, _ in running.values()}
    for i, (name, _, _) in enumerate(queue):
      if not set(after.get(name, ())) & busy:
        return queue.pop(i)
    return None

  running: dict[int, tuple[str, Any, str, float]] = {}
  failure: tuple[str, int, str] | None = None
  preempted: dict | None = None
  stopping = False
  signalled: set[int] = set()

  def stop_all(*_):
    nonlocal stopping
    stopping = True
    for _, proc, _, _ in running.values():
      if proc.is_alive() and proc.pid not in signalled:  # once: a second one would kill it
        signalled.add(proc.pid)
        os.kill(proc.pid, signal.SIGTERM)

  old = signal.signal(signal.SIGTERM, stop_all)
  try:
    while running or (queue and not stopping):
      while queue and free and not stopping:
        item = next_ready()
        if item is None:  # the rest wait for running stages
          if not running:
            raise RuntimeError(f"stages {[n for n, _, _ in queue]} wait for stages that never "
                               f"run (after: {dict(after)})")
          break
        name, sub, where = item
        if prepare is not None:
          sub = prepare(name, sub)
        g = free.pop(0)
        os.makedirs(where, exist_ok=True)
        log_path = os.path.join(where, STAGE_LOG)
        proc = ctx.Process(target=_stage_main, args=(sub, where, groups[g], log_path),
                           name=f"stage-{name}")
        proc.start()
        running[g] = (name, proc, log_path, time.perf_counter())
        log.info("stage %s (task %s, %d steps) in %s: worker on CPUs %s, log %s", name,
                 sub.task.name, int(sub.train.steps), where, list(groups[g]), log_path)
      multiprocessing.connection.wait([p.sentinel for _, p, _, _ in running.values()])
      for g, (name, proc, log_path, t0) in list(running.items()):
        if proc.is_alive():
          continue
        proc.join()
        del running[g]
        free.append(g)
        where = os.path.dirname(log_path)
        summary = read_summary(where)
        if proc.exitcode == 0 and summary is not None and summary.get("preempted"):
          log.warning("stage %s stopped by SIGTERM after step %s", name,
                      summary.get("final_step"))
          preempted = preempted or summary
          stop_all()
        elif proc.exitcode == 0 and summary is not None:
          log.info("stage %s finished in %.0f s", name, time.perf_counter() - t0)
        elif stopping and proc.exitcode == -signal.SIGTERM:
          # a SIGTERM from outside too (the whole process group) killed it before or after its
          # training loop; it resumes from its newest checkpoint
          log.warning("stage %s killed by SIGTERM", name)
        elif failure is None:
          failure = (name, int(proc.exitcode or 0), log_path)
          stop_all()
  finally:
    signal.signal(signal.SIGTERM, old)
    for _, proc, _, _ in running.values():  # only after an exception here (Ctrl-C)
      if proc.is_alive():
        os.kill(proc.pid, signal.SIGTERM)
      proc.join(timeout=120)
      if proc.is_alive():
        proc.kill()
  if failure is not None:
    name, code, log_path = failure
    raise RuntimeError(f"stage {name!r} failed (exit code {code}); the end of {log_path}:\n"
                       f"{_tail(log_path)}")
  if preempted is None and stopping:  # SIGTERM here: every stage saved and exited
    preempted = {"preempted": True, "start_step": 0, "final_step": 0}
  return preempted
