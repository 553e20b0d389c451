"""The trainer: config + workdir -> a trained, checkpointed, logged run.

Linear and sectioned (big_vision style); `config.stages` (whole runs that hand this one
parameters, `train.stages`) go first:

1. runtime: matmul precision, `jax.distributed` (config or environment), mesh and rules;
2. task (`config.task.name`), optional LoRA wrapper, optimizer (freezing, per-module LR);
3. abstract state -> shardings (`eval_shape`, nothing materialised);
4. resume from the newest readable checkpoint in `<workdir>/checkpoints` (unreadable ones are
   reported and set aside) or initialise directly into the shardings;
5. the step, jitted with in/out shardings and the state donated;
6. the loop: host-local batches -> global arrays, step, log, checkpoint every N steps,
   evaluate every M steps; SIGTERM (on any host) -> finish a checkpoint, exit cleanly;
   an error (e.g. a bad sample in strict mode) -> checkpoint the last completed step, re-raise.

Returns a summary dict (also written to `<workdir>/summary.json` by the primary process).
"""
from __future__ import annotations

import json
import logging
import os
import signal
import time
from typing import Any

import jax
import numpy as np

from vitron_jax.nn import partitioning as PT
from vitron_jax.train import checkpoint as C
from vitron_jax.train import optim as O
from vitron_jax.train import state as S
from vitron_jax.train import step as ST
from vitron_jax.train.lora import LoraTask
from vitron_jax.train.metrics_log import MetricsLog
from vitron_jax.train.stages import init_sources, run_stages
from vitron_jax.train.task import build_task

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ runtime


def setup_runtime(config: Any) -> None:
  """Matmul precision and multi-host initialisation (before any device is touched)."""
  prec = config.train.get("matmul_precision", "default")
  if prec and prec != "default":
    jax.config.update("jax_default_matmul_precision", prec)
  d = config.distributed
  PT.maybe_initialize_distributed(
      coordinator_address=d.coordinator_address or None,
      num_processes=None if d.num_processes < 0 else d.num_processes,
      process_id=None if d.process_id < 0 else d.process_id,
      enabled=bool(d.enabled))


def make_mesh(config: Any):
  n = int(config.mesh.get("num_devices", -1))
  devices = jax.devices() if n in (-1, None) else jax.devices()[:n]
  if n not in (-1, None) and len(devices) != n:
    raise ValueError(f"mesh.num_devices={n} but only {len(jax.devices())} devices exist")
  return PT.make_mesh(dict(config.mesh.shape), devices), PT.rules_for(config.mesh.rules)


def build(config: Any):
  """(task, optimizer, labeler, schedule) from the config."""
  task = build_task(config)
  # a task may hold parameters that never train (e.g. VITRON's frozen backends)
  extra_freeze = tuple(getattr(task, "frozen", lambda: ())())
  if config.lora.enabled:
    task = LoraTask(task, rank=config.lora.rank, alpha=config.lora.alpha,
                    targets=config.lora.targets)
    if config.lora.freeze_base:
      extra_freeze = (r"^model/",)  # LoRA wraps the task's tree under model/
  optimizer, labeler, schedule = O.build_optimizer(config.optim, int(config.train.steps),
                                                   extra_freeze=extra_freeze)
  return task, optimizer, labeler, schedule


def global_batch_arrays(local: dict, spec: dict, shardings: dict, global_batch: int) -> dict:
  """Host-local numpy batch -> global `jax.Array`s (checked against the task's spec)."""
  out = {}
  missing = sorted(set(spec) - set(local))
  if missing:
    raise ValueError(f"data batch lacks {missing}; it has {sorted(local)}")
  local_rows = global_batch // jax.process_count()
  for k, (shape, dtype) in spec.items():
    x = np.asarray(local[k])
    want = (local_rows,) + tuple(shape)
    if x.shape != want:
      raise ValueError(f"data batch {k!r} has shape {x.shape}, expected {want} (this host's "
                       f"rows of a global batch of {global_batch})")
    x = x.astype(dtype, copy=False)
    out[k] = jax.make_array_from_process_local_data(shardings[k], x,
                                                    (global_batch,) + tuple(shape))
  return out


class StopFlag:
  """SIGTERM -> a flag the loop reads after each step (the previous handler is restored)."""

  def __init__(self, enabled: bool):
    self.requested = False
    self._old = None
    if enabled:
      try:
        self._old = signal.signal(signal.SIGTERM, self._handle)
      except ValueError:  # not the main thread
        self._old = None

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def any_host(self) -> bool:
    if jax.process_count() == 1:
      return self.requested
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    flags = multihost_utils.process_allgather(np.int32(self.requested))
    return bool(np.any(flags))

  def restore(self) -> None:
    if self._old is not None:
      signal.signal(signal.SIGTERM, self._old)
      self._old = None


def _batch_shards(mesh, rules) -> int:
  spec = PT.batch_sharding(mesh, rules, 1).spec[0]
  axes = () if spec is None else (spec,) if isinstance(spec, str) else tuple(spec)
  return int(np.prod([mesh.shape[a] for a in axes]))


def _tokens_per_step(spec: dict, global_batch: int) -> int:
  for k in ("tokens", "input_ids"):
    if k in spec:
      return global_batch * int(np.prod(spec[k][0]))
  return 0


def _evaluate(task, state, step, workdir, mlog) -> dict:
  if not hasattr(task, "evaluate"):
    return {}
  t0 = time.perf_counter()
  metrics = task.evaluate(state.params, step, workdir) or {}
  pictures = metrics.pop("pictures", None) if isinstance(metrics, dict) else None
  metrics = dict(metrics, eval_seconds=time.perf_counter() - t0)
  mlog.eval(step, metrics)
  for tag, (png, h, w) in (pictures or {}).items():
    mlog.picture(step, tag, png, h, w)
  log.info("eval @%d: %s", step, metrics)
  return metrics


# --------------------------------------------------------------------------------- train


def train(config: Any, workdir: str) -> dict[str, Any]:
  """Train per `config` in `workdir` (see the module docstring); `config.stages` first."""
  config, preempted = run_stages(config, workdir, train)
  if preempted is not None:
    return preempted
  setup_runtime(config)
  primary = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)
  total = int(config.train.steps)
  gb = int(config.data.global_batch)
  if gb % jax.process_count():
    raise ValueError(f"data.global_batch={gb} is not divisible by {jax.process_count()} "
                     f"processes")

  mesh, rules = make_mesh(config)
  task, optimizer, labeler, schedule = build(config)
  seed = int(config.train.seed)
  abstract, shardings = S.state_shardings(task.init, optimizer, mesh, rules, seed)
  counts = labeler.check(abstract.params)
  mask = labeler.trainable_mask(abstract.params)
  spec = task.batch_spec()
  b_shard = ST.batch_shardings(spec, mesh, rules)
  shards = _batch_shards(mesh, rules)
  if gb % shards:
    raise ValueError(f"data.global_batch={gb} must be divisible by the {shards} batch shards "
                     f"of mesh {dict(mesh.shape)} (rules {config.mesh.rules!r})")
  if primary:
    log.info("task %s: %d params (%s), mesh %s, rules %s", task.name,
             PT.count_params(abstract.params), counts, dict(mesh.shape), config.mesh.rules)
    if hasattr(task, "save_assets"):  # e.g. the tokenizer, so the run is served with its ids
      task.save_assets(workdir)

  ckpt = C.Checkpointer(os.path.join(workdir, "checkpoints"), task.components(),
                        keep=int(config.checkpoint.keep),
                        every_steps=int(config.checkpoint.every_steps),
                        async_save=bool(config.checkpoint.async_save), config=config)
  data = task.make_data(gb, jax.process_index(), jax.process_count())
  restored = ckpt.restore_latest(abstract) if config.checkpoint.resume else None
  if restored is not None:
    state, data_state, start = restored
    data.set_state(data_state)
    log.info("resumed from %s", ckpt.step_dir(start))
  else:
    given = None
    for src in init_sources(config):  # later folders win where two hold a parameter
      loaded, paths = C.load_params(src, abstract.params, task.components())
      given = loaded if given is None else jax.tree_util.tree_map(
          lambda new, old: old if new is None else new, loaded, given,
          is_leaf=lambda x: x is None)
      log.info("initialised %d parameter arrays from %s", len(paths), src)
    # the loaded parameters are never initialised; the rest, one jitted init per component
    state = S.init_state(task.init, optimizer, shardings, seed, given=given,
                         groups=task.components())
    start = 0

  step_fn = ST.jit_train_step(
      ST.make_train_step(task, optimizer, mask, schedule,
                         accum_steps=int(config.train.accum_steps),
                         compute_dtype=str(config.train.compute_dtype)),
      shardings, spec, mesh, rules)
  mlog = MetricsLog(workdir, total_steps=total, start_step=start, primary=primary,
                    jsonl=config.log.jsonl, tensorboard=config.log.tensorboard,
                    png=config.log.png, progress=config.log.progress,
                    examples_per_step=gb, tokens_per_step=_tokens_per_step(spec, gb))
  for msg in ckpt.corrupt:
    mlog.event(start, "corrupt_checkpoint", detail=msg)
  if restored is not None:
    mlog.event(start, "resumed", checkpoint=ckpt.step_dir(start))
  stop = StopFlag(bool(config.checkpoint.save_on_sigterm))
  log_every = max(int(config.train.log_every), 1)
  eval_every = int(config.train.eval_every)
  kill_at = int(config.debug.sigkill_after_step)
  sleep = float(config.debug.sleep_per_step)
  summary: dict[str, Any] = {"start_step": start, "preempted": False, "eval": {}}
  last_metrics: dict[str, float] = {}
  step = start
  data_state = data.get_state()   # the data state that goes with `state`
  state_ok = True

  def bad_stats():
    return data.stats() if hasattr(data, "stats") else {}

  try:
    while step < total:
      local = next(data)
      batch = global_batch_arrays(local, spec, b_shard, gb)
      state_ok = False              # the state is donated to the step
      state, metrics = step_fn(state, batch)
      state_ok = True
      step += 1
      data_state = data.get_state()
      if step % log_every == 0 or step == total:
        stats = bad_stats()
        extra = {"bad_samples": stats["bad"]} if stats.get("bad") else {}
        last_metrics = mlog.train(step, jax.device_get(metrics), **extra)
      if sleep:
        time.sleep(sleep)
      if ckpt.should_save(step):
        ckpt.save(state, data_state)
      if eval_every and step % eval_every == 0 and step < total:
        summary["eval"] = _evaluate(task, state, step, workdir, mlog)
      if step == kill_at:
        log.warning("debug.sigkill_after_step=%d: kill -9 now", kill_at)
        os.kill(os.getpid(), signal.SIGKILL)
      if stop.any_host():
        ckpt.save(state, data_state, force=True)
        ckpt.wait()
        mlog.event(step, "sigterm", checkpoint=ckpt.step_dir(step))
        summary["preempted"] = True
        log.warning("SIGTERM: checkpoint %s written; exiting", ckpt.step_dir(step))
        break
  except BaseException as e:
    if state_ok and step > start:
      log.error("%s at step %d; saving the last completed step first", type(e).__name__, step)
      try:
        ckpt.save(state, data_state, force=True)
        ckpt.wait()
        mlog.event(step, "error", error=f"{type(e).__name__}: {e}"[:500],
                   checkpoint=ckpt.step_dir(step))
      except Exception as save_err:  # pylint: disable=broad-except
        log.error("could not save the last checkpoint: %s", save_err)
    mlog.close()
    ckpt.close()
    stop.restore()
    if hasattr(data, "close"):
      data.close()
    raise
  stop.restore()
  if not summary["preempted"]:
    ckpt.save(state, data_state)
    if config.train.eval_at_end:
      summary["eval"] = _evaluate(task, state, step, workdir, mlog)
  ckpt.wait()
  stats = bad_stats()
  if stats.get("bad"):
    mlog.event(step, "bad_data", **stats)
  summary.update(final_step=step, last_metrics=last_metrics, bad_data=stats,
                 corrupt_checkpoints=list(ckpt.corrupt), checkpoints=ckpt.all_steps())
  ckpt.close()
  mlog.close()
  if primary:
    with open(os.path.join(workdir, "summary.json"), "w", encoding="utf-8") as f:
      json.dump(summary, f, indent=1, default=str)
  if hasattr(data, "close"):
    data.close()
  return summary
