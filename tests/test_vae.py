"""AutoencoderKL parity with diffusers (tiny random models, fp32)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL as TorchAutoencoderKL

from vitron_jax.backends.diffusion.vae import (AutoencoderKL, AutoencoderKLConfig,
                                               DiagonalGaussian, vae_init_inputs)
from vitron_jax.convert.diffusers import expected_flax_shapes, params_from_diffusers

TOL = 1e-4

CONFIGS = {
    "two_blocks": dict(block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8,
                       down_block_types=("DownEncoderBlock2D",) * 2,
                       up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4,
                       sample_size=32),
    "three_blocks_no_quant": dict(block_out_channels=(16, 32, 32), layers_per_block=2,
                                  norm_num_groups=8, down_block_types=("DownEncoderBlock2D",) * 3,
                                  up_block_types=("UpDecoderBlock2D",) * 3, latent_channels=3,
                                  use_quant_conv=False, use_post_quant_conv=False,
                                  scaling_factor=0.3611, shift_factor=0.1159, sample_size=32),
}


def _randomize(model: torch.nn.Module, seed: int = 0) -> None:
  """Replace every parameter with seeded noise so that no zero-initialised path hides a bug."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      n = torch.randn(p.shape, generator=g)
      if p.ndim >= 2:  # linear / conv weight
        p.copy_(n / p[0].numel() ** 0.5)
      elif p.ndim == 1 and name.endswith("weight"):  # norm scale
        p.copy_(1.0 + 0.1 * n)
      else:  # biases, null features, gates
        p.copy_(0.5 * n if p.ndim == 0 else 0.1 * n)


def _build(name):
  torch.manual_seed(0)
  ref = TorchAutoencoderKL(**CONFIGS[name]).eval()
  _randomize(ref)
  cfg = AutoencoderKLConfig.from_diffusers(dict(ref.config))
  model = AutoencoderKL(cfg)
  sd = {k: v.numpy() for k, v in ref.state_dict().items()}
  params = params_from_diffusers(sd, expected_flax_shapes(model, *vae_init_inputs(cfg)), name)
  return ref, model, params


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_vae_matches_diffusers(name):
  ref, model, params = _build(name)
  rng = np.random.default_rng(0)
  images = rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
  with torch.no_grad():
    dist = ref.encode(torch.from_numpy(images).permute(0, 3, 1, 2)).latent_dist
    mean_ref = dist.mean.permute(0, 2, 3, 1).numpy()
    logvar_ref = dist.logvar.permute(0, 2, 3, 1).numpy()
  post = jax.jit(lambda p, x: model.apply(p, x, method=model.encode))(params, images)
  assert isinstance(post, DiagonalGaussian)
  np.testing.assert_allclose(np.asarray(post.mean), mean_ref, atol=TOL, rtol=0)
  np.testing.assert_allclose(np.asarray(post.logvar), logvar_ref, atol=TOL, rtol=0)

  f = model.config.downsample_factor
  latents = rng.normal(size=(2, 32 // f, 32 // f, model.config.latent_channels)).astype(np.float32)
  with torch.no_grad():
    dec_ref = ref.decode(torch.from_numpy(latents).permute(0, 3, 1, 2)).sample
  dec_ref = dec_ref.permute(0, 2, 3, 1).numpy()
  dec = jax.jit(lambda p, z: model.apply(p, z, method=model.decode))(params, latents)
  assert dec.shape == (2, 32, 32, 3)
  np.testing.assert_allclose(np.asarray(dec), dec_ref, atol=TOL, rtol=0)


def test_posterior_sample_mode_and_scaling():
  cfg = AutoencoderKLConfig(**{**CONFIGS["three_blocks_no_quant"]})
  mean = jnp.ones((1, 2, 2, 3))
  post = DiagonalGaussian.from_moments(jnp.concatenate([mean, jnp.full_like(mean, 100.0)], -1))
  assert float(post.logvar.max()) == 20.0  # clamped as diffusers does
  np.testing.assert_array_equal(post.mode(), mean)
  s1, s2 = post.sample(jax.random.PRNGKey(0)), post.sample(jax.random.PRNGKey(1))
  assert s1.shape == mean.shape and not np.allclose(s1, s2)
  z = jnp.arange(6.0)
  np.testing.assert_allclose(cfg.unscale(cfg.scale(z)), z, rtol=1e-6)
  np.testing.assert_allclose(cfg.scale(z), (z - 0.1159) * 0.3611, rtol=1e-6)


def test_bad_inputs_name_the_input():
  cfg = AutoencoderKLConfig(**CONFIGS["two_blocks"])
  model = AutoencoderKL(cfg)
  params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *vae_init_inputs(cfg)))
  with pytest.raises(ValueError, match="images must have 3 channels"):
    jax.eval_shape(lambda: model.apply(params, jnp.zeros((1, 8, 8, 4)), method=model.encode))
  with pytest.raises(ValueError, match="multiples of 2"):
    jax.eval_shape(lambda: model.apply(params, jnp.zeros((1, 9, 8, 3)), method=model.encode))
  with pytest.raises(ValueError, match="latents must have 4 channels"):
    jax.eval_shape(lambda: model.apply(params, jnp.zeros((1, 4, 4, 8)), method=model.decode))
  with pytest.raises(ValueError, match="does not know.*bogus_option"):
    AutoencoderKLConfig.from_diffusers({"block_out_channels": [32], "bogus_option": 1})


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


def test_vae_params_shard_over_fsdp():
  cfg = AutoencoderKLConfig(**CONFIGS["two_blocks"])
  _assert_fsdp_shardable(AutoencoderKL(cfg), vae_init_inputs(cfg))
