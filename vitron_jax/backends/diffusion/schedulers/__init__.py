"""Diffusion schedulers as pure functions over a frozen state (diffusers-equal numerics).

    cfg = SchedulerConfig(kind="dpm_solver", beta_schedule="scaled_linear", ...)
    # or from_diffusers_config(json.load(open("scheduler/scheduler_config.json")))
    state = make_state(cfg, num_inference_steps=25)          # host side, once
    memory = init_memory(state, latents)
    x = scale_model_input(state, latents, i)                   # inside jit / scan
    latents, memory = step(state, model_output, i, latents, memory, noise=None)

Every function dispatches on `state.config.kind` (static), so these work inside `jit` and
`lax.scan` with a traced step index `i`.
"""
from __future__ import annotations

from types import ModuleType

import jax

from vitron_jax.backends.diffusion.schedulers import common, ddim, ddpm, dpm_solver, euler
from vitron_jax.backends.diffusion.schedulers.common import (
    KINDS, NoiseSchedule, SchedulerConfig, SchedulerConfigError, SchedulerState,
    from_diffusers_config, min_snr_weight, noise_schedule, q_sample, snr, training_target,
    velocity)

_MODULES: dict[str, ModuleType] = {"ddpm": ddpm, "ddim": ddim, "dpm_solver": dpm_solver,
                                   "euler": euler}


def module_for(kind: str) -> ModuleType:
  if kind not in _MODULES:
    raise SchedulerConfigError(f"scheduler kind {kind!r} is not one of {KINDS}")
  return _MODULES[kind]


def make_state(config: SchedulerConfig, num_inference_steps: int) -> SchedulerState:
  """Host-side tables for `num_inference_steps` steps of `config.kind`."""
  return module_for(config.kind).make_state(config, num_inference_steps)


def init_memory(state: SchedulerState, sample: jax.Array):
  """The solver memory pytree the first `step` takes (empty for single-step solvers)."""
  return module_for(state.config.kind).init_memory(state, sample)


def scale_model_input(state: SchedulerState, sample: jax.Array, t_index) -> jax.Array:
  return module_for(state.config.kind).scale_model_input(state, sample, t_index)


def step(state: SchedulerState, model_output: jax.Array, t_index, sample: jax.Array, memory,
         noise: jax.Array | None = None):
  """`(prev_sample, new_memory)`; `noise` is needed when `state.config.stochastic`."""
  return module_for(state.config.kind).step(state, model_output, t_index, sample, memory, noise)


def add_noise(state: SchedulerState, x0: jax.Array, noise: jax.Array, t) -> jax.Array:
  """Noise `x0` to timestep value(s) `t` in this scheduler's sample parameterisation."""
  return module_for(state.config.kind).add_noise(state, x0, noise, t)


def add_noise_at_index(state: SchedulerState, x0: jax.Array, noise: jax.Array,
                       t_index) -> jax.Array:
  """Noise `x0` to the noise level of step `t_index` (img2img / video editing starts)."""
  return add_noise(state, x0, noise, state.timesteps[t_index])


__all__ = [
    "KINDS", "NoiseSchedule", "SchedulerConfig", "SchedulerConfigError", "SchedulerState",
    "add_noise", "add_noise_at_index", "common", "from_diffusers_config", "init_memory",
    "make_state", "min_snr_weight", "module_for", "noise_schedule", "q_sample",
    "scale_model_input", "snr", "step", "training_target", "velocity",
]
