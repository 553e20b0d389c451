"""Compiled samplers: the whole denoising loop is one `lax.scan` over scheduler steps.

The denoiser is any callable

    eps_fn(params, latents, t, condition, **extras) -> model_output

with channels-last `latents` `[B, h, w, c]` (images) or `[B, T, h, w, c]` (videos), `t` `[B]`
timesteps (int32, or float32 for Euler), `condition` `[B, L, D]`, and keyword `extras` (pytrees
whose array leaves have a leading batch axis, e.g. `gligen=GligenInputs(...)`, `fps=[B]`).
The output has the latents' shape (its parameterisation is the scheduler's prediction type).

Classifier-free guidance runs the unconditional and conditional branches in ONE model call:
latents, conditions and extras are concatenated `[uncond; cond]` along the batch, the output
split, and `out = u + g * (c - u)` (diffusers' order).

Progress is reported outside jit: with `progress=True` (or a callable `progress(done, total)`)
the scan runs in chunks of `chunk_size` steps from a host loop (each chunk one jitted call, no
host callbacks inside the compiled program) and a line is printed / the callable is called
between chunks. The default (`progress=False`) is a single scan with no host interaction, usable
inside an outer `jit` (the pipelines jit text encoding, sampling and decoding as one program).
Chunked mode traces one function per call (it compiles at most two chunk shapes).
"""
from __future__ import annotations

import sys
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from vitron_jax.backends.diffusion import schedulers as S
from vitron_jax.backends.diffusion.schedulers import SchedulerState

EpsFn = Callable[..., jax.Array]
ExtrasFn = Callable[[jax.Array, dict], dict]
BlendFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def initial_latents(state: SchedulerState, noise: jax.Array) -> jax.Array:
  """Pure-noise start: standard normal `noise` scaled by the scheduler's `init_noise_sigma`."""
  return noise * state.init_noise_sigma.astype(noise.dtype)


def start_index_for_strength(num_inference_steps: int, strength: float) -> int:
  """First step when only the last `strength` fraction of the schedule is run (diffusers'
  img2img `get_timesteps`): `N - min(int(N * strength), N)`."""
  if not 0.0 <= strength <= 1.0:
    raise ValueError(f"strength must be in [0, 1], got {strength}")
  init = min(int(num_inference_steps * strength), num_inference_steps)
  start = max(num_inference_steps - init, 0)
  if start >= num_inference_steps:
    raise ValueError(f"strength={strength} with num_inference_steps={num_inference_steps} "
                     "leaves no denoising step; raise strength or the number of steps")
  return start


def _concat_batch(a, b):
  return jax.tree_util.tree_map(lambda u, c: jnp.concatenate([u, c], axis=0), a, b)


def _check_tree_batch(tree, batch: int, name: str) -> None:
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    shape = getattr(leaf, "shape", ())
    if len(shape) == 0 or shape[0] != batch:
      raise ValueError(f"{name}{jax.tree_util.keystr(path)} must have a leading batch axis of "
                       f"{batch} (to be split for guidance), got shape {tuple(shape)}")


def denoise(eps_fn: EpsFn, params: Any, state: SchedulerState, latents: jax.Array,
            condition: jax.Array, *, uncond_condition: jax.Array | None = None,
            guidance_scale: float | jax.Array = 1.0, extras: Mapping[str, Any] | None = None,
            uncond_extras: Mapping[str, Any] | None = None,
            extras_fn: ExtrasFn | None = None, concat_latents: jax.Array | None = None,
            blend: BlendFn | None = None, rng: jax.Array | None = None, start_index: int = 0,
            progress: bool | Callable[[int, int], None] = False,
            chunk_size: int | None = None) -> jax.Array:
  """Run scheduler steps `start_index .. N-1` from `latents`; returns the final latents.

  Args:
    eps_fn: the denoiser (see module docstring).
    params: its parameters (passed through unchanged).
    state: `schedulers.make_state(config, N)`.
    latents: `[B, ...spatial, c]` start sample, already at step `start_index`'s noise level
      (`initial_latents(state, noise)` or `schedulers.add_noise_at_index(...)`).
    condition: `[B, L, D]` conditional context.
    uncond_condition: `[B, L, D]` unconditional context; given => classifier-free guidance.
    guidance_scale: scalar or `[B]`; may be traced.
    extras: keyword inputs of `eps_fn` for the conditional branch (batched pytrees).
    uncond_extras: the same for the unconditional branch (default: `extras`).
    extras_fn: `(step_index, extras) -> extras` applied inside the scan (e.g. GLIGEN's
      scheduled sampling switching grounding off after a fraction of the steps).
    concat_latents: `[B, ...spatial, k]` channels appended to the (scaled) model input at every
      step (inpainting masks and masked-image latents).
    blend: `(step_index, latents, key) -> latents` applied before the model at every step
      (e.g. re-imposing the known region of an inpainting at the current noise level).
    rng: PRNG key; required for stochastic schedulers and for `blend`. Step `i` uses
      `fold_in(rng, i)`, so results do not depend on chunking.
    start_index: first step (static Python int).
    progress, chunk_size: host-side progress (see module docstring).
  """
  n = state.num_inference_steps
  if not isinstance(start_index, int) or not 0 <= start_index < n:
    raise ValueError(f"start_index must be an int in [0, {n}), got {start_index!r}")
  if latents.ndim < 3:
    raise ValueError(f"latents must be channels-last [B, ..., C], got shape {latents.shape}")
  batch = latents.shape[0]
  if condition.ndim != 3 or condition.shape[0] != batch:
    raise ValueError(f"condition must be [batch={batch}, tokens, width], got "
                     f"{tuple(condition.shape)}")
  cfg = uncond_condition is not None
  if cfg and uncond_condition.shape != condition.shape:
    raise ValueError(f"uncond_condition must have the condition's shape {tuple(condition.shape)}"
                     f", got {tuple(uncond_condition.shape)}")
  needs_rng = state.config.stochastic or blend is not None
  if needs_rng and rng is None:
    raise ValueError(f"rng is required (scheduler {state.config.kind!r} stochastic="
                     f"{state.config.stochastic}, blend={'set' if blend else 'none'})")
  if concat_latents is not None and concat_latents.shape[:-1] != latents.shape[:-1]:
    raise ValueError(f"concat_latents must match latents {tuple(latents.shape[:-1])} except in "
                     f"channels, got {tuple(concat_latents.shape)}")
  extras = dict(extras or {})
  _check_tree_batch(extras, batch, "extras")
  if cfg:
    unc = dict(extras if uncond_extras is None else uncond_extras)
    _check_tree_batch(unc, batch, "uncond_extras")
    if jax.tree_util.tree_structure(unc) != jax.tree_util.tree_structure(extras):
      raise ValueError("uncond_extras must have the same structure as extras")
    extras = _concat_batch(unc, extras)
    condition = jnp.concatenate([uncond_condition, condition], axis=0)
    if concat_latents is not None:
      concat_latents = jnp.concatenate([concat_latents] * 2, axis=0)
  rng = jax.random.key(0) if rng is None else rng
  guidance = jnp.asarray(guidance_scale, jnp.float32)

  def run_steps(params, state, x, memory, condition, extras, concat_latents, guidance, rng,
                indices):
    def body(carry, i):
      x, memory = carry
      key = jax.random.fold_in(rng, i)
      k_blend, k_step = jax.random.split(key)
      if blend is not None:
        x = blend(i, x, k_blend)
      x_in = jnp.concatenate([x, x], axis=0) if cfg else x
      x_in = S.scale_model_input(state, x_in, i)
      if concat_latents is not None:
        x_in = jnp.concatenate([x_in, concat_latents.astype(x_in.dtype)], axis=-1)
      t = jnp.broadcast_to(state.timesteps[i], (x_in.shape[0],))
      ex = extras_fn(i, extras) if extras_fn is not None else extras
      out = eps_fn(params, x_in, t, condition, **ex)
      if out.shape != x_in.shape[:-1] + x.shape[-1:]:
        raise ValueError(f"eps_fn returned shape {out.shape}, expected "
                         f"{x_in.shape[:-1] + x.shape[-1:]}")
      if cfg:
        u, c = jnp.split(out, 2, axis=0)
        g = guidance.reshape(guidance.shape + (1,) * (u.ndim - guidance.ndim)) \
            if guidance.ndim else guidance
        out = u + g.astype(u.dtype) * (c - u)
      noise = (jax.random.normal(k_step, x.shape, jnp.float32)
               if state.config.stochastic else None)
      x, memory = S.step(state, out, i, x, memory, noise)
      return (x, memory), None
    (x, memory), _ = jax.lax.scan(body, (x, memory), indices)
    return x, memory

  memory = S.init_memory(state, latents)
  args = (condition, extras, concat_latents, guidance, rng)
  if not progress:
    x, _ = run_steps(params, state, latents, memory, *args, jnp.arange(start_index, n))
    return x
  if isinstance(latents, jax.core.Tracer):
    raise ValueError("progress reporting runs the steps from a host loop and cannot be used "
                     "inside jit; call denoise outside jit or set progress=False")
  report = progress if callable(progress) else _print_progress
  total = n - start_index
  chunk = chunk_size or max(1, total // 10)
  jitted = jax.jit(run_steps)
  x = latents
  for lo in range(start_index, n, chunk):
    hi = min(lo + chunk, n)
    x, memory = jitted(params, state, x, memory, *args, jnp.arange(lo, hi))
    jax.block_until_ready(x)
    report(hi - start_index, total)
  return x


def _print_progress(done: int, total: int) -> None:
  width = 30
  filled = int(width * done / total)
  sys.stderr.write(f"\rdenoising [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
  if done == total:
    sys.stderr.write("\n")
  sys.stderr.flush()
