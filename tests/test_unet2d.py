"""UNet2DConditionModel parity with diffusers (SD1-like and SD2-like tiny configs, fp32)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel as TorchUNet

from vitron_jax.backends.diffusion.unet2d import (UNet2DConditionConfig, UNet2DConditionModel,
                                                  unet2d_init_inputs)
from vitron_jax.convert.diffusers import expected_flax_shapes, params_from_diffusers

TOL = 1e-4

CONFIGS = {
    # SD 1.x style: conv 1x1 proj_in/out, one head count for every block.
    "sd1": dict(sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64),
                layers_per_block=1, norm_num_groups=8, cross_attention_dim=32,
                attention_head_dim=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")),
    # SD 2.x style: linear projections, per-block head counts, v-prediction-sized blocks,
    # flip_sin_to_cos/freq_shift variations, 2 transformer layers in the first block.
    "sd2": dict(sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64, 64),
                layers_per_block=(1, 2, 1), norm_num_groups=16, cross_attention_dim=24,
                attention_head_dim=(2, 4, 8), use_linear_projection=True,
                transformer_layers_per_block=(2, 1, 1), flip_sin_to_cos=False, freq_shift=1,
                down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")),
}


def _randomize(model: torch.nn.Module, seed: int = 0) -> None:
  """Replace every parameter with seeded noise so that no zero-initialised path hides a bug."""
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


def build(config: dict):
  torch.manual_seed(0)
  ref = TorchUNet(**config).eval()
  _randomize(ref)
  cfg = UNet2DConditionConfig.from_diffusers(dict(ref.config))
  model = UNet2DConditionModel(cfg)
  sd = {k: v.numpy() for k, v in ref.state_dict().items()}
  params = params_from_diffusers(sd, expected_flax_shapes(model, *unet2d_init_inputs(cfg)),
                                 "test")
  return ref, model, params


def _run_torch(ref, sample, t, ctx):
  with torch.no_grad():
    out = ref(torch.from_numpy(sample).permute(0, 3, 1, 2), torch.from_numpy(t),
              torch.from_numpy(ctx)).sample
  return out.permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_unet2d_matches_diffusers(name):
  ref, model, params = build(CONFIGS[name])
  rng = np.random.default_rng(1)
  cdim = CONFIGS[name]["cross_attention_dim"]
  sample = rng.normal(size=(2, 16, 16, 4)).astype(np.float32)
  t = np.array([10, 873], np.int64)
  ctx = rng.normal(size=(2, 7, cdim)).astype(np.float32)
  want = _run_torch(ref, sample, t, ctx)
  got = jax.jit(model.apply)(params, sample, t, ctx)
  assert got.shape == (2, 16, 16, 4)
  np.testing.assert_allclose(np.asarray(got), want, atol=TOL, rtol=0)


def test_unet2d_odd_size_and_encoder_attention_mask():
  """Sizes that are not multiples of 2**num_upsamplers, a scalar timestep, padded context."""
  ref, model, params = build(CONFIGS["sd1"])
  rng = np.random.default_rng(2)
  sample = rng.normal(size=(2, 11, 13, 4)).astype(np.float32)
  ctx = rng.normal(size=(2, 5, 32)).astype(np.float32)
  keep = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
  with torch.no_grad():
    want = ref(torch.from_numpy(sample).permute(0, 3, 1, 2), 500, torch.from_numpy(ctx),
               encoder_attention_mask=torch.from_numpy(keep)).sample.permute(0, 2, 3, 1).numpy()
  apply = jax.jit(lambda p, x, t, c, m: model.apply(p, x, t, c, encoder_attention_mask=m))
  got = apply(params, sample, jnp.asarray(500.0), ctx, keep)
  np.testing.assert_allclose(np.asarray(got), want, atol=TOL, rtol=0)
  unmasked = _run_torch(ref, sample, np.array([500, 500]), ctx)
  assert np.abs(unmasked[0] - want[0]).max() > 1e-3  # the mask matters


def test_unet2d_bad_inputs_name_the_input():
  cfg = UNet2DConditionConfig.from_diffusers(CONFIGS["sd1"])
  model = UNet2DConditionModel(cfg)
  params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *unet2d_init_inputs(cfg)))
  ctx = jnp.zeros((1, 3, 32))
  with pytest.raises(ValueError, match="sample has 9 latent channels.*in_channels=4"):
    jax.eval_shape(lambda: model.apply(params, jnp.zeros((1, 8, 8, 9)), jnp.zeros(1), ctx))
  with pytest.raises(ValueError, match="encoder_hidden_states must have shape"):
    jax.eval_shape(lambda: model.apply(params, jnp.zeros((1, 8, 8, 4)), jnp.zeros(1),
                                       jnp.zeros((1, 3, 16))))
  with pytest.raises(ValueError, match="timesteps must be a scalar or have shape"):
    jax.eval_shape(lambda: model.apply(params, jnp.zeros((1, 8, 8, 4)), jnp.zeros(3), ctx))
  with pytest.raises(ValueError, match="not implement.*class_embed_type"):
    UNet2DConditionConfig.from_diffusers({**CONFIGS["sd1"], "class_embed_type": "timestep"})


def test_unet2d_params_carry_logical_axes():
  cfg = UNet2DConditionConfig.from_diffusers(CONFIGS["sd1"])
  model = UNet2DConditionModel(cfg)
  boxed = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *unet2d_init_inputs(cfg)))
  specs = jax.tree_util.tree_leaves(
      jax.tree_util.tree_map(lambda b: b.names, boxed["params"],
                             is_leaf=lambda x: hasattr(x, "names")),
      is_leaf=lambda x: isinstance(x, tuple))
  p = boxed["params"]
  assert p["conv_in"]["kernel"].names == (None, None, "conv_in", "conv_out")
  blk = p["down_blocks_0"]["attentions_0"]["transformer_blocks_0"]
  assert blk["attn2"]["to_q"]["kernel"].names == ("embed", "heads")
  assert blk["attn2"]["to_out_0"]["kernel"].names == ("heads", "embed")
  assert blk["ff"]["net_2"]["kernel"].names == ("mlp", "embed")
  assert len(specs) > 50


@pytest.mark.slow
def test_unet2d_runs_sharded_fsdp_tensor():
  """Sharded init (eval_shape -> shardings -> jit) and a forward pass on a 4x2 fsdp/tensor mesh."""
  from vitron_jax.nn import partitioning as P
  cfg = UNet2DConditionConfig.from_diffusers(CONFIGS["sd1"])
  model = UNet2DConditionModel(cfg)
  mesh = P.make_mesh({"fsdp": 4, "tensor": 2})
  rules = P.rules_for("fsdp_tensor")
  init = lambda rng: model.init(rng, *unet2d_init_inputs(cfg))
  params, shardings = P.sharded_init(init, mesh, rules, jax.random.PRNGKey(0))
  blk = params["params"]["down_blocks_0"]["attentions_0"]["transformer_blocks_0"]
  assert tuple(blk["attn2"]["to_q"]["kernel"].sharding.spec) == ("fsdp", "tensor")
  conv1 = params["params"]["down_blocks_0"]["resnets_0"]["conv1"]["kernel"]
  assert tuple(conv1.sharding.spec)[-1] == "fsdp"
  rng = np.random.default_rng(3)
  x = rng.normal(size=(2, 8, 8, 4)).astype(np.float32)
  ctx = rng.normal(size=(2, 3, 32)).astype(np.float32)
  t = np.array([1, 2])
  want = jax.jit(model.apply)(jax.device_get(params), x, t, ctx)
  got = jax.jit(model.apply)(params, x, t, ctx)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=0)


@pytest.mark.slow
def test_unet2d_bf16_remat_close_to_fp32_and_differentiable():
  cfg = UNet2DConditionConfig.from_diffusers(CONFIGS["sd2"])
  f32 = UNet2DConditionModel(cfg)
  bf16 = UNet2DConditionModel(cfg, dtype=jnp.bfloat16, remat=True)
  params = f32.init(jax.random.PRNGKey(0), *unet2d_init_inputs(cfg))
  rng = np.random.default_rng(4)
  x = rng.normal(size=(2, 16, 16, 4)).astype(np.float32)
  ctx = rng.normal(size=(2, 5, 24)).astype(np.float32)
  t = np.array([1, 500])
  want = jax.jit(f32.apply)(params, x, t, ctx)
  loss = lambda p: jnp.mean(jnp.square(bf16.apply(p, x, t, ctx).astype(jnp.float32)))
  (val, grads) = jax.jit(jax.value_and_grad(loss))(params)
  got = jax.jit(bf16.apply)(params, x, t, ctx)
  assert got.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want), atol=0.1, rtol=0)
  gl = jax.tree_util.tree_leaves(grads)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in gl) and np.isfinite(float(val))
