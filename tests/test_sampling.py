"""The compiled sampler against a diffusers-style Python loop with the same fake denoiser."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

from vitron_jax.backends.diffusion import sampling
from vitron_jax.backends.diffusion import schedulers as S

B, H, W, C, L, D = 2, 4, 4, 3, 5, 6
CLASSES = {"ddim": DDIMScheduler, "dpm_solver": DPMSolverMultistepScheduler,
           "euler": EulerDiscreteScheduler}


def fake_eps_np(x, t, cond, gain=None):
  """numpy twin of `fake_eps`; x [B, ..., C], t [B], cond [B, L, D]."""
  shape = (-1,) + (1,) * (x.ndim - 1)
  c = cond.mean(axis=(1, 2)).reshape(shape)
  out = np.tanh(x[..., :C]) * 0.8 + 0.1 * np.cos(0.37 * x[..., :C] + t.reshape(shape) / 250.0)
  out = out + 0.05 * c + 0.02 * x[..., C:].sum(-1, keepdims=True)
  if gain is not None:
    out = out * gain.reshape(shape)
  return out.astype(np.float32)


def fake_eps(params, x, t, cond, gain=None):
  shape = (-1,) + (1,) * (x.ndim - 1)
  c = cond.mean(axis=(1, 2)).reshape(shape)
  out = jnp.tanh(x[..., :C]) * 0.8 + 0.1 * jnp.cos(0.37 * x[..., :C] + t.reshape(shape) / 250.0)
  out = out + 0.05 * c + 0.02 * x[..., C:].sum(-1, keepdims=True)
  if gain is not None:
    out = out * gain.reshape(shape)
  return out * params["scale"]


def setup(kind, n, **kw):
  cfg = S.SchedulerConfig(kind=kind, beta_schedule="scaled_linear", beta_start=0.00085,
                          beta_end=0.012, **kw)
  theirs = CLASSES[kind].from_config(cfg.to_diffusers_config())
  theirs.set_timesteps(n)
  return S.make_state(cfg, n), theirs


def inputs(seed=0, video=False):
  rng = np.random.default_rng(seed)
  shape = (B, 3, H, W, C) if video else (B, H, W, C)
  noise = rng.standard_normal(shape).astype(np.float32)
  cond = rng.standard_normal((B, L, D)).astype(np.float32)
  uncond = rng.standard_normal((B, L, D)).astype(np.float32)
  return noise, cond, uncond


def reference_loop(theirs, noise, cond, uncond, g, *, start=0, x_start=None):
  """StableDiffusionPipeline's loop with numpy model calls."""
  x = torch.from_numpy(noise) * theirs.init_noise_sigma if x_start is None else x_start
  for t in theirs.timesteps[start:]:
    xin = theirs.scale_model_input(torch.cat([x, x]), t).numpy()
    tt = np.full((2 * B,), float(t), np.float32)
    out = fake_eps_np(xin, tt, np.concatenate([uncond, cond]))
    u, c = np.split(out, 2)
    out = u + g * (c - u)
    x = theirs.step(torch.from_numpy(out), t, x).prev_sample
  return x.numpy()


PARAMS = {"scale": jnp.float32(1.0)}


@pytest.mark.parametrize("kind", list(CLASSES))
@pytest.mark.parametrize("video", [False, True])
def test_guided_sampling_matches_reference_loop(kind, video):
  state, theirs = setup(kind, 8)
  noise, cond, uncond = inputs(video=video)
  run = jax.jit(lambda p, x, c, u: sampling.denoise(fake_eps, p, state, x, c,
                                                      uncond_condition=u, guidance_scale=7.5))
  got = run(PARAMS, sampling.initial_latents(state, jnp.asarray(noise)), cond, uncond)
  want = reference_loop(theirs, noise, cond, uncond, 7.5)
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-5, rtol=1e-5)


def test_guidance_is_one_batched_model_call():
  state, _ = setup("ddim", 6)
  noise, cond, uncond = inputs()
  seen = []

  def counting_eps(params, x, t, c, **kw):
    seen.append((x.shape[0], c.shape[0], t.shape))
    return fake_eps(params, x, t, c, **kw)
  jax.jit(lambda x: sampling.denoise(counting_eps, PARAMS, state, x, cond,
                                     uncond_condition=uncond, guidance_scale=3.0))(noise)
  assert seen == [(2 * B, 2 * B, (2 * B,))]  # traced once (scan), one call with both branches


def test_progress_chunks_match_single_scan_and_report():
  state, _ = setup("dpm_solver", 10)
  noise, cond, uncond = inputs()
  x = sampling.initial_latents(state, jnp.asarray(noise))
  one = sampling.denoise(fake_eps, PARAMS, state, x, cond, uncond_condition=uncond,
                         guidance_scale=5.0)
  reports = []
  chunked = sampling.denoise(fake_eps, PARAMS, state, x, cond, uncond_condition=uncond,
                             guidance_scale=5.0, progress=lambda d, n: reports.append((d, n)),
                             chunk_size=3)
  np.testing.assert_allclose(np.asarray(chunked), np.asarray(one), atol=1e-6)
  assert reports == [(3, 10), (6, 10), (9, 10), (10, 10)]


def test_stochastic_sampler_is_reproducible_across_chunking():
  cfg = S.SchedulerConfig(kind="ddpm")
  state = S.make_state(cfg, 6)
  noise, cond, _ = inputs()
  rng = jax.random.key(7)
  a = sampling.denoise(fake_eps, PARAMS, state, jnp.asarray(noise), cond, rng=rng)
  b = sampling.denoise(fake_eps, PARAMS, state, jnp.asarray(noise), cond, rng=rng,
                       progress=lambda *_: None, chunk_size=4)
  c = sampling.denoise(fake_eps, PARAMS, state, jnp.asarray(noise), cond,
                       rng=jax.random.key(8))
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
  assert np.abs(np.asarray(a) - np.asarray(c)).max() > 1e-3


@pytest.mark.parametrize("kind", ["ddim", "dpm_solver", "euler"])
def test_strength_start_matches_reference(kind):
  """Video/image editing: noise clean latents to the strength's first step, then denoise."""
  n, strength = 10, 0.6
  state, theirs = setup(kind, n)
  start = sampling.start_index_for_strength(n, strength)
  assert start == 4
  noise, cond, uncond = inputs(video=True)
  x0 = np.random.default_rng(5).uniform(-1, 1, noise.shape).astype(np.float32)
  if hasattr(theirs, "set_begin_index"):
    theirs.set_begin_index(start)
  t0 = theirs.timesteps[start:start + 1].repeat(B)
  x_start = theirs.add_noise(torch.from_numpy(x0), torch.from_numpy(noise), t0)
  want = reference_loop(theirs, noise, cond, uncond, 9.0, start=start, x_start=x_start)
  xs = S.add_noise_at_index(state, jnp.asarray(x0), jnp.asarray(noise), start)
  got = sampling.denoise(fake_eps, PARAMS, state, xs, cond, uncond_condition=uncond,
                         guidance_scale=9.0, start_index=start)
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-5, rtol=1e-5)


def test_hooks_extras_fn_concat_and_blend():
  """extras (with separate uncond values), a per-step switch, extra input channels and a
  per-step blend, against the same logic written as a Python loop."""
  state, theirs = setup("ddim", 6)
  noise, cond, uncond = inputs()
  extra_ch = np.random.default_rng(2).standard_normal((B, H, W, 2)).astype(np.float32)
  gain_c, gain_u = np.array([1.5, 0.5], np.float32), np.array([1.0, 1.0], np.float32)
  known = np.random.default_rng(3).standard_normal((B, H, W, C)).astype(np.float32)
  mask = np.zeros((1, H, W, 1), np.float32)
  mask[:, :2] = 1

  def extras_fn(i, ex):  # gain only for the first 2 steps
    return {"gain": jnp.where(i < 2, ex["gain"], 1.0)}

  def blend(i, x, key):
    return mask * known + (1 - mask) * x

  got = sampling.denoise(fake_eps, PARAMS, state, jnp.asarray(noise), cond,
                         uncond_condition=uncond, guidance_scale=4.0,
                         extras={"gain": gain_c}, uncond_extras={"gain": gain_u},
                         extras_fn=extras_fn, concat_latents=jnp.asarray(extra_ch), blend=blend,
                         rng=jax.random.key(0))
  x = torch.from_numpy(noise)
  for i, t in enumerate(theirs.timesteps):
    x = torch.from_numpy(mask * known + (1 - mask) * x.numpy())
    xin = np.concatenate([np.concatenate([x.numpy()] * 2), np.concatenate([extra_ch] * 2)], -1)
    gain = np.concatenate([gain_u, gain_c]) if i < 2 else np.ones(2 * B, np.float32)
    out = fake_eps_np(xin, np.full(2 * B, float(t), np.float32), np.concatenate([uncond, cond]),
                      gain)
    u, c = np.split(out, 2)
    x = theirs.step(torch.from_numpy(u + 4.0 * (c - u)), t, x).prev_sample
  np.testing.assert_allclose(np.asarray(got), x.numpy(), atol=1e-5, rtol=1e-5)


def test_bad_inputs_name_the_input():
  state, _ = setup("ddim", 4)
  noise, cond, uncond = inputs()
  x = jnp.asarray(noise)
  with pytest.raises(ValueError, match="condition must be \\[batch=2"):
    sampling.denoise(fake_eps, PARAMS, state, x, cond[:1])
  with pytest.raises(ValueError, match="uncond_condition must have the condition's shape"):
    sampling.denoise(fake_eps, PARAMS, state, x, cond, uncond_condition=uncond[:, :2])
  with pytest.raises(ValueError, match="start_index must be an int in \\[0, 4\\)"):
    sampling.denoise(fake_eps, PARAMS, state, x, cond, start_index=4)
  with pytest.raises(ValueError, match="extras\\['gain'\\] must have a leading batch axis of 2"):
    sampling.denoise(fake_eps, PARAMS, state, x, cond, extras={"gain": jnp.ones(3)})
  with pytest.raises(ValueError, match="concat_latents must match latents"):
    sampling.denoise(fake_eps, PARAMS, state, x, cond, concat_latents=jnp.ones((B, 2, 2, 1)))
  ddpm = S.make_state(S.SchedulerConfig(kind="ddpm"), 4)
  with pytest.raises(ValueError, match="rng is required"):
    sampling.denoise(fake_eps, PARAMS, ddpm, x, cond)
  with pytest.raises(ValueError, match="strength must be in \\[0, 1\\]"):
    sampling.start_index_for_strength(10, 1.5)
  with pytest.raises(ValueError, match="leaves no denoising step"):
    sampling.start_index_for_strength(10, 0.05)
  with pytest.raises(ValueError, match="cannot be used inside jit"):
    jax.jit(lambda x: sampling.denoise(fake_eps, PARAMS, state, x, cond, progress=True))(x)
  with pytest.raises(ValueError, match="eps_fn returned shape"):
    sampling.denoise(lambda p, x, t, c: x[..., :1], PARAMS, state, x, cond)
