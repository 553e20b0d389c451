"""What every diffusion scheduler shares: the config, the training noise schedule, timestep spacing.

Schedulers are pure functions over a frozen `SchedulerState` pytree (defined here, shared by
all four schedulers):

* `make_state(config, num_inference_steps)` (host side, numpy): timesteps and per-step tables;
* `step(state, model_output, t_index, sample, memory, noise=None) -> (prev_sample, memory)`;
* `add_noise(state, x0, noise, t)`; `scale_model_input(state, sample, t_index)`;
* `training_target(schedule, x0, noise, t)` per prediction type (this module).

Tables are computed in numpy replicating diffusers' float32 arithmetic (torch's `linspace`
rounding and its float64-accumulated `cumprod`), so timesteps and sigmas agree with diffusers
to the last bit and whole trajectories to ~1e-6.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

KINDS = ("ddpm", "ddim", "dpm_solver", "euler")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
SPACINGS = ("leading", "trailing", "linspace")

#: diffusers class name -> our scheduler kind.
DIFFUSERS_CLASSES = {
    "DDPMScheduler": "ddpm",
    "DDIMScheduler": "ddim",
    "DPMSolverMultistepScheduler": "dpm_solver",
    "EulerDiscreteScheduler": "euler",
}
_DEFAULT_SPACING = {"ddpm": "leading", "ddim": "leading", "dpm_solver": "linspace",
                    "euler": "linspace"}

log = logging.getLogger(__name__)


class SchedulerConfigError(ValueError):
  """A scheduler config value is unknown or not supported."""


@dataclasses.dataclass(frozen=True)
class SchedulerConfig:
  """One config for all four schedulers; fields a kind does not use are ignored by it.

  Defaults are diffusers' defaults for each class; `timestep_spacing=None` means the kind's
  diffusers default ("leading" for DDPM/DDIM, "linspace" for DPM-Solver/Euler).
  `eta` (DDIM) is a sampling option in diffusers' `step`; here it is part of the config.
  """
  kind: str = "ddim"
  num_train_timesteps: int = 1000
  beta_start: float = 0.0001
  beta_end: float = 0.02
  beta_schedule: str = "linear"
  trained_betas: tuple[float, ...] | None = None
  prediction_type: str = "epsilon"
  timestep_spacing: str | None = None
  steps_offset: int = 0
  rescale_betas_zero_snr: bool = False
  # DDPM / DDIM
  clip_sample: bool = True
  clip_sample_range: float = 1.0
  set_alpha_to_one: bool = True
  variance_type: str = "fixed_small"
  eta: float = 0.0
  # DPM-Solver++ (multistep)
  solver_order: int = 2
  solver_type: str = "midpoint"
  lower_order_final: bool = True
  euler_at_final: bool = False
  final_sigmas_type: str = "zero"
  lambda_min_clipped: float = -math.inf
  # Euler
  interpolation_type: str = "linear"

  def __post_init__(self):
    def bad(field, value, allowed):
      raise SchedulerConfigError(f"scheduler config {field}={value!r} is not supported; "
                                 f"expected one of {allowed}")
    if self.kind not in KINDS:
      bad("kind", self.kind, KINDS)
    if self.trained_betas is None and self.beta_schedule not in BETA_SCHEDULES:
      bad("beta_schedule", self.beta_schedule, BETA_SCHEDULES)
    if self.trained_betas is not None:
      object.__setattr__(self, "trained_betas", tuple(float(b) for b in self.trained_betas))
      if len(self.trained_betas) != self.num_train_timesteps:
        raise SchedulerConfigError(
            f"scheduler config trained_betas has {len(self.trained_betas)} values, expected "
            f"num_train_timesteps={self.num_train_timesteps}")
    if self.prediction_type not in PREDICTION_TYPES:
      bad("prediction_type", self.prediction_type, PREDICTION_TYPES)
    if self.timestep_spacing is None:
      object.__setattr__(self, "timestep_spacing", _DEFAULT_SPACING[self.kind])
    if self.timestep_spacing not in SPACINGS:
      bad("timestep_spacing", self.timestep_spacing, SPACINGS)
    if self.num_train_timesteps < 2:
      raise SchedulerConfigError(
          f"scheduler config num_train_timesteps must be >= 2, got {self.num_train_timesteps}")
    if self.variance_type not in ("fixed_small", "fixed_small_log", "fixed_large"):
      bad("variance_type", self.variance_type, ("fixed_small", "fixed_small_log", "fixed_large"))
    if self.solver_order not in (1, 2, 3):
      bad("solver_order", self.solver_order, (1, 2, 3))
    if self.solver_type not in ("midpoint", "heun"):
      bad("solver_type", self.solver_type, ("midpoint", "heun"))
    if self.final_sigmas_type not in ("zero", "sigma_min"):
      bad("final_sigmas_type", self.final_sigmas_type, ("zero", "sigma_min"))
    if self.interpolation_type not in ("linear", "log_linear"):
      bad("interpolation_type", self.interpolation_type, ("linear", "log_linear"))
    if self.eta < 0:
      raise SchedulerConfigError(f"scheduler config eta must be >= 0, got {self.eta}")

  @property
  def stochastic(self) -> bool:
    """Whether `step` consumes fresh Gaussian noise (then samplers pass `noise`)."""
    return self.kind == "ddpm" or (self.kind == "ddim" and self.eta > 0)

  def replace(self, **kw) -> "SchedulerConfig":
    return dataclasses.replace(self, **kw)

  def to_diffusers_config(self) -> dict[str, Any]:
    """A config dict for the matching diffusers scheduler class (`Cls.from_config(d)`)."""
    cls = {v: k for k, v in DIFFUSERS_CLASSES.items()}[self.kind]
    d: dict[str, Any] = dict(
        _class_name=cls, num_train_timesteps=self.num_train_timesteps,
        beta_start=self.beta_start, beta_end=self.beta_end, beta_schedule=self.beta_schedule,
        trained_betas=list(self.trained_betas) if self.trained_betas is not None else None,
        prediction_type=self.prediction_type, timestep_spacing=self.timestep_spacing,
        steps_offset=self.steps_offset, rescale_betas_zero_snr=self.rescale_betas_zero_snr)
    if self.kind in ("ddpm", "ddim"):
      d.update(clip_sample=self.clip_sample, clip_sample_range=self.clip_sample_range)
    if self.kind == "ddpm":
      d.update(variance_type=self.variance_type)
    if self.kind == "ddim":
      d.update(set_alpha_to_one=self.set_alpha_to_one)
    if self.kind == "dpm_solver":
      d.update(solver_order=self.solver_order, solver_type=self.solver_type,
               algorithm_type="dpmsolver++", lower_order_final=self.lower_order_final,
               euler_at_final=self.euler_at_final, final_sigmas_type=self.final_sigmas_type,
               lambda_min_clipped=self.lambda_min_clipped)
    if self.kind == "euler":
      d.update(interpolation_type=self.interpolation_type,
               final_sigmas_type=self.final_sigmas_type)
    return d


# Keys of diffusers scheduler configs that we read, per kind; values that would change the
# numerics but are not implemented raise; other keys (bookkeeping or belonging to another
# scheduler class, e.g. PNDM's `skip_prk_steps` when a pipeline's PNDM config is reused for
# DDIM, as diffusers' `from_config` allows) are listed in one warning.
_COMMON_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas",
                "prediction_type", "timestep_spacing", "steps_offset", "rescale_betas_zero_snr")
_KIND_KEYS = {
    "ddpm": ("clip_sample", "clip_sample_range", "variance_type"),
    "ddim": ("clip_sample", "clip_sample_range", "set_alpha_to_one"),
    "dpm_solver": ("solver_order", "solver_type", "lower_order_final", "euler_at_final",
                   "final_sigmas_type", "lambda_min_clipped"),
    "euler": ("interpolation_type", "final_sigmas_type"),
}
# key -> value that we support (anything else raises)
_MUST_BE = {
    "thresholding": False, "use_karras_sigmas": False, "use_exponential_sigmas": False,
    "use_beta_sigmas": False, "use_lu_lambdas": False, "use_flow_sigmas": False,
    "use_dynamic_shifting": False, "timestep_type": "discrete", "sigma_min": None,
    "sigma_max": None,
}
_IGNORED = {"_class_name", "_diffusers_version", "skip_prk_steps", "set_alpha_to_one",
            "clip_sample", "clip_sample_range", "variance_type", "sample_max_value",
            "dynamic_thresholding_ratio", "flow_shift", "time_shift_type"}


def from_diffusers_config(config: Mapping[str, Any], kind: str | None = None) -> SchedulerConfig:
  """Read a diffusers scheduler config dict (`scheduler_config.json`).

  `kind` picks the scheduler (one of KINDS); by default it comes from `_class_name`. Reusing
  another class's config with an explicit `kind` mirrors diffusers' `Cls.from_config(other)`.
  """
  config = dict(config)
  if kind is None:
    cls = config.get("_class_name")
    if cls not in DIFFUSERS_CLASSES:
      raise SchedulerConfigError(
          f"scheduler config _class_name={cls!r} is not one we implement "
          f"({sorted(DIFFUSERS_CLASSES)}); pass kind= to reuse its beta schedule with one of "
          f"{KINDS}")
    kind = DIFFUSERS_CLASSES[cls]
  if kind not in KINDS:
    raise SchedulerConfigError(f"kind={kind!r} is not one of {KINDS}")
  for key, want in _MUST_BE.items():
    v = config.get(key, want)
    if v != want and not (v is None and want in (None, False)):
      raise SchedulerConfigError(
          f"scheduler config {key}={config[key]!r} is not supported (only {want!r})")
  if kind == "dpm_solver":
    algo = config.get("algorithm_type", "dpmsolver++")
    if algo != "dpmsolver++":
      raise SchedulerConfigError(
          f"scheduler config algorithm_type={algo!r} is not supported (only 'dpmsolver++')")
    if config.get("variance_type") is not None:
      raise SchedulerConfigError(
          f"scheduler config variance_type={config['variance_type']!r} is not supported by "
          "dpm_solver (only None)")
  keys = _COMMON_KEYS + _KIND_KEYS[kind]
  kw = {k: config[k] for k in keys if k in config}
  if kw.get("trained_betas") is not None:
    kw["trained_betas"] = tuple(float(b) for b in kw["trained_betas"])
  if "lambda_min_clipped" in kw and kw["lambda_min_clipped"] is None:
    kw["lambda_min_clipped"] = -math.inf
  leftover = sorted(k for k in config if k not in keys and k not in _MUST_BE
                    and k not in _IGNORED and k != "algorithm_type")
  if leftover:
    log.warning("scheduler config keys not used by %s: %s", kind, leftover)
  return SchedulerConfig(kind=kind, **kw)


# ---------------------------------------------------------------------------------------------
# Beta schedules (numpy, diffusers' float32 arithmetic)

def torch_linspace_f32(start: float, end: float, steps: int) -> np.ndarray:
  """Bit-exact `torch.linspace(start, end, steps, dtype=torch.float32)` on CPU."""
  s, e = np.float32(start), np.float32(end)
  if steps == 1:
    return np.array([s], np.float32)
  step = (e - s) / np.float32(steps - 1)
  i = np.arange(steps)
  # torch fills the first half forward from start and the second half backward from end,
  # each with a fused multiply-add (exact product, one rounding): emulate in float64.
  fwd = np.float64(s) + np.float64(step) * i
  bwd = np.float64(e) - np.float64(step) * (steps - 1 - i)
  return np.where(i < steps // 2, fwd, bwd).astype(np.float32)


def _betas_for_alpha_bar(n: int, max_beta: float = 0.999) -> np.ndarray:
  def alpha_bar(t):
    return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
  return np.array([min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), max_beta)
                   for i in range(n)], np.float32)


def _rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
  alphas_bar_sqrt = np.sqrt(_cumprod_f32(1.0 - betas))
  a0, at = alphas_bar_sqrt[0].copy(), alphas_bar_sqrt[-1].copy()
  alphas_bar_sqrt = (alphas_bar_sqrt - at) * (a0 / (a0 - at))
  alphas_bar = alphas_bar_sqrt ** 2
  alphas = np.concatenate([alphas_bar[:1], alphas_bar[1:] / alphas_bar[:-1]])
  return (1 - alphas).astype(np.float32)


def _cumprod_f32(x: np.ndarray) -> np.ndarray:
  """torch's CPU cumprod of float32: float64 accumulator, float32 result."""
  return np.cumprod(x.astype(np.float64)).astype(np.float32)


def betas(config: SchedulerConfig) -> np.ndarray:
  """`[T]` float32 betas of the training schedule."""
  n = config.num_train_timesteps
  if config.trained_betas is not None:
    b = np.asarray(config.trained_betas, np.float32)
  elif config.beta_schedule == "linear":
    b = torch_linspace_f32(config.beta_start, config.beta_end, n)
  elif config.beta_schedule == "scaled_linear":
    b = torch_linspace_f32(config.beta_start ** 0.5, config.beta_end ** 0.5, n) ** 2
  else:
    b = _betas_for_alpha_bar(n)
  if config.rescale_betas_zero_snr:
    b = _rescale_zero_terminal_snr(b)
  return b.astype(np.float32)


def alphas_cumprod(config: SchedulerConfig) -> np.ndarray:
  """`[T]` float32 alpha-bar (cumulative product of 1 - beta)."""
  return _cumprod_f32(np.float32(1.0) - betas(config))


# ---------------------------------------------------------------------------------------------
# Timestep spacing

def check_num_steps(config: SchedulerConfig, num_inference_steps: int) -> None:
  if not isinstance(num_inference_steps, (int, np.integer)) or num_inference_steps < 1:
    raise ValueError(f"num_inference_steps must be a positive int, got {num_inference_steps!r}")
  if num_inference_steps > config.num_train_timesteps:
    raise ValueError(f"num_inference_steps={num_inference_steps} cannot exceed the scheduler's "
                     f"num_train_timesteps={config.num_train_timesteps}")


def spaced_timesteps(config: SchedulerConfig, n: int) -> np.ndarray:
  """Descending int64 timesteps as DDPM/DDIM `set_timesteps` (Euler: see `euler.py`)."""
  T = config.num_train_timesteps
  if config.timestep_spacing == "linspace":
    return np.linspace(0, T - 1, n).round()[::-1].copy().astype(np.int64)
  if config.timestep_spacing == "leading":
    ratio = T // n
    return (np.arange(0, n) * ratio).round()[::-1].copy().astype(np.int64) + config.steps_offset
  ratio = T / n
  return np.round(np.arange(T, 0, -ratio)).astype(np.int64) - 1


# ---------------------------------------------------------------------------------------------
# State and training-time helpers

@struct.dataclass
class SchedulerState:
  """Frozen per-(config, num_inference_steps) tables; a pytree of arrays plus static config.

  timesteps:        `[N]` model timesteps, descending (int32; float32 for Euler).
  alphas_cumprod:   `[T]` training alpha-bar.
  sigmas:           `[N + 1]` noise levels sqrt((1 - a) / a) of each step and the final one
                    (DPM-Solver / Euler; for DDPM/DDIM the value at each step's timestep).
  alpha_prod:       `[N]` alpha-bar at each step's timestep.
  alpha_prod_prev:  `[N]` alpha-bar of the step's target (the "previous" timestep).
  init_noise_sigma: `[]` scale of the initial Gaussian latents.
  """
  config: SchedulerConfig = struct.field(pytree_node=False)
  timesteps: jax.Array
  alphas_cumprod: jax.Array
  sigmas: jax.Array
  alpha_prod: jax.Array
  alpha_prod_prev: jax.Array
  init_noise_sigma: jax.Array

  @property
  def num_inference_steps(self) -> int:
    return int(self.timesteps.shape[0])

  @property
  def prediction_type(self) -> str:
    return self.config.prediction_type


@struct.dataclass
class NoiseSchedule:
  """The training-time forward process: `[T]` alpha-bar and the prediction type."""
  alphas_cumprod: jax.Array
  prediction_type: str = struct.field(pytree_node=False, default="epsilon")

  @property
  def num_train_timesteps(self) -> int:
    return int(self.alphas_cumprod.shape[0])


def noise_schedule(config: SchedulerConfig) -> NoiseSchedule:
  return NoiseSchedule(jnp.asarray(alphas_cumprod(config)), config.prediction_type)


def _bcast(v: jax.Array, x: jax.Array) -> jax.Array:
  """Per-example `[B]` (or scalar) values broadcast against `x` `[B, ...]`."""
  v = jnp.asarray(v, jnp.float32)
  return v.reshape(v.shape + (1,) * (x.ndim - v.ndim)).astype(x.dtype)


def q_sample(schedule, x0: jax.Array, noise: jax.Array, t: jax.Array) -> jax.Array:
  """Forward diffusion `sqrt(a_t) x0 + sqrt(1 - a_t) noise` with integer `t` `[B]` or `[]`.

  `schedule` is a `NoiseSchedule` or a `SchedulerState` (anything with `alphas_cumprod`).
  """
  a = schedule.alphas_cumprod[jnp.asarray(t, jnp.int32)]
  return _bcast(a ** 0.5, x0) * x0 + _bcast((1 - a) ** 0.5, x0) * noise


def velocity(schedule, x0: jax.Array, noise: jax.Array, t: jax.Array) -> jax.Array:
  """v-prediction target `sqrt(a_t) noise - sqrt(1 - a_t) x0`."""
  a = schedule.alphas_cumprod[jnp.asarray(t, jnp.int32)]
  return _bcast(a ** 0.5, x0) * noise - _bcast((1 - a) ** 0.5, x0) * x0


def training_target(schedule, x0: jax.Array, noise: jax.Array, t: jax.Array) -> jax.Array:
  """What the network learns to output at `t`: noise, velocity or the clean sample."""
  kind = schedule.prediction_type
  if kind == "epsilon":
    return noise
  if kind == "v_prediction":
    return velocity(schedule, x0, noise, t)
  if kind == "sample":
    return x0
  raise SchedulerConfigError(f"prediction_type {kind!r} is not one of {PREDICTION_TYPES}")


def snr(schedule, t: jax.Array) -> jax.Array:
  """Signal-to-noise ratio a_t / (1 - a_t) at integer timesteps."""
  a = schedule.alphas_cumprod[jnp.asarray(t, jnp.int32)]
  return a / (1 - a)


def min_snr_weight(schedule, t: jax.Array, gamma: float) -> jax.Array:
  """Min-SNR-gamma loss weights (Hang et al. 2023) for the schedule's prediction type.

  epsilon: min(snr, gamma) / snr; v_prediction: min(snr, gamma) / (snr + 1); sample:
  min(snr, gamma). Applied to the per-example MSE against `training_target`.
  """
  s = snr(schedule, t)
  clipped = jnp.minimum(s, gamma)
  kind = schedule.prediction_type
  if kind == "epsilon":
    return clipped / s
  if kind == "v_prediction":
    return clipped / (s + 1)
  return clipped


def predict_x0_eps(prediction_type: str, model_output, sample, alpha_prod):
  """(x0, eps) from a model output at alpha-bar `alpha_prod` (VP parameterisation)."""
  beta_prod = 1 - alpha_prod
  if prediction_type == "epsilon":
    x0 = (sample - beta_prod ** 0.5 * model_output) / alpha_prod ** 0.5
    eps = model_output
  elif prediction_type == "sample":
    x0 = model_output
    eps = (sample - alpha_prod ** 0.5 * x0) / beta_prod ** 0.5
  else:
    x0 = alpha_prod ** 0.5 * sample - beta_prod ** 0.5 * model_output
    eps = alpha_prod ** 0.5 * model_output + beta_prod ** 0.5 * sample
  return x0, eps


def check_timesteps_concrete(state: SchedulerState, t) -> None:
  """Where `t` is concrete, every value must be one of the state's timesteps."""
  if isinstance(t, jax.core.Tracer):
    return
  vals = np.atleast_1d(np.asarray(t))
  known = np.asarray(state.timesteps)
  bad = [v for v in vals.tolist() if not np.any(known == v)]
  if bad:
    raise ValueError(f"t={bad[:5]} is not among this {state.config.kind} schedule's timesteps "
                     f"{known.tolist()}")


def index_of_timestep(state: SchedulerState, t: jax.Array) -> jax.Array:
  """Step index of timestep value(s) `t` in `state.timesteps` (first match; jit-able)."""
  t = jnp.asarray(t)
  eq = state.timesteps[None, :] == jnp.atleast_1d(t).astype(state.timesteps.dtype)[:, None]
  return jnp.argmax(eq, axis=-1).reshape(t.shape)
