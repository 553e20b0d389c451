"""Schedulers against diffusers: timesteps, sigmas and whole trajectories from the same noise.

The "model" is a fixed numpy function of (sample, t) evaluated on host for both sides, so the
two trajectories differ only by the schedulers' arithmetic.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import (DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler,
                       EulerDiscreteScheduler, PNDMScheduler)
from diffusers.schedulers import scheduling_ddpm

from vitron_jax.backends.diffusion import schedulers as S

CLASSES = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler, "dpm_solver": DPMSolverMultistepScheduler,
           "euler": EulerDiscreteScheduler}
SHAPE = (2, 4, 4, 3)  # channels-last latents


def fake_model(x: np.ndarray, t: float) -> np.ndarray:
  x = x.astype(np.float32)
  return (np.tanh(x) * 0.8 + 0.1 * np.cos(0.37 * x + np.float32(t) / 250.0)).astype(np.float32)


def ours_and_theirs(kind, n, **kw):
  cfg = S.SchedulerConfig(kind=kind, **kw)
  theirs = CLASSES[kind].from_config(cfg.to_diffusers_config())
  theirs.set_timesteps(n)
  return S.make_state(cfg, n), theirs


_step = jax.jit(S.step)
_scale = jax.jit(S.scale_model_input)


def run_trajectories(kind, n, *, start=0, x0=None, **kw):
  state, theirs = ours_and_theirs(kind, n, **kw)
  rng = np.random.default_rng(0)
  noise = rng.standard_normal(SHAPE).astype(np.float32)
  step_noises = rng.standard_normal((n,) + SHAPE).astype(np.float32)
  if start == 0:
    x_ours = jnp.asarray(noise) * state.init_noise_sigma
    x_theirs = torch.from_numpy(noise) * theirs.init_noise_sigma
  else:
    t0 = theirs.timesteps[start:start + 1]
    if hasattr(theirs, "set_begin_index"):
      theirs.set_begin_index(start)
    x_theirs = theirs.add_noise(torch.from_numpy(x0), torch.from_numpy(noise), t0)
    x_ours = S.add_noise_at_index(state, jnp.asarray(x0), jnp.asarray(noise), start)
    np.testing.assert_allclose(np.asarray(x_ours), x_theirs.numpy(), atol=1e-6, rtol=1e-6)
  memory = S.init_memory(state, x_ours)
  used = iter(step_noises[start:])
  orig = scheduling_ddpm.randn_tensor
  scheduling_ddpm.randn_tensor = lambda shape, **_: torch.from_numpy(next(used))
  try:
    for i in range(start, n):
      t = theirs.timesteps[i]
      assert float(state.timesteps[i]) == float(t)
      xin_t = theirs.scale_model_input(x_theirs, t)
      xin_o = _scale(state, x_ours, i)
      np.testing.assert_allclose(np.asarray(xin_o), xin_t.numpy(), atol=1e-5, rtol=1e-5)
      out = fake_model(np.asarray(xin_o), float(t))
      x_theirs = theirs.step(torch.from_numpy(out), t, x_theirs).prev_sample
      x_ours, memory = _step(state, jnp.asarray(out), i, x_ours, memory,
                             jnp.asarray(step_noises[i]) if state.config.stochastic else None)
      np.testing.assert_allclose(np.asarray(x_ours), x_theirs.numpy(), atol=1e-5, rtol=1e-5,
                                 err_msg=f"{kind} step {i} (t={float(t)})")
  finally:
    scheduling_ddpm.randn_tensor = orig
  return x_ours


GRID = [
    # kind, spacing kwargs, steps
    ("ddpm", dict(timestep_spacing="leading", steps_offset=1), 10),
    ("ddpm", dict(timestep_spacing="trailing"), 7),
    ("ddpm", dict(timestep_spacing="linspace", beta_schedule="squaredcos_cap_v2"), 6),
    ("ddim", dict(timestep_spacing="leading", steps_offset=1), 10),
    ("ddim", dict(timestep_spacing="trailing", set_alpha_to_one=False), 7),
    ("ddim", dict(timestep_spacing="linspace", clip_sample=False), 8),
    ("dpm_solver", dict(timestep_spacing="linspace"), 10),
    ("dpm_solver", dict(timestep_spacing="leading", steps_offset=1), 9),
    ("dpm_solver", dict(timestep_spacing="trailing"), 12),
    ("euler", dict(timestep_spacing="linspace"), 10),
    ("euler", dict(timestep_spacing="leading", steps_offset=1), 9),
    ("euler", dict(timestep_spacing="trailing"), 8),
]


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("kind,kw,n", GRID, ids=[f"{k}-{kw['timestep_spacing']}" for k, kw, _ in
                                                  GRID])
def test_trajectory_matches_diffusers(kind, kw, n, prediction_type):
  kw = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012) | kw
  run_trajectories(kind, n, prediction_type=prediction_type, **kw)


@pytest.mark.parametrize("kw,n", [
    (dict(solver_order=3), 10),
    (dict(solver_order=3, lower_order_final=False), 8),
    (dict(solver_type="heun"), 10),
    (dict(final_sigmas_type="sigma_min"), 10),
    (dict(final_sigmas_type="sigma_min", euler_at_final=True), 10),
    (dict(solver_order=1), 6),
    (dict(), 20),                      # >= 15 steps: no forced lower order before the end
    (dict(prediction_type="sample", clip_sample=False), 8),
])
def test_dpm_solver_variants(kw, n):
  run_trajectories("dpm_solver", n, beta_schedule="linear", **kw)


@pytest.mark.parametrize("kind", ["ddim", "dpm_solver", "euler", "ddpm"])
def test_start_midway_matches_diffusers(kind):
  """img2img / video editing: noise a clean sample to step `start`, denoise from there."""
  x0 = np.random.default_rng(1).uniform(-1, 1, SHAPE).astype(np.float32)
  run_trajectories(kind, 10, start=4, x0=x0, beta_schedule="scaled_linear", beta_start=0.00085,
                   beta_end=0.012)


@pytest.mark.parametrize("kind", list(CLASSES))
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_timesteps_and_sigmas(kind, spacing):
  for n in (1, 3, 25, 50):
    state, theirs = ours_and_theirs(kind, n, timestep_spacing=spacing, steps_offset=1
                                    if spacing == "leading" else 0)
    np.testing.assert_array_equal(np.asarray(state.timesteps), theirs.timesteps.numpy())
    np.testing.assert_array_equal(np.asarray(state.alphas_cumprod),
                                  theirs.alphas_cumprod.numpy())
    if kind in ("dpm_solver", "euler"):
      # torch's float32 sqrt is not always correctly rounded: allow 1 ulp
      np.testing.assert_allclose(np.asarray(state.sigmas), theirs.sigmas.numpy(), rtol=2e-7)
    assert float(state.init_noise_sigma) == pytest.approx(float(theirs.init_noise_sigma),
                                                          rel=3e-7)


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "squaredcos_cap_v2"])
def test_beta_schedules_bit_exact(schedule):
  cfg = S.SchedulerConfig(kind="ddpm", beta_schedule=schedule, beta_start=0.00085, beta_end=0.012)
  theirs = DDPMScheduler.from_config(cfg.to_diffusers_config())
  np.testing.assert_array_equal(S.common.betas(cfg), theirs.betas.numpy())
  np.testing.assert_array_equal(S.common.alphas_cumprod(cfg), theirs.alphas_cumprod.numpy())
  cfg = cfg.replace(rescale_betas_zero_snr=True)
  theirs = DDPMScheduler.from_config(cfg.to_diffusers_config())
  # 1 - a_t / a_{t-1} cancels: torch's sqrt ulps show up amplified in betas
  np.testing.assert_allclose(S.common.betas(cfg), theirs.betas.numpy(), rtol=1e-4, atol=5e-7)
  np.testing.assert_allclose(S.common.alphas_cumprod(cfg), theirs.alphas_cumprod.numpy(),
                             atol=1e-6)


def test_training_helpers_match_diffusers():
  cfg = S.SchedulerConfig(kind="ddpm", beta_schedule="scaled_linear", beta_start=0.00085,
                          beta_end=0.012, prediction_type="v_prediction")
  theirs = DDPMScheduler.from_config(cfg.to_diffusers_config())
  sched = S.noise_schedule(cfg)
  rng = np.random.default_rng(3)
  x0 = rng.standard_normal(SHAPE).astype(np.float32)
  noise = rng.standard_normal(SHAPE).astype(np.float32)
  t = np.array([3, 997])
  want = theirs.add_noise(torch.from_numpy(x0), torch.from_numpy(noise), torch.from_numpy(t))
  np.testing.assert_allclose(np.asarray(S.q_sample(sched, x0, noise, t)), want.numpy(),
                             atol=1e-6)
  want_v = theirs.get_velocity(torch.from_numpy(x0), torch.from_numpy(noise), torch.from_numpy(t))
  np.testing.assert_allclose(np.asarray(S.training_target(sched, x0, noise, t)), want_v.numpy(),
                             atol=1e-6)
  eps_sched = S.noise_schedule(cfg.replace(prediction_type="epsilon"))
  np.testing.assert_array_equal(np.asarray(S.training_target(eps_sched, x0, noise, t)), noise)
  x0_sched = S.noise_schedule(cfg.replace(prediction_type="sample"))
  np.testing.assert_array_equal(np.asarray(S.training_target(x0_sched, x0, noise, t)), x0)
  # min-SNR-gamma weights
  ac = theirs.alphas_cumprod.numpy()[t]
  snr = ac / (1 - ac)
  np.testing.assert_allclose(np.asarray(S.min_snr_weight(eps_sched, t, 5.0)),
                             np.minimum(snr, 5.0) / snr, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(S.min_snr_weight(sched, t, 5.0)),
                             np.minimum(snr, 5.0) / (snr + 1), rtol=1e-6)


@pytest.mark.parametrize("kind", list(CLASSES))
def test_add_noise_matches_diffusers(kind):
  state, theirs = ours_and_theirs(kind, 10, beta_schedule="scaled_linear", beta_start=0.00085,
                                  beta_end=0.012)
  rng = np.random.default_rng(4)
  x0 = rng.standard_normal(SHAPE).astype(np.float32)
  noise = rng.standard_normal(SHAPE).astype(np.float32)
  t = theirs.timesteps[[2, 7]]
  want = theirs.add_noise(torch.from_numpy(x0), torch.from_numpy(noise), t)
  got = S.add_noise(state, jnp.asarray(x0), jnp.asarray(noise), jnp.asarray(t.numpy()))
  np.testing.assert_allclose(np.asarray(got), want.numpy(), atol=1e-6, rtol=1e-6)


def test_from_diffusers_config_roundtrip_and_reuse():
  for kind, cls in CLASSES.items():
    theirs = cls(beta_schedule="scaled_linear", prediction_type="v_prediction",
                 timestep_spacing="trailing")
    cfg = S.from_diffusers_config(dict(theirs.config, _class_name=cls.__name__))
    assert cfg.kind == kind and cfg.prediction_type == "v_prediction"
    assert cfg.timestep_spacing == "trailing" and cfg.beta_schedule == "scaled_linear"
  # SD-1.x ships a PNDM config; reuse its beta schedule for DDIM like diffusers' from_config
  pndm = dict(PNDMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                            skip_prk_steps=True, steps_offset=1).config,
              _class_name="PNDMScheduler")
  with pytest.raises(S.SchedulerConfigError, match="_class_name='PNDMScheduler'"):
    S.from_diffusers_config(pndm)
  cfg = S.from_diffusers_config(pndm, kind="ddim")
  theirs = DDIMScheduler.from_config(pndm)
  theirs.set_timesteps(20)
  np.testing.assert_array_equal(np.asarray(S.make_state(cfg, 20).timesteps),
                                theirs.timesteps.numpy())


ZEROSCOPE = {  # damo-vilab / cerspense zeroscope scheduler_config.json
    "_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "dpmsolver++",
    "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
    "clip_sample": False, "dynamic_thresholding_ratio": 0.995, "lower_order_final": True,
    "num_train_timesteps": 1000, "prediction_type": "epsilon", "sample_max_value": 1.0,
    "set_alpha_to_one": False, "skip_prk_steps": True, "solver_order": 2,
    "solver_type": "midpoint", "steps_offset": 1, "thresholding": False, "trained_betas": None}
I2VGEN = {  # ali-vilab/i2vgen-xl scheduler_config.json
    "_class_name": "DDIMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "beta_start": 0.00085, "clip_sample": False, "num_train_timesteps": 1000,
    "prediction_type": "v_prediction", "rescale_betas_zero_snr": True, "set_alpha_to_one": True,
    "steps_offset": 1, "thresholding": False, "timestep_spacing": "trailing"}


@pytest.mark.parametrize("config", [ZEROSCOPE, I2VGEN], ids=["zeroscope", "i2vgen"])
def test_released_backend_configs(config, caplog):
  cfg = S.from_diffusers_config(config)
  assert not [r for r in caplog.records if "not used" in r.getMessage()]
  kw = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "kind"}
  run_trajectories(cfg.kind, 12, **kw)


def test_state_is_a_pytree_and_jits():
  state = S.make_state(S.SchedulerConfig(kind="dpm_solver"), 5)
  leaves = jax.tree_util.tree_leaves(state)
  assert all(isinstance(x, jax.Array) for x in leaves)
  x = jnp.ones(SHAPE)
  mem = S.init_memory(state, x)

  def body(carry, i):
    x, mem = carry
    x, mem = S.step(state, 0.1 * x, i, x, mem)
    return (x, mem), None
  (x, mem), _ = jax.lax.scan(body, (x, mem), jnp.arange(5))
  assert np.isfinite(np.asarray(x)).all() and int(mem["lower_order_nums"]) == 2


# --------------------------------------------------------------------------------------------
# Bad input

def test_bad_configs_name_the_field():
  with pytest.raises(S.SchedulerConfigError, match="prediction_type='flow'"):
    S.SchedulerConfig(prediction_type="flow")
  with pytest.raises(S.SchedulerConfigError, match="beta_schedule='sigmoid'"):
    S.SchedulerConfig(beta_schedule="sigmoid")
  with pytest.raises(S.SchedulerConfigError, match="timestep_spacing='even'"):
    S.SchedulerConfig(timestep_spacing="even")
  with pytest.raises(S.SchedulerConfigError, match="kind='pndm'"):
    S.SchedulerConfig(kind="pndm")
  with pytest.raises(S.SchedulerConfigError, match="trained_betas has 3 values"):
    S.SchedulerConfig(trained_betas=(0.1, 0.2, 0.3))
  with pytest.raises(S.SchedulerConfigError, match="thresholding=True"):
    S.from_diffusers_config(dict(DDPMScheduler(thresholding=True).config,
                                 _class_name="DDPMScheduler"))
  with pytest.raises(S.SchedulerConfigError, match="use_karras_sigmas=True"):
    S.from_diffusers_config(dict(EulerDiscreteScheduler(use_karras_sigmas=True).config,
                                 _class_name="EulerDiscreteScheduler"))
  with pytest.raises(S.SchedulerConfigError, match="algorithm_type='sde-dpmsolver\\+\\+'"):
    S.from_diffusers_config({"_class_name": "DPMSolverMultistepScheduler",
                             "algorithm_type": "sde-dpmsolver++"})


def test_bad_steps_and_timesteps():
  cfg = S.SchedulerConfig(kind="ddim", num_train_timesteps=100)
  with pytest.raises(ValueError, match="num_inference_steps=101 cannot exceed"):
    S.make_state(cfg, 101)
  with pytest.raises(ValueError, match="num_inference_steps must be a positive int"):
    S.make_state(cfg, 0)
  with pytest.raises(ValueError, match="outside"):
    S.make_state(cfg.replace(steps_offset=50), 2)
  state = S.make_state(cfg.replace(kind="euler"), 4)
  with pytest.raises(ValueError, match="t=\\[5.0\\] is not among"):
    S.add_noise(state, jnp.zeros(SHAPE), jnp.zeros(SHAPE), jnp.array([5.0]))
  ddpm = S.make_state(cfg.replace(kind="ddpm"), 4)
  with pytest.raises(ValueError, match="ddpm step needs `noise`"):
    S.step(ddpm, jnp.zeros(SHAPE), 0, jnp.zeros(SHAPE), {})
