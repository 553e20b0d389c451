"""DPM-Solver++ multistep (diffusers `DPMSolverMultistepScheduler`, algorithm "dpmsolver++").

Orders 1-3 (default 2, "2M"), midpoint or heun second-order rule, `lower_order_final`,
`euler_at_final`, `final_sigmas_type` ("zero": the last step lands on sigma 0 and is always
first order), as diffusers. The solver memory is a pytree carried by the sampler's scan:

  {"model_outputs": [order, *sample.shape] float32 x0 predictions (oldest first),
   "lower_order_nums": [] int32 steps taken so far (capped at order)}

The order used at step `i` is chosen with `lax.switch` from `i` and `lower_order_nums`, so one
compiled step serves the whole trajectory (also when sampling starts mid-schedule).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from vitron_jax.backends.diffusion.schedulers import common
from vitron_jax.backends.diffusion.schedulers.common import SchedulerConfig, SchedulerState


def _timesteps(config: SchedulerConfig, n: int, lambda_t: np.ndarray) -> np.ndarray:
  T = config.num_train_timesteps
  clipped = int(np.searchsorted(lambda_t[::-1], config.lambda_min_clipped, side="left"))
  last = T - clipped
  if config.timestep_spacing == "linspace":
    return np.linspace(0, last - 1, n + 1).round()[::-1][:-1].copy().astype(np.int64)
  if config.timestep_spacing == "leading":
    ratio = last // (n + 1)
    ts = (np.arange(0, n + 1) * ratio).round()[::-1][:-1].copy().astype(np.int64)
    return ts + config.steps_offset
  ratio = T / n
  return np.arange(last, 0, -ratio).round().copy().astype(np.int64) - 1


def make_state(config: SchedulerConfig, num_inference_steps: int) -> SchedulerState:
  """Timesteps `[N]` and sigmas `[N + 1]` (last: 0 or sigma_min)."""
  common.check_num_steps(config, num_inference_steps)
  ac = common.alphas_cumprod(config)
  if config.rescale_betas_zero_snr:
    ac[-1] = 2.0 ** -24
  lambda_t = np.log(np.sqrt(ac)) - np.log(np.sqrt(1 - ac))
  ts = _timesteps(config, num_inference_steps, lambda_t)
  if ts.max() >= config.num_train_timesteps or ts.min() < 0:
    raise ValueError(f"timestep_spacing={config.timestep_spacing!r}, steps_offset="
                     f"{config.steps_offset} give timesteps {ts.tolist()} outside "
                     f"[0, {config.num_train_timesteps})")
  full = (((1 - ac) / ac) ** 0.5).astype(np.float32)
  sig = np.interp(ts, np.arange(0, len(full)), full)
  last = ((1 - ac[0]) / ac[0]) ** 0.5 if config.final_sigmas_type == "sigma_min" else 0.0
  sig = np.concatenate([sig, [last]]).astype(np.float32)
  a_t = ac[ts]
  a_prev = (1.0 / (sig[1:].astype(np.float64) ** 2 + 1)).astype(np.float32)
  return SchedulerState(config=config, timesteps=jnp.asarray(ts, jnp.int32),
                        alphas_cumprod=jnp.asarray(ac), sigmas=jnp.asarray(sig),
                        alpha_prod=jnp.asarray(a_t), alpha_prod_prev=jnp.asarray(a_prev),
                        init_noise_sigma=jnp.asarray(1.0, jnp.float32))


def init_memory(state: SchedulerState, sample: jax.Array) -> dict:
  order = state.config.solver_order
  return {"model_outputs": jnp.zeros((order,) + sample.shape, jnp.float32),
          "lower_order_nums": jnp.zeros((), jnp.int32)}


def scale_model_input(state: SchedulerState, sample: jax.Array, t_index) -> jax.Array:
  return sample


def _alpha_sigma(sigma):
  alpha = 1 / ((sigma ** 2 + 1) ** 0.5)
  return alpha, sigma * alpha


def _lambda(alpha, sigma):
  return jnp.log(alpha) - jnp.log(sigma)


def convert_model_output(state: SchedulerState, model_output, t_index, sample):
  """The data (x0) prediction DPM-Solver++ works with."""
  kind = state.config.prediction_type
  if kind == "sample":
    return model_output
  alpha_t, sigma_t = _alpha_sigma(state.sigmas[t_index])
  if kind == "epsilon":
    return (sample - sigma_t * model_output) / alpha_t
  return alpha_t * sample - sigma_t * model_output


def _first_order(state, outs, i, sample):
  alpha_t, sigma_t = _alpha_sigma(state.sigmas[i + 1])
  alpha_s, sigma_s = _alpha_sigma(state.sigmas[i])
  h = _lambda(alpha_t, sigma_t) - _lambda(alpha_s, sigma_s)
  return (sigma_t / sigma_s) * sample - (alpha_t * (jnp.exp(-h) - 1.0)) * outs[-1]


def _second_order(state, outs, i, sample):
  s = state.sigmas
  alpha_t, sigma_t = _alpha_sigma(s[i + 1])
  alpha_s0, sigma_s0 = _alpha_sigma(s[i])
  alpha_s1, sigma_s1 = _alpha_sigma(s[jnp.maximum(i - 1, 0)])
  lambda_t = _lambda(alpha_t, sigma_t)
  lambda_s0 = _lambda(alpha_s0, sigma_s0)
  lambda_s1 = _lambda(alpha_s1, sigma_s1)
  m0, m1 = outs[-1], outs[-2]
  h, h_0 = lambda_t - lambda_s0, lambda_s0 - lambda_s1
  r0 = h_0 / h
  d0, d1 = m0, (1.0 / r0) * (m0 - m1)
  x = (sigma_t / sigma_s0) * sample - (alpha_t * (jnp.exp(-h) - 1.0)) * d0
  if state.config.solver_type == "midpoint":
    return x - 0.5 * (alpha_t * (jnp.exp(-h) - 1.0)) * d1
  return x + (alpha_t * ((jnp.exp(-h) - 1.0) / h + 1.0)) * d1


def _third_order(state, outs, i, sample):
  s = state.sigmas
  alpha_t, sigma_t = _alpha_sigma(s[i + 1])
  alpha_s0, sigma_s0 = _alpha_sigma(s[i])
  alpha_s1, sigma_s1 = _alpha_sigma(s[jnp.maximum(i - 1, 0)])
  alpha_s2, sigma_s2 = _alpha_sigma(s[jnp.maximum(i - 2, 0)])
  lambda_t = _lambda(alpha_t, sigma_t)
  lambda_s0 = _lambda(alpha_s0, sigma_s0)
  lambda_s1 = _lambda(alpha_s1, sigma_s1)
  lambda_s2 = _lambda(alpha_s2, sigma_s2)
  m0, m1, m2 = outs[-1], outs[-2], outs[-3]
  h, h_0, h_1 = lambda_t - lambda_s0, lambda_s0 - lambda_s1, lambda_s1 - lambda_s2
  r0, r1 = h_0 / h, h_1 / h
  d1_0, d1_1 = (1.0 / r0) * (m0 - m1), (1.0 / r1) * (m1 - m2)
  d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
  d2 = (1.0 / (r0 + r1)) * (d1_0 - d1_1)
  return ((sigma_t / sigma_s0) * sample - (alpha_t * (jnp.exp(-h) - 1.0)) * m0
          + (alpha_t * ((jnp.exp(-h) - 1.0) / h + 1.0)) * d1
          - (alpha_t * ((jnp.exp(-h) - 1.0 + h) / h ** 2 - 0.5)) * d2)


def step(state: SchedulerState, model_output: jax.Array, t_index, sample: jax.Array,
         memory: dict, noise: jax.Array | None = None) -> tuple[jax.Array, dict]:
  """One multistep update; `memory` from `init_memory` (or a previous step)."""
  cfg = state.config
  n = state.num_inference_steps
  i = jnp.asarray(t_index, jnp.int32)
  x = sample.astype(jnp.float32)
  x0 = convert_model_output(state, model_output.astype(jnp.float32), i, x)
  outs = jnp.concatenate([memory["model_outputs"][1:], x0[None]], axis=0)
  lon = memory["lower_order_nums"]
  short = cfg.lower_order_final and n < 15
  lower_final = (i == n - 1) & (cfg.euler_at_final or short or cfg.final_sigmas_type == "zero")
  lower_second = (i == n - 2) & short
  order = cfg.solver_order
  first = (order == 1) | (lon < 1) | lower_final
  second = (order == 2) | (lon < 2) | lower_second
  branch = jnp.where(first, 0, jnp.where(second, 1, 2))
  fns = [_first_order, _second_order, _third_order][:order]
  branch = jnp.minimum(branch, order - 1)
  prev = jax.lax.switch(branch, [lambda o, f=f: f(state, o, i, x) for f in fns], outs)
  new_memory = {"model_outputs": outs, "lower_order_nums": jnp.minimum(lon + 1, order)}
  return prev.astype(sample.dtype), new_memory


def add_noise(state: SchedulerState, x0: jax.Array, noise: jax.Array, t) -> jax.Array:
  """Noise to schedule timestep(s) `t` (values from `state.timesteps`), as diffusers."""
  common.check_timesteps_concrete(state, t)
  sigma = state.sigmas[common.index_of_timestep(state, t)]
  alpha_t, sigma_t = _alpha_sigma(sigma)
  return common._bcast(alpha_t, x0) * x0 + common._bcast(sigma_t, x0) * noise
