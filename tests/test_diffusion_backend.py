"""The five diffusion backends: registry, native condition, loss (vs a torch reference), run."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, UNet2DConditionModel as TorchUNet

from vitron_jax.backends.base import REGISTRY
from vitron_jax.backends.diffusion import backend as BK
from vitron_jax.backends.diffusion import pipelines as P
from vitron_jax.backends.diffusion import schedulers as S
from vitron_jax.backends.diffusion.i2vgen import I2VGenXLConfig, I2VGenXLUNet, i2vgen_init_inputs
from vitron_jax.backends.diffusion.unet2d import (UNet2DConditionConfig, UNet2DConditionModel,
                                                  unet2d_init_inputs)
from vitron_jax.backends.diffusion.unet3d import (UNet3DConditionConfig, UNet3DConditionModel,
                                                  unet3d_init_inputs)
from vitron_jax.backends.diffusion.vae import AutoencoderKL, AutoencoderKLConfig, vae_init_inputs
from vitron_jax.convert.diffusers import expected_flax_shapes, params_from_diffusers
from vitron_jax.models.clip import CLIPTextModel, CLIPVisionModel
from vitron_jax.models.clip_config import CLIPTextConfig, CLIPVisionConfig

L, D, VOCAB = 8, 32, 64
UNET = dict(sample_size=8, block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8,
            cross_attention_dim=D, attention_head_dim=4,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
VIDEO = dict(sample_size=8, block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8,
             cross_attention_dim=D, attention_head_dim=8,
             down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
             up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"))
SCHED = S.SchedulerConfig(kind="ddim", beta_schedule="scaled_linear", beta_start=0.00085,
                          beta_end=0.012, clip_sample=False)
FAST = BK.DiffusionBackendConfig(num_inference_steps=2, guidance_scale=4.0, height=16,
                                 width=16, num_frames=2, fps=8)


def _init(module, *args, seed=0):
  """Random parameters from the module's abstract shapes (no init compile): kernels
  ~ N(0, 1/fan_in), norm weights ~ 1 + N(0, 0.1^2), everything else ~ N(0, 0.1^2)."""
  import flax.linen as nn
  from vitron_jax.convert.tree import flatten, unflatten
  shapes = nn.meta.unbox(jax.eval_shape(module.init, jax.random.key(0), *args))["params"]
  rng = np.random.default_rng(seed)
  out = {}
  for path, leaf in flatten(shapes).items():
    n = rng.standard_normal(leaf.shape).astype(np.float32)
    name = path.rsplit("/", 1)[-1]
    if len(leaf.shape) >= 2:
      n = n / np.sqrt(np.prod(leaf.shape[:-1]))
    elif name in ("weight", "scale"):
      n = 1.0 + 0.1 * n
    else:
      n = 0.1 * n
    out[path] = jnp.asarray(n)
  return {"params": unflatten(out)}


@pytest.fixture(scope="module")
def parts():
  text = CLIPTextModel(CLIPTextConfig(vocab_size=VOCAB, hidden_size=D, intermediate_size=37,
                                      num_hidden_layers=2, num_attention_heads=4,
                                      max_position_embeddings=L, bos_token_id=VOCAB - 2,
                                      eos_token_id=VOCAB - 1, pad_token_id=VOCAB - 1))
  vision = CLIPVisionModel(CLIPVisionConfig(hidden_size=D, intermediate_size=37,
                                            num_hidden_layers=1, num_attention_heads=4,
                                            image_size=16, patch_size=8, projection_dim=D),
                           with_projection=True)
  vcfg = AutoencoderKLConfig(block_out_channels=(16, 32), norm_num_groups=8,
                             down_block_types=("DownEncoderBlock2D",) * 2,
                             up_block_types=("UpDecoderBlock2D",) * 2)
  vae = AutoencoderKL(vcfg)
  unet = UNet2DConditionModel(UNet2DConditionConfig(**UNET))
  inpaint = UNet2DConditionModel(UNet2DConditionConfig(**UNET, in_channels=9,
                                                       attention_type="gated"))
  u3 = UNet3DConditionModel(UNet3DConditionConfig(**VIDEO))
  i2v = I2VGenXLUNet(I2VGenXLConfig(**VIDEO))
  params = {"text_encoder": _init(text, jnp.zeros((1, L), jnp.int32)),
            "image_encoder": _init(vision, jnp.zeros((1, 16, 16, 3))),
            "vae": _init(vae, *vae_init_inputs(vcfg))}
  p = {"unet": _init(unet, *unet2d_init_inputs(unet.config), seed=1),
       "inpaint": _init(inpaint, *unet2d_init_inputs(inpaint.config), seed=2),
       "u3": _init(u3, *unet3d_init_inputs(u3.config), seed=3),
       "i2v": _init(i2v, *i2vgen_init_inputs(i2v.config), seed=4)}
  mods = {"unet": unet, "inpaint": inpaint, "u3": u3, "i2v": i2v}

  def make(module_name, unet_key, config=FAST, sched=SCHED):
    models = P.DiffusionModels(unet=mods[unet_key], vae=vae, text_encoder=text,
                               image_encoder=vision, scheduler=sched)
    return REGISTRY.create(module_name, models, config), dict(params, unet=p[unet_key])
  return make


def tokens(b=2, seed=0):
  rng = np.random.default_rng(seed)
  t = rng.integers(0, VOCAB - 2, (b, L)).astype(np.int32)
  t[:, 0], t[:, -1] = VOCAB - 2, VOCAB - 1
  return jnp.asarray(t)


def test_registry_has_the_five_modules(parts):
  assert {"generate_image", "edit_image", "generate_video", "image_to_video", "edit_video"} <= set(
      REGISTRY.modules())
  for name, cls in BK.BACKENDS.items():
    assert cls.module == name
  backend, _ = parts("generate_image", "unet")
  assert isinstance(backend, BK.GenImageBackend) and backend.condition_shape == (L, D)


@pytest.mark.parametrize("prediction_type,gamma", [("epsilon", None), ("epsilon", 5.0),
                                                   ("v_prediction", 5.0)])
def test_denoising_loss_matches_torch(prediction_type, gamma):
  torch.manual_seed(0)
  ref = TorchUNet(**UNET).eval()
  cfg = UNet2DConditionConfig.from_diffusers(dict(ref.config))
  model = UNet2DConditionModel(cfg)
  params = params_from_diffusers({k: v.numpy() for k, v in ref.state_dict().items()},
                                 expected_flax_shapes(model, *unet2d_init_inputs(cfg)), "t")
  sched_cfg = SCHED.replace(kind="ddpm", prediction_type=prediction_type)
  theirs = DDPMScheduler.from_config(sched_cfg.to_diffusers_config())
  rng = np.random.default_rng(0)
  x0 = rng.standard_normal((3, 8, 8, 4)).astype(np.float32)
  noise = rng.standard_normal((3, 8, 8, 4)).astype(np.float32)
  ctx = rng.standard_normal((3, 5, D)).astype(np.float32)
  t = np.array([5, 400, 990])
  with torch.no_grad():
    tx0, tn, tt = (torch.from_numpy(x0).permute(0, 3, 1, 2), torch.from_numpy(noise).permute(
        0, 3, 1, 2), torch.from_numpy(t))
    noisy = theirs.add_noise(tx0, tn, tt)
    pred = ref(noisy, tt, torch.from_numpy(ctx)).sample
    target = tn if prediction_type == "epsilon" else theirs.get_velocity(tx0, tn, tt)
    mse = ((pred - target) ** 2).mean(dim=(1, 2, 3))
    if gamma is not None:  # diffusers' train_text_to_image.py formula
      ac = theirs.alphas_cumprod[tt]
      snr = ac / (1 - ac)
      w = torch.minimum(snr, torch.full_like(snr, gamma))
      w = w / snr if prediction_type == "epsilon" else w / (snr + 1)
      mse = mse * w
    want = mse.mean().item()
  eps_fn = lambda p, x, t, c: model.apply(p, x, t, c)
  loss, metrics = jax.jit(lambda p: BK.denoising_loss_at(
      eps_fn, p, S.noise_schedule(sched_cfg), x0, ctx, t, noise, min_snr_gamma=gamma))(params)
  assert float(loss) == pytest.approx(want, rel=1e-4)
  assert set(metrics) == {"loss", "mse"}


def test_gen_image_contract(parts):
  backend, params = parts("generate_image", "unet", sched=SCHED.replace(prediction_type="v_prediction"))
  cond = jax.jit(backend.native_condition)(params, tokens())
  assert cond.shape == (2, L, D)
  images = jnp.asarray(np.random.default_rng(0).uniform(0, 1, (2, 16, 16, 3)), jnp.float32)
  loss_fn = jax.jit(lambda p, c, k: backend.loss(p, {"images": images}, c, k)[0])
  loss, grad = jax.value_and_grad(loss_fn, argnums=1)(params, cond, jax.random.key(0))
  assert np.isfinite(float(loss)) and float(jnp.abs(grad).sum()) > 0  # reaches the condition
  run = jax.jit(backend.run)
  noise = P.latent_noise(backend.models, jax.random.key(5), 2, 16, 16)
  out = run(params, {"noise": noise}, cond, jax.random.key(1))
  assert out["images"].shape == (2, 16, 16, 3) and out["latents"].shape == (2, 8, 8, 4)
  imgs = np.asarray(out["images"])
  assert imgs.min() >= 0 and imgs.max() <= 1
  # the default unconditional context is the text encoder on [bos, eos, eos, ...]
  uncond = backend.native_condition(params, jnp.asarray([[VOCAB - 2] + [VOCAB - 1] * (L - 1)] * 2))
  explicit = run(params, {"noise": noise, "uncond_condition": uncond}, cond, jax.random.key(1))
  np.testing.assert_allclose(np.asarray(explicit["latents"]), np.asarray(out["latents"]),
                             atol=1e-4)  # two compilations: float reassociation only


def test_condition_dropout_uses_the_unconditional_context(parts):
  backend, params = parts("generate_image", "unet", config=FAST.__class__(
      **{**FAST.__dict__, "condition_dropout": 1.0}))
  plain, _ = parts("generate_image", "unet")
  cond = backend.native_condition(params, tokens())
  batch = {"latents": jnp.asarray(np.random.default_rng(1).standard_normal((2, 8, 8, 4)),
                                  jnp.float32)}
  key = jax.random.key(3)
  dropped = backend.loss(params, batch, cond, key)[0]
  uncond = plain.uncond_condition(params, 2)
  assert float(dropped) == pytest.approx(float(plain.loss(params, batch, uncond, key)[0]),
                                         rel=1e-6)
  assert abs(float(dropped) - float(plain.loss(params, batch, cond, key)[0])) > 1e-5


def test_edit_image_gligen_inpainting(parts):
  backend, params = parts("edit_image", "inpaint")
  cond = backend.native_condition(params, tokens(1))
  rng = np.random.default_rng(2)
  images = jnp.asarray(rng.uniform(0, 1, (1, 16, 16, 3)), jnp.float32)
  masks = np.zeros((1, 16, 16, 1), np.float32)
  masks[:, 4:12, 4:12] = 1
  ground = {"boxes": jnp.asarray([[[0.25, 0.25, 0.75, 0.75]]]),
            "phrase_ids": tokens(1, seed=3)[:, None]}
  batch = dict(ground, images=images, source_images=images, masks=jnp.asarray(masks))
  loss, metrics = jax.jit(backend.loss)(params, batch, cond, jax.random.key(0))
  assert np.isfinite(float(loss)) and float(metrics["mse"]) > 0
  out = jax.jit(backend.run)(params, dict(ground, images=images, masks=jnp.asarray(masks)),
                             cond, jax.random.key(1))
  assert out["images"].shape == (1, 16, 16, 3)


@pytest.mark.slow
@pytest.mark.parametrize("name,unet", [("generate_video", "u3"), ("edit_video", "u3"),
                                       ("image_to_video", "i2v")])
def test_video_backends(parts, name, unet):
  backend, params = parts(name, unet)
  cond = backend.native_condition(params, tokens(1))
  videos = jnp.asarray(np.random.default_rng(4).uniform(0, 1, (1, 2, 16, 16, 3)), jnp.float32)
  loss, _ = jax.jit(backend.loss)(params, {"videos": videos}, cond, jax.random.key(0))
  assert np.isfinite(float(loss))
  inputs = {"videos": videos} if name == "edit_video" else (
      {"images": videos[:, 0]} if name == "image_to_video" else {})
  out = jax.jit(backend.run)(params, inputs, cond, jax.random.key(1))
  assert out["videos"].shape == (1, 2, 16, 16, 3)


def test_bad_inputs_name_the_input(parts):
  backend, params = parts("generate_image", "unet")
  cond = backend.native_condition(params, tokens())
  images = jnp.full((2, 16, 16, 3), 0.5)
  with pytest.raises(ValueError, match="condition must be \\[batch, 8, 32\\]"):
    backend.loss(params, {"images": images}, cond[:, :4], jax.random.key(0))
  with pytest.raises(ValueError, match="generate_image needs the training target .* batch\\['images'\\]"):
    backend.loss(params, {"pixels": images}, cond, jax.random.key(0))
  with pytest.raises(ValueError, match="batch\\['images'\\] must be channels-last .* C=3"):
    backend.loss(params, {"images": images[..., :1]}, cond, jax.random.key(0))
  with pytest.raises(ValueError, match="tokens must be \\[batch, 8\\]"):
    backend.native_condition(params, tokens()[:, :5])
  with pytest.raises(ValueError, match="neither a GLIGEN UNet nor takes a grounding layout"):
    backend.loss(params, {"images": images, "boxes": jnp.zeros((2, 1, 4))}, cond,
                 jax.random.key(0))
  edit, eparams = parts("edit_image", "inpaint")
  c1 = cond[:1]
  base = {"images": images[:1], "masks": jnp.zeros((1, 16, 16))}
  with pytest.raises(ValueError, match="grounding boxes must be normalised to \\[0, 1\\]"):
    edit.run(eparams, dict(base, boxes=jnp.asarray([[[0.1, 0.1, 1.5, 0.5]]]),
                           phrase_embeddings=jnp.zeros((1, 1, D))), c1, jax.random.key(0))
  with pytest.raises(ValueError, match="grounding has 31 phrases; .* at most 30"):
    edit.run(eparams, dict(base, boxes=jnp.zeros((1, 31, 4)),
                           phrase_embeddings=jnp.zeros((1, 31, D))), c1, jax.random.key(0))
  with pytest.raises(ValueError, match="edit_image needs the edit region batch\\['masks'\\]"):
    edit.run(eparams, {"images": images[:1]}, c1, jax.random.key(0))
  with pytest.raises(ValueError, match="condition_dropout must be in \\[0, 1\\]"):
    BK.DiffusionBackendConfig(condition_dropout=2.0)
