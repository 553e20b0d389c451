"""DDIM (diffusers `DDIMScheduler`), as pure functions over `SchedulerState`.

The target of step `i` is `t_i - num_train_timesteps // N` (diffusers' rule, also with
"trailing" spacing), alpha-bar 1 (or alpha-bar[0] when `set_alpha_to_one=False`) below 0.
`config.eta > 0` makes it stochastic (then `step` needs `noise`).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from vitron_jax.backends.diffusion.schedulers import common
from vitron_jax.backends.diffusion.schedulers.common import SchedulerConfig, SchedulerState
from vitron_jax.backends.diffusion.schedulers.ddpm import _check_range


def make_state(config: SchedulerConfig, num_inference_steps: int) -> SchedulerState:
  """Timesteps `[N]` and alpha-bar tables for `num_inference_steps` steps."""
  common.check_num_steps(config, num_inference_steps)
  ac = common.alphas_cumprod(config)
  ts = common.spaced_timesteps(config, num_inference_steps)
  _check_range(config, ts)
  prev = ts - config.num_train_timesteps // num_inference_steps
  final = np.float32(1.0) if config.set_alpha_to_one else ac[0]
  a_t = ac[ts]
  a_prev = np.where(prev >= 0, ac[np.maximum(prev, 0)], final).astype(np.float32)
  with np.errstate(divide="ignore"):  # a_t = 0 at the last step of a zero-SNR schedule
    sig = np.concatenate([((1 - a_t) / a_t) ** 0.5, [0.0]]).astype(np.float32)
  return SchedulerState(config=config, timesteps=jnp.asarray(ts, jnp.int32),
                        alphas_cumprod=jnp.asarray(ac), sigmas=jnp.asarray(sig),
                        alpha_prod=jnp.asarray(a_t), alpha_prod_prev=jnp.asarray(a_prev),
                        init_noise_sigma=jnp.asarray(1.0, jnp.float32))


def init_memory(state: SchedulerState, sample: jax.Array) -> dict:
  return {}


def scale_model_input(state: SchedulerState, sample: jax.Array, t_index) -> jax.Array:
  return sample


def step(state: SchedulerState, model_output: jax.Array, t_index, sample: jax.Array,
         memory: dict, noise: jax.Array | None = None) -> tuple[jax.Array, dict]:
  """x_{t_prev} from x_t (deterministic for eta = 0)."""
  cfg = state.config
  a_t = state.alpha_prod[t_index]
  a_prev = state.alpha_prod_prev[t_index]
  beta_t, beta_prev = 1 - a_t, 1 - a_prev
  x = sample.astype(jnp.float32)
  x0, eps = common.predict_x0_eps(cfg.prediction_type, model_output.astype(jnp.float32), x, a_t)
  if cfg.clip_sample:
    x0 = jnp.clip(x0, -cfg.clip_sample_range, cfg.clip_sample_range)
  variance = (beta_prev / beta_t) * (1 - a_t / a_prev)
  std = cfg.eta * variance ** 0.5
  prev = a_prev ** 0.5 * x0 + (1 - a_prev - std ** 2) ** 0.5 * eps
  if cfg.eta > 0:
    if noise is None:
      raise ValueError("ddim step with eta > 0 needs `noise` (standard normal, sample-shaped)")
    prev = prev + std * noise.astype(jnp.float32)
  return prev.astype(sample.dtype), memory


def add_noise(state: SchedulerState, x0: jax.Array, noise: jax.Array, t) -> jax.Array:
  """Forward diffusion to integer timestep(s) `t` (`[]` or `[B]`)."""
  return common.q_sample(state, x0, noise, t)
