"""GLIGEN (gated self-attention + text-only position net) parity with diffusers, fp32."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel as TorchUNet

from vitron_jax.backends.diffusion.gligen import GligenInputs
from vitron_jax.backends.diffusion.unet2d import (UNet2DConditionConfig, UNet2DConditionModel,
                                                  unet2d_init_inputs)
from vitron_jax.convert.diffusers import expected_flax_shapes, params_from_diffusers

TOL = 1e-4
BASE = dict(sample_size=16, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
            norm_num_groups=8, cross_attention_dim=32, attention_head_dim=4,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), attention_type="gated")
# A second shape per variant: cross-attention in both down blocks, per-block head counts,
# a wider context, linear vs conv projections swapped.
BASE_B = dict(BASE, block_out_channels=(16, 32), cross_attention_dim=24,
              attention_head_dim=(2, 4),
              down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
              up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"))
CONFIGS = {
    "generation": dict(BASE, in_channels=4),
    "generation_b": dict(BASE_B, in_channels=4, use_linear_projection=True),
    # latents (4) + masked image latents (4) + mask (1), as StableDiffusionGLIGENPipeline.
    "inpainting": dict(BASE, in_channels=9, use_linear_projection=True,
                       attention_head_dim=(2, 4)),
    "inpainting_b": dict(BASE_B, in_channels=9),
}


def _randomize(model: torch.nn.Module, seed: int = 0) -> None:
  """Seeded noise everywhere, including the zero-initialised gates and null features."""
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


def _build(config):
  torch.manual_seed(0)
  ref = TorchUNet(**config).eval()
  _randomize(ref)
  cfg = UNet2DConditionConfig.from_diffusers(dict(ref.config))
  model = UNet2DConditionModel(cfg)
  sd = {k: v.numpy() for k, v in ref.state_dict().items()}
  params = params_from_diffusers(sd, expected_flax_shapes(model, *unet2d_init_inputs(cfg)),
                                 "test")
  return ref, model, params


def _inputs(in_channels, n_obj=3, seed=0, dim=32):
  rng = np.random.default_rng(seed)
  latents = rng.normal(size=(2, 16, 16, 4)).astype(np.float32)
  if in_channels == 9:
    keep = np.ones((2, 16, 16, 1), np.float32)
    keep[:, 4:10, 3:12] = 0.0  # the boxed region is repainted
    image_latents = rng.normal(size=(2, 16, 16, 4)).astype(np.float32)
    latents = np.concatenate([latents, image_latents * keep, keep], axis=-1)
  xy0 = rng.uniform(0, 0.5, (2, n_obj, 2))
  boxes = np.concatenate([xy0, xy0 + rng.uniform(0.1, 0.5, (2, n_obj, 2))], -1).astype(np.float32)
  phrases = rng.normal(size=(2, n_obj, dim)).astype(np.float32)
  masks = np.array([[1, 1, 0], [1, 0, 0]], np.float32)[:, :n_obj]
  ctx = rng.normal(size=(2, 6, dim)).astype(np.float32)
  t = np.array([3, 700], np.int64)
  return latents, t, ctx, boxes, phrases, masks


def _torch(ref, sample, t, ctx, boxes=None, phrases=None, masks=None):
  kwargs = None
  if boxes is not None:
    kwargs = {"gligen": {"boxes": torch.from_numpy(boxes),
                         "positive_embeddings": torch.from_numpy(phrases),
                         "masks": torch.from_numpy(masks)}}
  with torch.no_grad():
    out = ref(torch.from_numpy(sample).permute(0, 3, 1, 2), torch.from_numpy(t),
              torch.from_numpy(ctx), cross_attention_kwargs=kwargs).sample
  return out.permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_gligen_matches_diffusers(name):
  ref, model, params = _build(CONFIGS[name])
  sample, t, ctx, boxes, phrases, masks = _inputs(model.config.in_channels,
                                                  dim=model.config.cross_attention_dim)
  want = _torch(ref, sample, t, ctx, boxes, phrases, masks)
  apply = jax.jit(lambda p, x, t, c, g: model.apply(p, x, t, c, gligen=g))
  got = apply(params, sample, t, ctx, GligenInputs(boxes, phrases, masks, jnp.asarray(True)))
  np.testing.assert_allclose(np.asarray(got), want, atol=TOL, rtol=0)

  # Scheduled sampling: fusers off (traced flag) == diffusers without grounding inputs.
  plain = _torch(ref, sample, t, ctx)
  off = apply(params, sample, t, ctx, GligenInputs(boxes, phrases, masks, jnp.asarray(False)))
  np.testing.assert_allclose(np.asarray(off), plain, atol=TOL, rtol=0)
  assert np.abs(plain - want).max() > 1e-2  # grounding actually changes the prediction
  no_gligen = jax.jit(model.apply)(params, sample, t, ctx)
  np.testing.assert_allclose(np.asarray(no_gligen), plain, atol=TOL, rtol=0)


def test_gligen_bad_inputs_name_the_input():
  cfg = UNet2DConditionConfig.from_diffusers(CONFIGS["generation"])
  model = UNet2DConditionModel(cfg)
  params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *unet2d_init_inputs(cfg)))
  sample, t, ctx, boxes, phrases, masks = _inputs(4)
  run = lambda g: jax.eval_shape(lambda: model.apply(params, sample, t, ctx, gligen=g))
  bad = boxes.copy()
  bad[0, 0, 2] = 1.5
  with pytest.raises(ValueError, match=r"boxes must be normalised to \[0, 1\]"):
    model.apply(params, sample, t, ctx, gligen=GligenInputs(bad, phrases, masks))
  n = cfg.gligen_max_objs + 1
  with pytest.raises(ValueError, match=f"{n} phrases given.*max_objs={n - 1}"):
    run(GligenInputs(jnp.zeros((2, n, 4)), jnp.zeros((2, n, 32)), jnp.zeros((2, n))))
  with pytest.raises(ValueError, match="positive_embeddings must have shape"):
    run(GligenInputs(boxes, phrases[..., :16], masks))
  with pytest.raises(ValueError, match="masks must have shape"):
    run(GligenInputs(boxes, phrases, masks[:, :2]))
  plain = UNet2DConditionModel(UNet2DConditionConfig.from_diffusers(
      dict(CONFIGS["generation"], attention_type="default")))
  pp = jax.eval_shape(lambda: plain.init(jax.random.PRNGKey(0), *unet2d_init_inputs(plain.config)))
  with pytest.raises(ValueError, match="attention_type='gated'"):
    jax.eval_shape(lambda: plain.apply(pp, sample, t, ctx,
                                       gligen=GligenInputs(boxes, phrases, masks)))
