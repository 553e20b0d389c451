"""Euler (diffusers `EulerDiscreteScheduler`, no churn), as pure functions over `SchedulerState`.

Samples live in the "sigma" parameterisation x = x0 + sigma * eps: the initial latents are
scaled by `init_noise_sigma`, the model sees `scale_model_input` = x / sqrt(sigma^2 + 1), and
timesteps are float (linspace spacing gives fractional timesteps, passed to the model as is).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from vitron_jax.backends.diffusion.schedulers import common
from vitron_jax.backends.diffusion.schedulers.common import SchedulerConfig, SchedulerState


def _timesteps(config: SchedulerConfig, n: int) -> np.ndarray:
  T = config.num_train_timesteps
  if config.timestep_spacing == "linspace":
    return np.linspace(0, T - 1, n, dtype=np.float32)[::-1].copy()
  if config.timestep_spacing == "leading":
    ratio = T // n
    ts = (np.arange(0, n) * ratio).round()[::-1].copy().astype(np.float32)
    return ts + config.steps_offset
  ratio = T / n
  return (np.arange(T, 0, -ratio)).round().copy().astype(np.float32) - 1


def make_state(config: SchedulerConfig, num_inference_steps: int) -> SchedulerState:
  """Float timesteps `[N]` and sigmas `[N + 1]`."""
  common.check_num_steps(config, num_inference_steps)
  ac = common.alphas_cumprod(config)
  if config.rescale_betas_zero_snr:
    ac[-1] = 2.0 ** -24
  ts = _timesteps(config, num_inference_steps)
  if ts.max() > config.num_train_timesteps - 1 or ts.min() < 0:
    raise ValueError(f"timestep_spacing={config.timestep_spacing!r}, steps_offset="
                     f"{config.steps_offset} give timesteps {ts.tolist()} outside "
                     f"[0, {config.num_train_timesteps - 1}]")
  full = (((1 - ac) / ac) ** 0.5).astype(np.float32)
  if config.interpolation_type == "linear":
    sig = np.interp(ts, np.arange(0, len(full)), full)
  else:
    sig = np.exp(common.torch_linspace_f32(np.log(full[-1]), np.log(full[0]),
                                           num_inference_steps + 1))
  last = ((1 - ac[0]) / ac[0]) ** 0.5 if config.final_sigmas_type == "sigma_min" else 0.0
  sig = np.concatenate([sig, [last]]).astype(np.float32)
  max_sigma = sig.max()
  if config.timestep_spacing in ("linspace", "trailing"):
    init = max_sigma
  else:
    init = np.float32((max_sigma ** 2 + np.float32(1)) ** np.float32(0.5))
  a_t = (1.0 / (sig[:-1].astype(np.float64) ** 2 + 1)).astype(np.float32)[:num_inference_steps]
  a_prev = (1.0 / (sig[1:].astype(np.float64) ** 2 + 1)).astype(np.float32)[:num_inference_steps]
  return SchedulerState(config=config, timesteps=jnp.asarray(ts, jnp.float32),
                        alphas_cumprod=jnp.asarray(ac), sigmas=jnp.asarray(sig),
                        alpha_prod=jnp.asarray(a_t), alpha_prod_prev=jnp.asarray(a_prev),
                        init_noise_sigma=jnp.asarray(init, jnp.float32))


def init_memory(state: SchedulerState, sample: jax.Array) -> dict:
  return {}


def scale_model_input(state: SchedulerState, sample: jax.Array, t_index) -> jax.Array:
  """x / sqrt(sigma^2 + 1): the model's input at step `t_index`."""
  sigma = state.sigmas[t_index]
  return (sample / ((sigma ** 2 + 1) ** 0.5)).astype(sample.dtype)


def step(state: SchedulerState, model_output: jax.Array, t_index, sample: jax.Array,
         memory: dict, noise: jax.Array | None = None) -> tuple[jax.Array, dict]:
  """One Euler step from sigma_i to sigma_{i+1}."""
  kind = state.config.prediction_type
  sigma = state.sigmas[t_index]
  x = sample.astype(jnp.float32)
  out = model_output.astype(jnp.float32)
  if kind == "sample":
    x0 = out
  elif kind == "epsilon":
    x0 = x - sigma * out
  else:
    x0 = out * (-sigma / (sigma ** 2 + 1) ** 0.5) + (x / (sigma ** 2 + 1))
  derivative = (x - x0) / sigma
  dt = state.sigmas[t_index + 1] - sigma
  return (x + derivative * dt).astype(sample.dtype), memory


def add_noise(state: SchedulerState, x0: jax.Array, noise: jax.Array, t) -> jax.Array:
  """x0 + sigma(t) * noise for schedule timestep(s) `t` (values from `state.timesteps`)."""
  common.check_timesteps_concrete(state, t)
  sigma = state.sigmas[common.index_of_timestep(state, t)]
  return x0 + noise * common._bcast(sigma, x0)
