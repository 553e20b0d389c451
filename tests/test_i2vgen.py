"""I2VGenXLUNet parity with diffusers (image latents, image embedding context, fps), fp32."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import I2VGenXLUNet as TorchI2VGen

from vitron_jax.backends.diffusion.i2vgen import (I2VGenXLConfig, I2VGenXLUNet,
                                                  i2vgen_init_inputs, image_latents_for_frames)
from vitron_jax.convert.diffusers import expected_flax_shapes, params_from_diffusers

TOL = 1e-4

CONFIGS = {
    "two_blocks": dict(sample_size=16, block_out_channels=(32, 64), layers_per_block=1,
                       norm_num_groups=8, cross_attention_dim=32, attention_head_dim=8,
                       down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
                       up_block_types=("UpBlock3D", "CrossAttnUpBlock3D")),
    "all_attention": dict(sample_size=8, block_out_channels=(16, 32), layers_per_block=1,
                          norm_num_groups=4, cross_attention_dim=24, attention_head_dim=4,
                          out_channels=3,
                          down_block_types=("CrossAttnDownBlock3D", "CrossAttnDownBlock3D"),
                          up_block_types=("CrossAttnUpBlock3D", "CrossAttnUpBlock3D")),
}
SHAPES = {"two_blocks": (2, 3, 16, 16), "all_attention": (1, 4, 6, 10)}  # B, T, H, W


def _randomize(model: torch.nn.Module, seed: int = 0) -> None:
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      n = torch.randn(p.shape, generator=g)
      if p.ndim >= 2:
        p.copy_(n / p[0].numel() ** 0.5)
      elif p.ndim == 1 and name.endswith("weight"):
        p.copy_(1.0 + 0.1 * n)
      else:
        p.copy_(0.5 * n if p.ndim == 0 else 0.1 * n)


def _build(name):
  torch.manual_seed(0)
  ref = TorchI2VGen(**CONFIGS[name]).eval()
  _randomize(ref)
  cfg = I2VGenXLConfig.from_diffusers(dict(ref.config))
  model = I2VGenXLUNet(cfg)
  sd = {k: v.numpy() for k, v in ref.state_dict().items()}
  params = params_from_diffusers(sd, expected_flax_shapes(model, *i2vgen_init_inputs(cfg)), name)
  return ref, model, params


def _inputs(cfg, b, t, h, w, seed=0):
  rng = np.random.default_rng(seed)
  sample = rng.normal(size=(b, t, h, w, cfg.in_channels)).astype(np.float32)
  first = rng.normal(size=(b, h, w, 4)).astype(np.float32)
  image_latents = np.array(image_latents_for_frames(jnp.asarray(first), t))
  image_emb = rng.normal(size=(b, 1, cfg.cross_attention_dim)).astype(np.float32)
  ctx = rng.normal(size=(b, 5, cfg.cross_attention_dim)).astype(np.float32)
  ts = np.arange(1, b + 1, dtype=np.int64) * 211
  fps = np.full((b,), 16, np.int64)
  return sample, ts, fps, image_latents, image_emb, ctx


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_i2vgen_matches_diffusers(name):
  ref, model, params = _build(name)
  cfg = model.config
  b, t, h, w = SHAPES[name]
  sample, ts, fps, image_latents, image_emb, ctx = _inputs(cfg, b, t, h, w)
  to5 = lambda a: torch.from_numpy(a).permute(0, 4, 1, 2, 3)  # [B,T,H,W,C] -> [B,C,T,H,W]
  with torch.no_grad():
    want = ref(to5(sample), torch.from_numpy(ts), fps=torch.from_numpy(fps),
               image_latents=to5(image_latents), image_embeddings=torch.from_numpy(image_emb),
               encoder_hidden_states=torch.from_numpy(ctx)).sample
  want = want.permute(0, 2, 3, 4, 1).numpy()
  got = jax.jit(model.apply)(params, sample, ts, fps, image_latents, image_emb, ctx)
  assert got.shape == (b, t, h, w, cfg.out_channels)
  np.testing.assert_allclose(np.asarray(got), want, atol=TOL, rtol=0)


def test_image_latents_for_frames_matches_pipeline_layout():
  first = jnp.arange(2 * 2 * 2 * 4, dtype=jnp.float32).reshape(2, 2, 2, 4)
  out = image_latents_for_frames(first, 3)
  assert out.shape == (2, 3, 2, 2, 4)
  np.testing.assert_array_equal(out[:, 0], first)
  np.testing.assert_allclose(out[:, 1], 0.5)
  np.testing.assert_allclose(out[:, 2], 1.0)


def test_i2vgen_bad_inputs_name_the_input():
  cfg = I2VGenXLConfig.from_diffusers(CONFIGS["two_blocks"])
  model = I2VGenXLUNet(cfg)
  params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *i2vgen_init_inputs(cfg)))
  sample, ts, fps, il, emb, ctx = (jnp.asarray(a) for a in _inputs(cfg, 1, 3, 8, 8))
  run = lambda *a: jax.eval_shape(lambda p: model.apply(p, *a), params)
  with pytest.raises(ValueError, match="image_latents must have shape.*frame count"):
    run(sample, ts, fps, il[:, :2], emb, ctx)
  with pytest.raises(ValueError, match="sample has 5 latent channels"):
    run(jnp.zeros((1, 3, 8, 8, 5)), ts, fps, il, emb, ctx)
  with pytest.raises(ValueError, match="image_embeddings must have shape"):
    run(sample, ts, fps, il, emb[..., :8], ctx)
  with pytest.raises(ValueError, match="fps must be a scalar or have shape"):
    run(sample, ts, jnp.zeros((3,)), il, emb, ctx)


def _assert_fsdp_shardable(model, inputs):
  """Every parameter divides evenly over an 8-way fsdp mesh (nothing allocated)."""
  import flax.linen as nn
  from vitron_jax.nn import partitioning as P
  mesh = P.make_mesh({"fsdp": 8})
  boxed = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *inputs))
  shardings = P.param_shardings(boxed, mesh, P.rules_for("fsdp"))
  leaves = jax.tree_util.tree_leaves(nn.meta.unbox(boxed))
  shards = jax.tree_util.tree_leaves(shardings)
  assert len(leaves) == len(shards)
  sharded = 0
  for s, a in zip(shards, leaves):
    s.shard_shape(a.shape)  # raises if a mesh axis does not divide the dimension
    sharded += any(ax is not None for ax in s.spec)
  assert sharded > len(leaves) // 4


def test_i2vgen_params_shard_over_fsdp():
  cfg = I2VGenXLConfig.from_diffusers(CONFIGS["two_blocks"])
  _assert_fsdp_shardable(I2VGenXLUNet(cfg), i2vgen_init_inputs(cfg))
