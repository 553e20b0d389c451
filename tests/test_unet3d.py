"""UNet3DConditionModel (ZeroScope) parity with diffusers, tiny random configs, fp32."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import UNet3DConditionModel as TorchUNet3D

from vitron_jax.backends.diffusion.unet3d import (UNet3DConditionConfig, UNet3DConditionModel,
                                                  unet3d_init_inputs)
from vitron_jax.convert.diffusers import expected_flax_shapes, params_from_diffusers

TOL = 1e-4

CONFIGS = {
    "zeroscope_like": dict(sample_size=16, block_out_channels=(32, 64), layers_per_block=1,
                           norm_num_groups=8, cross_attention_dim=32, attention_head_dim=8,
                           down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
                           up_block_types=("UpBlock3D", "CrossAttnUpBlock3D")),
    "all_attention": dict(sample_size=8, in_channels=3, out_channels=5,
                          block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=4,
                          cross_attention_dim=24, attention_head_dim=4, norm_eps=1e-6,
                          down_block_types=("CrossAttnDownBlock3D", "CrossAttnDownBlock3D"),
                          up_block_types=("CrossAttnUpBlock3D", "CrossAttnUpBlock3D")),
}
SHAPES = {"zeroscope_like": (2, 3, 16, 16), "all_attention": (1, 2, 7, 9)}  # B, T, H, W


def _randomize(model: torch.nn.Module, seed: int = 0) -> None:
  """Seeded noise everywhere (the temporal convs' last layers start at zero in diffusers)."""
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
  ref = TorchUNet3D(**CONFIGS[name]).eval()
  _randomize(ref)
  cfg = UNet3DConditionConfig.from_diffusers(dict(ref.config))
  model = UNet3DConditionModel(cfg)
  sd = {k: v.numpy() for k, v in ref.state_dict().items()}
  params = params_from_diffusers(sd, expected_flax_shapes(model, *unet3d_init_inputs(cfg)), name)
  return ref, model, params


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_unet3d_matches_diffusers(name):
  ref, model, params = _build(name)
  cfg = model.config
  b, t, h, w = SHAPES[name]
  rng = np.random.default_rng(0)
  sample = rng.normal(size=(b, t, h, w, cfg.in_channels)).astype(np.float32)
  ts = np.arange(1, b + 1, dtype=np.int64) * 321
  ctx = rng.normal(size=(b, 5, cfg.cross_attention_dim)).astype(np.float32)
  with torch.no_grad():
    want = ref(torch.from_numpy(sample).permute(0, 4, 1, 2, 3), torch.from_numpy(ts),
               torch.from_numpy(ctx)).sample
  want = want.permute(0, 2, 3, 4, 1).numpy()  # [B, C, T, H, W] -> [B, T, H, W, C]
  got = jax.jit(model.apply)(params, sample, ts, ctx)
  assert got.shape == (b, t, h, w, cfg.out_channels)
  np.testing.assert_allclose(np.asarray(got), want, atol=TOL, rtol=0)


def test_unet3d_bad_inputs_name_the_input():
  cfg = UNet3DConditionConfig.from_diffusers(CONFIGS["zeroscope_like"])
  model = UNet3DConditionModel(cfg)
  params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *unet3d_init_inputs(cfg)))
  ctx = jnp.zeros((1, 3, 32))
  run = lambda x, c=ctx: jax.eval_shape(lambda: model.apply(params, x, jnp.zeros(1), c))
  with pytest.raises(ValueError, match="sample has 8 latent channels.*in_channels=4"):
    run(jnp.zeros((1, 2, 8, 8, 8)))
  with pytest.raises(ValueError, match=r"sample must be channels-last video latents \[batch, "
                                       "frames"):
    run(jnp.zeros((1, 8, 8, 4)))
  with pytest.raises(ValueError, match="at least one frame"):
    run(jnp.zeros((1, 0, 8, 8, 4)))
  with pytest.raises(ValueError, match="encoder_hidden_states must have shape"):
    run(jnp.zeros((1, 2, 8, 8, 4)), jnp.zeros((2, 3, 32)))
  with pytest.raises(ValueError, match="attention_head_dim must be an int"):
    UNet3DConditionConfig.from_diffusers({**CONFIGS["zeroscope_like"],
                                          "attention_head_dim": [8, 8]})


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


def test_unet3d_params_shard_over_fsdp():
  cfg = UNet3DConditionConfig.from_diffusers(CONFIGS["zeroscope_like"])
  _assert_fsdp_shardable(UNet3DConditionModel(cfg), unet3d_init_inputs(cfg))
