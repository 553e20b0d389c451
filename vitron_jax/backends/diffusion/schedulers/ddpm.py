"""DDPM ancestral sampling (diffusers `DDPMScheduler`), as pure functions over `SchedulerState`.

The "previous" timestep of step `i` is the next entry of the spaced timesteps (or -1 after the
last), exactly as diffusers' `previous_timestep` once `set_timesteps` was called.
Stochastic: `step` needs `noise` shaped like the sample (the sampler draws it from its key).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from vitron_jax.backends.diffusion.schedulers import common
from vitron_jax.backends.diffusion.schedulers.common import SchedulerConfig, SchedulerState


def make_state(config: SchedulerConfig, num_inference_steps: int) -> SchedulerState:
  """Timesteps `[N]` and alpha-bar tables for `num_inference_steps` steps."""
  common.check_num_steps(config, num_inference_steps)
  ac = common.alphas_cumprod(config)
  ts = common.spaced_timesteps(config, num_inference_steps)
  _check_range(config, ts)
  prev = np.concatenate([ts[1:], [-1]])
  a_t = ac[ts]
  a_prev = np.where(prev >= 0, ac[np.maximum(prev, 0)], np.float32(1.0)).astype(np.float32)
  with np.errstate(divide="ignore"):  # a_t = 0 at the last step of a zero-SNR schedule
    sig = np.concatenate([((1 - a_t) / a_t) ** 0.5, [0.0]]).astype(np.float32)
  return SchedulerState(config=config, timesteps=jnp.asarray(ts, jnp.int32),
                        alphas_cumprod=jnp.asarray(ac), sigmas=jnp.asarray(sig),
                        alpha_prod=jnp.asarray(a_t), alpha_prod_prev=jnp.asarray(a_prev),
                        init_noise_sigma=jnp.asarray(1.0, jnp.float32))


def _check_range(config: SchedulerConfig, ts: np.ndarray) -> None:
  if ts.max() >= config.num_train_timesteps or ts.min() < 0:
    raise ValueError(
        f"timestep_spacing={config.timestep_spacing!r} with steps_offset={config.steps_offset} "
        f"gives timesteps {ts.tolist()} outside [0, {config.num_train_timesteps})")


def init_memory(state: SchedulerState, sample: jax.Array) -> dict:
  return {}


def scale_model_input(state: SchedulerState, sample: jax.Array, t_index) -> jax.Array:
  return sample


def step(state: SchedulerState, model_output: jax.Array, t_index, sample: jax.Array,
         memory: dict, noise: jax.Array | None = None) -> tuple[jax.Array, dict]:
  """x_{t_prev} from x_t; `noise` (standard normal, sample-shaped) is required."""
  cfg = state.config
  if noise is None:
    raise ValueError("ddpm step needs `noise` (standard normal, shaped like the sample)")
  t = state.timesteps[t_index]
  a_t = state.alpha_prod[t_index]
  a_prev = state.alpha_prod_prev[t_index]
  beta_t, beta_prev = 1 - a_t, 1 - a_prev
  cur_alpha = a_t / a_prev
  cur_beta = 1 - cur_alpha
  x = sample.astype(jnp.float32)
  x0, _ = common.predict_x0_eps(cfg.prediction_type, model_output.astype(jnp.float32), x, a_t)
  if cfg.clip_sample:
    x0 = jnp.clip(x0, -cfg.clip_sample_range, cfg.clip_sample_range)
  c0 = a_prev ** 0.5 * cur_beta / beta_t
  c1 = cur_alpha ** 0.5 * beta_prev / beta_t
  prev = c0 * x0 + c1 * x
  if cfg.variance_type == "fixed_large":
    var = cur_beta
  else:
    var = jnp.maximum(beta_prev / beta_t * cur_beta, 1e-20)
  std = jnp.where(t > 0, var ** 0.5, 0.0)
  prev = prev + std * noise.astype(jnp.float32)
  return prev.astype(sample.dtype), memory


def add_noise(state: SchedulerState, x0: jax.Array, noise: jax.Array, t) -> jax.Array:
  """Forward diffusion to integer timestep(s) `t` (`[]` or `[B]`)."""
  return common.q_sample(state, x0, noise, t)
