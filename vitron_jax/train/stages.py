"""Stages of one run: whole training runs that go before the main one and hand it parameters.

A config may carry `config.stages`: a ConfigDict `{name: full training config}` (e.g.
vision-tower pretraining before VITRON's phases), run in the order of their names (ConfigDict
keys are sorted, so names carry their rank: `s1_vision`, `s2_segmenter`, ...).
`run_stages(config, workdir)` trains each in
`<workdir>/stages/<name>` (the same trainer, so each stage checkpoints, resumes and logs like any
run), then returns the main config with every stage's final checkpoint folder added to
`checkpoint.init_from`: the main run initialises the components those checkpoints hold (by
parameter path, `checkpoint.load_params`) before its own first step. A stage whose summary
says it finished is not run again, so rerunning the command resumes where it stopped.
A stage may start from earlier stages: `checkpoint.init_from_stages` names them (stages earlier
in name order, e.g. a grounding stage of the LLM on the vision stage's tower); it trains after
them, with their final checkpoints added to its own `checkpoint.init_from`.
Overrides reach a stage's fields as `--config.stages.<name>.a.b=value`. With
`train.parallel_stages > 1` the stages still to train run at once, in pinned worker processes
(`train.stage_workers`; CPU hosts).
"""
from __future__ import annotations

import logging
import os
from typing import Any, Callable

from vitron_jax.train import stage_workers

log = logging.getLogger(__name__)

STAGES_DIR = "stages"


def init_sources(config: Any) -> list[str]:
  """`checkpoint.init_from` as a list of step folders ("" / None -> []; a string may hold
  several, comma-separated)."""
  src = config.checkpoint.get("init_from") or ()
  if isinstance(src, str):
    src = [s for s in (x.strip() for x in src.split(",")) if s]
  return [str(s) for s in src]


def _finished(workdir: str, steps: int) -> str | None:
  """The final step folder of a finished stage run, else None."""
  s = stage_workers.read_summary(workdir)
  if s is None or s.get("preempted") or int(s.get("final_step", -1)) < steps:
    return None
  step_dir = os.path.join(workdir, "checkpoints", str(int(s["final_step"])))
  return step_dir if os.path.isdir(step_dir) else None


def stage_inputs(stages: Any, name: str) -> list[str]:
  """The stages whose final checkpoints start stage `name` (its `checkpoint.init_from_stages`,
  a sequence or a comma-separated string); each must be a stage earlier in name order."""
  raw = stages[name].checkpoint.get("init_from_stages") or ()
  if isinstance(raw, str):
    raw = [s for s in (x.strip() for x in raw.split(",")) if s]
  names = sorted(stages.keys())
  earlier = names[:names.index(name)]
  bad = [s for s in raw if s not in earlier]
  if bad:
    raise ValueError(f"config.stages.{name}.checkpoint.init_from_stages names {bad}: a stage "
                     f"starts only from stages earlier in name order ({earlier})")
  return list(raw)


def _final(workdir: str, stages: Any, name: str) -> str:
  where = os.path.join(workdir, STAGES_DIR, name)
  done = _finished(where, int(stages[name].train.steps))
  if done is None:
    raise RuntimeError(f"stage {name!r} ended without a final checkpoint in {where}")
  return done


def _with_stage_inputs(sub: Any, inputs: list[str], stages: Any, workdir: str) -> Any:
  """A stage's config with its input stages' final checkpoints in `checkpoint.init_from`."""
  if not inputs:
    return sub
  sub = sub.copy_and_resolve_references()
  with sub.unlocked():
    sub.checkpoint.init_from = ",".join(init_sources(sub)
                                        + [_final(workdir, stages, s) for s in inputs])
  return sub


def run_stages(config: Any, workdir: str, train_fn: Callable[[Any, str], dict]
               ) -> tuple[Any, dict | None]:
  """Train `config.stages` in order (see the module docstring). Returns (the main config with
  their checkpoints in `checkpoint.init_from`, None), or (config, the stage's summary) when a
  stage was preempted (SIGTERM: its checkpoint is written, the run stops there)."""
  stages = config.get("stages")
  if not stages:
    return config, None
  workers = int(config.train.get("parallel_stages", 1))
  stage_workers.check_allowed(config, workers)
  cpus = len(os.sched_getaffinity(0))
  if workers > cpus:  # a speed setting: fewer workers on a smaller host, never an error
    log.warning("train.parallel_stages=%d but this process may use %d CPUs: %d workers",
                workers, cpus, cpus)
    workers = cpus
  names = sorted(stages.keys())
  after = {n: stage_inputs(stages, n) for n in names}  # named stages exist and come earlier
  pending = []
  for name in names:
    sub = stages[name]
    if sub.get("stages"):
      raise ValueError(f"config.stages.{name} has stages of its own; stages do not nest")
    where = os.path.join(workdir, STAGES_DIR, name)
    done = _finished(where, int(sub.train.steps))
    if done is None:
      pending.append(name)
    else:
      log.info("stage %s already finished: %s", name, done)
  needed = {s for n in pending for s in after[n]}
  # the stages others start from go first, then those that start from them (each as soon as
  # its inputs are done), then the rest: the longest chain of stages starts first
  pending.sort(key=lambda n: 0 if n in needed else 1 if after[n] else 2)
  runs = [(n, stages[n], os.path.join(workdir, STAGES_DIR, n)) for n in pending]

  def prepare(name, sub):  # once its inputs have finished
    return _with_stage_inputs(sub, after[name], stages, workdir)

  if workers > 1 and len(runs) > 1:
    summary = stage_workers.run_parallel(runs, workers, after, prepare)
    if summary is not None:
      return config, summary
  else:  # in turn, in that order: a stage's inputs come before it
    for name, sub, where in runs:
      sub = prepare(name, sub)
      log.info("stage %s (task %s, %d steps) in %s", name, sub.task.name,
               int(sub.train.steps), where)
      summary = train_fn(sub, where)
      if summary.get("preempted"):
        return config, summary
  sources = init_sources(config)
  for name in names:  # in name order whatever order they ran in: later folders win
    sources.append(_final(workdir, stages, name))
  with config.unlocked():
    config.checkpoint.init_from = ",".join(sources)
  return config, None
