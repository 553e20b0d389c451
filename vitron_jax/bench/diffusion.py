"""Diffusion benchmark: our Flax UNet2D + compiled sampler vs diffusers PyTorch, side by side.

    python -m vitron_jax.bench.diffusion                    # default small SD-shaped UNet
    python -m vitron_jax.bench.diffusion --channels 64,128,256,256 --latent 32 --steps 20

Builds one random diffusers `UNet2DConditionModel` with SD-1.x's block layout (3 cross-attn
down blocks + a plain one, mirrored up blocks, 2 layers per block) at a reduced width, converts
its weights to ours, and times, in fp32 on this machine:
* one UNet call on a classifier-free-guidance batch (2 x batch latents), ours jitted;
* a whole guided sample with DPM-Solver++(2M) (`--steps` steps): ours one `jit` (a `lax.scan`
  over the steps), diffusers' scheduler loop around the PyTorch UNet.
Our compile time is printed separately; timed runs exclude it. The two samplers start from the
same noise, so the max difference of their final latents is printed too.
Wall-clock figures on a shared CPU are noisy; this is a script, never a test.
"""
from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--channels", default="32,64,128,128", help="block_out_channels")
  p.add_argument("--layers_per_block", type=int, default=2)
  p.add_argument("--heads", type=int, default=8, help="attention_head_dim (heads per block)")
  p.add_argument("--cross_dim", type=int, default=256)
  p.add_argument("--tokens", type=int, default=77)
  p.add_argument("--latent", type=int, default=32, help="latent height = width")
  p.add_argument("--batch", type=int, default=1)
  p.add_argument("--steps", type=int, default=20)
  p.add_argument("--repeats", type=int, default=3, help="timed repeats of the single step")
  p.add_argument("--sample_repeats", type=int, default=1)
  p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
  p.add_argument("--skip_torch", action="store_true")
  return p.parse_args(argv)


def _time(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def main(argv=None) -> None:
  import torch
  from diffusers import DPMSolverMultistepScheduler, UNet2DConditionModel as TorchUNet

  from vitron_jax.backends.diffusion import sampling
  from vitron_jax.backends.diffusion import schedulers as S
  from vitron_jax.backends.diffusion.unet2d import (UNet2DConditionConfig,
                                                    UNet2DConditionModel, unet2d_init_inputs)
  from vitron_jax.convert.diffusers import expected_flax_shapes, params_from_diffusers

  a = parse_args(argv)
  if a.threads:
    torch.set_num_threads(a.threads)
  channels = tuple(int(c) for c in a.channels.split(","))
  n = len(channels)
  cfg_dict = dict(
      sample_size=a.latent, in_channels=4, out_channels=4, block_out_channels=channels,
      layers_per_block=a.layers_per_block, cross_attention_dim=a.cross_dim,
      attention_head_dim=a.heads, norm_num_groups=min(32, channels[0]),
      down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
      up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1))
  torch.manual_seed(0)
  ref = TorchUNet(**cfg_dict).eval()
  cfg = UNet2DConditionConfig.from_diffusers(dict(ref.config))
  model = UNet2DConditionModel(cfg)
  params = params_from_diffusers({k: v.numpy() for k, v in ref.state_dict().items()},
                                 expected_flax_shapes(model, *unet2d_init_inputs(cfg)), "bench")
  n_params = sum(p.numel() for p in ref.parameters())
  sched = S.SchedulerConfig(kind="dpm_solver", beta_schedule="scaled_linear",
                            beta_start=0.00085, beta_end=0.012, steps_offset=1)

  rng = np.random.default_rng(0)
  b = a.batch
  noise = rng.standard_normal((b, a.latent, a.latent, 4)).astype(np.float32)
  cond = rng.standard_normal((b, a.tokens, a.cross_dim)).astype(np.float32)
  uncond = rng.standard_normal((b, a.tokens, a.cross_dim)).astype(np.float32)
  x2 = np.concatenate([noise, noise])
  c2 = np.concatenate([uncond, cond])
  t2 = np.full((2 * b,), 999, np.int32)
  guidance = 7.5

  print(f"UNet2D {channels} x{a.layers_per_block} layers/block, {n_params / 1e6:.1f}M params, "
        f"latents {2 * b}x{a.latent}x{a.latent}x4 (CFG batch), context {a.tokens}x{a.cross_dim},"
        f" fp32, jax {jax.__version__} on {jax.devices()[0].platform}, torch {torch.__version__}"
        f" ({torch.get_num_threads()} threads)")

  # ---- one UNet call
  step = jax.jit(lambda p, x, t, c: model.apply(p, x, t, c))
  t0 = time.perf_counter()
  step.lower(params, x2, t2, c2).compile()
  compile_step = time.perf_counter() - t0
  step(params, x2, t2, c2).block_until_ready()
  ours_step = _time(lambda: step(params, x2, t2, c2).block_until_ready(), a.repeats)

  # ---- whole sample
  state = S.make_state(sched, a.steps)

  def eps_fn(p, x, t, c):
    return model.apply(p, x, t, c)

  @jax.jit
  def sample(p, noise, cond, uncond):
    x = sampling.initial_latents(state, noise)
    return sampling.denoise(eps_fn, p, state, x, cond, uncond_condition=uncond,
                            guidance_scale=guidance)
  t0 = time.perf_counter()
  sample.lower(params, noise, cond, uncond).compile()
  compile_sample = time.perf_counter() - t0
  ours_lat = np.asarray(sample(params, noise, cond, uncond))
  ours_sample = _time(lambda: sample(params, noise, cond, uncond).block_until_ready(),
                      a.sample_repeats)

  rows = [("compile: one step (s)", compile_step, None),
          ("compile: whole sample (s)", compile_sample, None)]
  if a.skip_torch:
    rows += [("one UNet step (s)", ours_step, None),
             (f"{a.steps}-step guided sample (s)", ours_sample, None)]
  else:
    tx, tt, tc = (torch.from_numpy(x2).permute(0, 3, 1, 2), torch.from_numpy(t2).long(),
                  torch.from_numpy(c2))
    with torch.no_grad():
      ref(tx, tt, tc)
      torch_step = _time(lambda: ref(tx, tt, tc), a.repeats)
    theirs = DPMSolverMultistepScheduler.from_config(sched.to_diffusers_config())

    def torch_sample():
      theirs.set_timesteps(a.steps)
      x = torch.from_numpy(noise).permute(0, 3, 1, 2) * theirs.init_noise_sigma
      ctx = torch.from_numpy(c2)
      with torch.no_grad():
        for t in theirs.timesteps:
          xin = theirs.scale_model_input(torch.cat([x, x]), t)
          out = ref(xin, t, ctx).sample
          u, c = out.chunk(2)
          x = theirs.step(u + guidance * (c - u), t, x).prev_sample
      return x
    torch_lat = torch_sample().permute(0, 2, 3, 1).numpy()
    torch_sample_t = _time(torch_sample, a.sample_repeats)
    rows += [("one UNet step (s)", ours_step, torch_step),
             (f"{a.steps}-step guided sample (s)", ours_sample, torch_sample_t)]
    diff = float(np.abs(ours_lat - torch_lat).max())

  print(f"{'':32s} {'ours (jax)':>12s} {'diffusers':>12s} {'torch/ours':>11s}")
  for name, ours, torch_t in rows:
    if torch_t is None:
      print(f"{name:32s} {ours:12.3f} {'':>12s}")
    else:
      print(f"{name:32s} {ours:12.3f} {torch_t:12.3f} {torch_t / ours:10.2f}x")
  if not a.skip_torch:
    print(f"max |latents ours - diffusers| after {a.steps} steps: {diff:.2e}")


if __name__ == "__main__":
  main()
