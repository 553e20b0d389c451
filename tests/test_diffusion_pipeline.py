"""Tiny text -> image pipelines against diffusers built from the same random components.

UNet2DConditionModel, AutoencoderKL, CLIPTextModel and a CLIPTokenizer (vocab/merges written
here) are created with torch, saved as diffusers/transformers folders, loaded with our
converters, and the whole pipeline (text encoding, guided sampling, decoding) is compared
from the same initial noise.
"""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from diffusers import (AutoencoderKL, DDIMScheduler, DPMSolverMultistepScheduler,
                       EulerDiscreteScheduler, StableDiffusionGLIGENPipeline,
                       StableDiffusionPipeline, UNet2DConditionModel)

from vitron_jax.backends.diffusion import pipelines as P
from vitron_jax.backends.diffusion import schedulers as S
from vitron_jax.backends.diffusion.gligen import GligenInputs
from vitron_jax.convert.clip import load_clip_text
from vitron_jax.convert.diffusers import load_unet2d, load_vae

MAX_LEN = 12
SCHEDULERS = {
    "ddim": (DDIMScheduler, dict(clip_sample=False, set_alpha_to_one=False, steps_offset=1)),
    "dpm_solver": (DPMSolverMultistepScheduler, dict(steps_offset=1)),
    "euler": (EulerDiscreteScheduler, dict(timestep_spacing="trailing", steps_offset=1)),
}


def randomize(model: torch.nn.Module, seed: int) -> None:
  """Seeded noise in every parameter (zero-initialised gates / out-convs would hide paths)."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      n = torch.randn(p.shape, generator=g)
      if p.ndim >= 2:
        p.copy_(n / p[0].numel() ** 0.5)
      elif name.endswith("weight"):
        p.copy_(1.0 + 0.1 * n)
      else:
        p.copy_(0.5 * n if p.ndim == 0 else 0.1 * n)


def make_tokenizer(path: str) -> transformers.CLIPTokenizer:
  letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
  toks = letters + [c + "</w>" for c in letters] + ["ca", "cat</w>", "do", "dog</w>"]
  vocab = {t: i for i, t in enumerate(toks)}
  vocab["<|startoftext|>"] = len(vocab)
  vocab["<|endoftext|>"] = len(vocab)
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "vocab.json"), "w") as f:
    json.dump(vocab, f)
  with open(os.path.join(path, "merges.txt"), "w") as f:
    f.write("#version: 0.2\nc a\nca t</w>\nd o\ndo g</w>\n")
  tok = transformers.CLIPTokenizer(os.path.join(path, "vocab.json"),
                                   os.path.join(path, "merges.txt"), pad_token="<|endoftext|>")
  tok.model_max_length = MAX_LEN
  return tok


@pytest.fixture(scope="module")
def components(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("tiny_sd"))
  tok = make_tokenizer(os.path.join(root, "tokenizer"))
  torch.manual_seed(0)
  text = transformers.CLIPTextModel(transformers.CLIPTextConfig(
      vocab_size=len(tok), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
      num_attention_heads=4, max_position_embeddings=MAX_LEN, bos_token_id=tok.bos_token_id,
      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)).eval()
  unet = UNet2DConditionModel(
      sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64),
      layers_per_block=1, norm_num_groups=8, cross_attention_dim=32, attention_head_dim=4,
      down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
      up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")).eval()
  vae = AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(16, 32),
                      down_block_types=("DownEncoderBlock2D",) * 2,
                      up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4,
                      norm_num_groups=8, sample_size=16).eval()
  gligen = UNet2DConditionModel(
      sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64),
      layers_per_block=1, norm_num_groups=8, cross_attention_dim=32, attention_head_dim=4,
      down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
      up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), attention_type="gated").eval()
  for i, m in enumerate((text, unet, vae, gligen)):
    randomize(m, i)
  text.save_pretrained(os.path.join(root, "text_encoder"))
  unet.save_pretrained(os.path.join(root, "unet"))
  vae.save_pretrained(os.path.join(root, "vae"))
  gligen.save_pretrained(os.path.join(root, "gligen"))
  ours = {}
  te, ours["text_encoder"] = load_clip_text(os.path.join(root, "text_encoder"))
  un, ours["unet"] = load_unet2d(os.path.join(root, "unet"))
  va, ours["vae"] = load_vae(os.path.join(root, "vae"))
  gl, gligen_params = load_unet2d(os.path.join(root, "gligen"))
  return dict(tok=tok, text=text, unet=unet, vae=vae, gligen=gligen, modules=(un, va, te),
              params=ours, gligen_module=gl, gligen_params=dict(ours, unet=gligen_params))


def ids(tok, prompts):
  return np.asarray(tok(prompts, padding="max_length", max_length=MAX_LEN, truncation=True)
                    ["input_ids"], np.int32)


@pytest.mark.parametrize("kind", ["ddim", pytest.param("dpm_solver", marks=pytest.mark.slow),
                                  pytest.param("euler", marks=pytest.mark.slow)])
def test_text_to_image_matches_stable_diffusion_pipeline(components, kind):
  cls, extra = SCHEDULERS[kind]
  sched_cfg = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, **extra)
  theirs = cls(**sched_cfg)
  pipe = StableDiffusionPipeline(
      vae=components["vae"], text_encoder=components["text"], tokenizer=components["tok"],
      unet=components["unet"], scheduler=theirs, safety_checker=None, feature_extractor=None,
      requires_safety_checker=False)
  pipe.set_progress_bar_config(disable=True)
  prompts = ["a cat", "dog"]
  noise = np.random.default_rng(0).standard_normal((2, 8, 8, 4)).astype(np.float32)
  steps, g = 4, 6.0
  with torch.no_grad():
    want = pipe(prompts, num_inference_steps=steps, guidance_scale=g, output_type="np",
                latents=torch.from_numpy(noise).permute(0, 3, 1, 2), height=16,
                width=16).images
    want_lat = pipe(prompts, num_inference_steps=steps, guidance_scale=g, output_type="latent",
                    latents=torch.from_numpy(noise).permute(0, 3, 1, 2), height=16,
                    width=16).images.permute(0, 2, 3, 1).numpy()

  un, va, te = components["modules"]
  models = P.DiffusionModels(unet=un, vae=va, text_encoder=te,
                             scheduler=S.from_diffusers_config(dict(theirs.config), kind=kind))
  params = components["params"]

  @jax.jit
  def run(params, cond_ids, uncond_ids, noise):
    cond = P.encode_prompt(models, params, cond_ids)
    uncond = P.encode_prompt(models, params, uncond_ids)
    return P.text_to_image(models, params, cond, uncond, noise=noise,
                           num_inference_steps=steps, guidance_scale=g)

  got = run(params, ids(components["tok"], prompts), ids(components["tok"], ["", ""]),
            jnp.asarray(noise))
  np.testing.assert_allclose(np.asarray(got["latents"]), want_lat, atol=1e-3, rtol=1e-3)
  assert got["images"].shape == want.shape == (2, 16, 16, 3)
  np.testing.assert_allclose(np.asarray(got["images"]), want, atol=1e-3)


def test_grounded_text_to_image_matches_gligen_pipeline(components):
  theirs = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                         clip_sample=False, set_alpha_to_one=False, steps_offset=1)
  pipe = StableDiffusionGLIGENPipeline(
      vae=components["vae"], text_encoder=components["text"], tokenizer=components["tok"],
      unet=components["gligen"], scheduler=theirs, safety_checker=None, feature_extractor=None,
      requires_safety_checker=False)
  pipe.set_progress_bar_config(disable=True)
  phrases, boxes = ["a cat", "dog"], [[0.1, 0.1, 0.5, 0.6], [0.4, 0.3, 0.9, 1.0]]
  noise = np.random.default_rng(1).standard_normal((1, 8, 8, 4)).astype(np.float32)
  steps, g, beta = 4, 5.0, 0.5
  with torch.no_grad():
    want = pipe("a cat", gligen_phrases=phrases, gligen_boxes=boxes, num_inference_steps=steps,
                guidance_scale=g, gligen_scheduled_sampling_beta=beta, output_type="latent",
                latents=torch.from_numpy(noise).permute(0, 3, 1, 2), height=16,
                width=16).images.permute(0, 2, 3, 1).numpy()
  _, va, te = components["modules"]
  models = P.DiffusionModels(unet=components["gligen_module"], vae=va, text_encoder=te,
                             scheduler=S.from_diffusers_config(dict(theirs.config), kind="ddim"))
  params = components["gligen_params"]
  tok = components["tok"]
  phrase_ids = np.asarray(tok(phrases, padding=True)["input_ids"], np.int32)[None]

  @jax.jit
  def run(params, cond_ids, uncond_ids, phrase_ids, boxes, noise):
    cond = P.encode_prompt(models, params, cond_ids)
    uncond = P.encode_prompt(models, params, uncond_ids)
    emb = P.encode_phrases(models, params, phrase_ids)
    grounding = GligenInputs(boxes, emb, jnp.ones(boxes.shape[:2]))
    return P.text_to_image(models, params, cond, uncond, noise=noise, grounding=grounding,
                           gligen_beta=beta, num_inference_steps=steps, guidance_scale=g)

  got = run(params, ids(tok, ["a cat"]), ids(tok, [""]), phrase_ids,
            jnp.asarray([boxes], jnp.float32), jnp.asarray(noise))
  np.testing.assert_allclose(np.asarray(got["latents"]), want, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("clip_skip", [None, 0, 1])
def test_clip_skip_matches_transformers(components, clip_skip):
  """diffusers' rule: hidden state `clip_skip` layers before the last, then final_layer_norm."""
  tok, text = components["tok"], components["text"]
  x = ids(tok, ["a cat", ""])
  with torch.no_grad():
    out = text(torch.from_numpy(x).long(), output_hidden_states=True)
    want = (out.last_hidden_state if clip_skip is None else
            text.final_layer_norm(out.hidden_states[-(clip_skip + 1)])).numpy()
  _, va, te = components["modules"]
  models = P.DiffusionModels(unet=None, vae=va, text_encoder=te,
                             scheduler=S.SchedulerConfig())
  got = P.encode_prompt(models, components["params"], x, clip_skip=clip_skip)
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-4)


@pytest.mark.slow
def test_progress_mode_equals_jitted_pipeline(components):
  un, va, te = components["modules"]
  models = P.DiffusionModels(unet=un, vae=va, text_encoder=te,
                             scheduler=S.SchedulerConfig(kind="dpm_solver"))
  params = components["params"]
  cond = P.encode_prompt(models, params, ids(components["tok"], ["a cat"]))
  unc = P.encode_prompt(models, params, ids(components["tok"], [""]))
  noise = P.latent_noise(models, jax.random.key(0), 1, 16, 16)
  one = jax.jit(lambda p, c, u, n: P.text_to_image(models, p, c, u, noise=n,
                                                   num_inference_steps=5))(params, cond, unc,
                                                                           noise)
  seen = []
  chunked = P.text_to_image(models, params, cond, unc, noise=noise, num_inference_steps=5,
                            progress=lambda d, n: seen.append(d))
  np.testing.assert_allclose(np.asarray(chunked["images"]), np.asarray(one["images"]),
                             atol=1e-5)
  assert seen[-1] == 5


def test_inpainting_keeps_the_unmasked_region(components):
  """With a 4-channel UNet the known region is re-imposed every step: outside the mask the
  final latents are the image's latents up to the last step's small noise and update."""
  un, va, te = components["modules"]
  models = P.DiffusionModels(unet=un, vae=va, text_encoder=te,
                             scheduler=S.SchedulerConfig(kind="ddim", beta_schedule="scaled_linear",
                                                         beta_start=0.00085, beta_end=0.012))
  params = components["params"]
  cond = P.encode_prompt(models, params, ids(components["tok"], ["a cat"]))
  unc = P.encode_prompt(models, params, ids(components["tok"], [""]))
  images = jnp.asarray(np.random.default_rng(1).uniform(0, 1, (1, 16, 16, 3)), jnp.float32)
  masks = np.zeros((1, 16, 16, 1), np.float32)
  masks[:, :8] = 1   # repaint the top half
  key = jax.random.key(3)
  out = jax.jit(lambda p, c, u, im, m, n, k: P.inpaint_image(
      models, p, c, u, images=im, masks=m, noise=n, rng=k, num_inference_steps=10))(
          params, cond, unc, images, masks, P.latent_noise(models, key, 1, 16, 16), key)
  known = P._encode_pm1(models, params, images * 2 - 1, jax.random.split(key)[0])
  lat = np.asarray(out["latents"])
  keep_err = np.abs(lat[:, 4:] - np.asarray(known)[:, 4:]).mean()
  edit_err = np.abs(lat[:, :4] - np.asarray(known)[:, :4]).mean()
  assert keep_err < 0.08 and keep_err < 0.25 * edit_err, (keep_err, edit_err)


def test_bad_inputs_name_the_input(components):
  un, va, te = components["modules"]
  models = P.DiffusionModels(unet=un, vae=va, text_encoder=te,
                             scheduler=S.SchedulerConfig(kind="ddim"))
  params = components["params"]
  cond = jnp.zeros((1, MAX_LEN, 32))
  noise = jnp.zeros((1, 8, 8, 4))
  with pytest.raises(ValueError, match="condition must be \\[batch, tokens, 32\\]"):
    P.text_to_image(models, params, jnp.zeros((1, MAX_LEN, 16)), noise=noise)
  with pytest.raises(ValueError, match="noise must be latents \\[B, h, w, c\\] with B=1, c=4"):
    P.text_to_image(models, params, cond, noise=jnp.zeros((1, 8, 8, 3)))
  with pytest.raises(ValueError, match="needs a GLIGEN UNet"):
    P.text_to_image(models, params, cond, noise=noise, grounding=GligenInputs(
        jnp.zeros((1, 1, 4)), jnp.zeros((1, 1, 32)), jnp.ones((1, 1))))
  images = jnp.full((1, 16, 16, 3), 0.5)
  with pytest.raises(ValueError, match="images must be float in \\[0, 1\\]"):
    P.inpaint_image(models, params, cond, images=images * 4, masks=jnp.zeros((1, 16, 16)),
                    noise=noise, rng=jax.random.key(0))
  with pytest.raises(ValueError, match="images must be channels-last \\[B, H, W, C\\] with C=3"):
    P.inpaint_image(models, params, cond, images=images[..., :1], masks=jnp.zeros((1, 16, 16)),
                    noise=noise, rng=jax.random.key(0))
  with pytest.raises(ValueError, match="masks must be \\(1, 16, 16\\)"):
    P.inpaint_image(models, params, cond, images=images, masks=jnp.zeros((1, 8, 8)),
                    noise=noise, rng=jax.random.key(0))
  with pytest.raises(ValueError, match="masks must be binary"):
    P.inpaint_image(models, params, cond, images=images, masks=jnp.full((1, 16, 16), 0.5),
                    noise=noise, rng=jax.random.key(0))
  with pytest.raises(ValueError, match="height and width must be multiples of the VAE factor 2"):
    P.latent_noise(models, jax.random.key(0), 1, 15, 16)


# --------------------------------------------------------------------------------------------
# Video: text -> video (ZeroScope-style UNet3D), video -> video, image -> video (I2VGen-XL)

@pytest.fixture(scope="module")
def video_components(components, tmp_path_factory):
  from diffusers import I2VGenXLUNet, UNet3DConditionModel
  from vitron_jax.convert.clip import load_clip_vision
  from vitron_jax.convert.diffusers import load_i2vgen_unet, load_unet3d
  root = str(tmp_path_factory.mktemp("tiny_video"))
  torch.manual_seed(1)
  unet3d = UNet3DConditionModel(
      sample_size=8, block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8,
      cross_attention_dim=32, attention_head_dim=8,
      down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
      up_block_types=("UpBlock3D", "CrossAttnUpBlock3D")).eval()
  i2v = I2VGenXLUNet(
      sample_size=8, block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8,
      cross_attention_dim=32, attention_head_dim=8,
      down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
      up_block_types=("UpBlock3D", "CrossAttnUpBlock3D")).eval()
  vision = transformers.CLIPVisionModelWithProjection(transformers.CLIPVisionConfig(
      hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
      image_size=16, patch_size=4, projection_dim=32)).eval()
  for i, m in enumerate((unet3d, i2v, vision)):
    randomize(m, 10 + i)
  unet3d.save_pretrained(os.path.join(root, "unet3d"))
  i2v.save_pretrained(os.path.join(root, "i2v"))
  vision.save_pretrained(os.path.join(root, "image_encoder"))
  m3, p3 = load_unet3d(os.path.join(root, "unet3d"))
  mi, pi = load_i2vgen_unet(os.path.join(root, "i2v"))
  mv, pv = load_clip_vision(os.path.join(root, "image_encoder"))
  return dict(unet3d=unet3d, i2v=i2v, vision=vision, m3=m3, mi=mi, mv=mv,
              p3=dict(components["params"], unet=p3),
              pi=dict(components["params"], unet=pi, image_encoder=pv))


@pytest.fixture
def posterior_mode(monkeypatch):
  """diffusers' video pipelines sample the VAE posterior with torch's RNG; use its mode on both
  sides (our pipelines do so without an rng)."""
  from diffusers.models.autoencoders import vae as dvae
  monkeypatch.setattr(dvae.DiagonalGaussianDistribution, "sample",
                      lambda self, generator=None: self.mode())


def _video_models(components, unet, kind="dpm_solver", image_encoder=None):
  _, va, te = components["modules"]
  return P.DiffusionModels(unet=unet, vae=va, text_encoder=te, image_encoder=image_encoder,
                           scheduler=S.SchedulerConfig(kind=kind, beta_schedule="scaled_linear",
                                                       beta_start=0.00085, beta_end=0.012,
                                                       steps_offset=1))


@pytest.mark.slow
def test_text_to_video_matches_diffusers(components, video_components):
  from diffusers import TextToVideoSDPipeline
  models = _video_models(components, video_components["m3"])
  theirs = DPMSolverMultistepScheduler.from_config(models.scheduler.to_diffusers_config())
  pipe = TextToVideoSDPipeline(vae=components["vae"], text_encoder=components["text"],
                               tokenizer=components["tok"], unet=video_components["unet3d"],
                               scheduler=theirs)
  pipe.set_progress_bar_config(disable=True)
  noise = np.random.default_rng(2).standard_normal((1, 3, 8, 8, 4)).astype(np.float32)
  with torch.no_grad():
    want = pipe("a cat", num_frames=3, num_inference_steps=3, guidance_scale=9.0, height=16,
                width=16, output_type="np",
                latents=torch.from_numpy(noise).permute(0, 4, 1, 2, 3)).frames
  params = video_components["p3"]
  tok = components["tok"]
  got = jax.jit(lambda p, c, u, n: P.text_to_video(
      models, p, P.encode_prompt(models, p, c), P.encode_prompt(models, p, u), noise=n,
      num_inference_steps=3, guidance_scale=9.0))(params, ids(tok, ["a cat"]), ids(tok, [""]),
                                                   jnp.asarray(noise))
  assert got["videos"].shape == want.shape == (1, 3, 16, 16, 3)
  np.testing.assert_allclose(np.asarray(got["videos"]), want, atol=1e-3)


@pytest.mark.slow
def test_video_to_video_matches_diffusers(components, video_components, posterior_mode):
  from diffusers import VideoToVideoSDPipeline
  models = _video_models(components, video_components["m3"], kind="ddim")
  theirs = DDIMScheduler.from_config(models.scheduler.to_diffusers_config())
  pipe = VideoToVideoSDPipeline(vae=components["vae"], text_encoder=components["text"],
                                tokenizer=components["tok"], unet=video_components["unet3d"],
                                scheduler=theirs)
  pipe.set_progress_bar_config(disable=True)
  video = np.random.default_rng(3).uniform(0, 1, (1, 3, 16, 16, 3)).astype(np.float32)
  steps, strength = 5, 0.6
  noise = torch.randn((3, 4, 8, 8), generator=torch.Generator().manual_seed(4))
  with torch.no_grad():
    want = pipe("dog", video=video, strength=strength, num_inference_steps=steps,
                guidance_scale=12.0, output_type="np",
                generator=torch.Generator().manual_seed(4)).frames
  ours_noise = noise.numpy().transpose(0, 2, 3, 1)[None]
  params = video_components["p3"]
  tok = components["tok"]
  got = jax.jit(lambda p, c, u, v, n: P.video_to_video(
      models, p, P.encode_prompt(models, p, c), P.encode_prompt(models, p, u), videos=v,
      noise=n, strength=strength, num_inference_steps=steps, guidance_scale=12.0))(
          params, ids(tok, ["dog"]), ids(tok, [""]), jnp.asarray(video), jnp.asarray(ours_noise))
  np.testing.assert_allclose(np.asarray(got["videos"]), want, atol=1e-3)


@pytest.mark.slow
def test_image_to_video_matches_i2vgen_pipeline(components, video_components, posterior_mode):
  import PIL.Image
  from diffusers import I2VGenXLPipeline
  models = _video_models(components, video_components["mi"], kind="ddim",
                         image_encoder=video_components["mv"])
  theirs = DDIMScheduler.from_config(models.scheduler.to_diffusers_config())
  fe = transformers.CLIPImageProcessor(size={"shortest_edge": 16},
                                       crop_size={"height": 16, "width": 16})
  pipe = I2VGenXLPipeline(vae=components["vae"], text_encoder=components["text"],
                          tokenizer=components["tok"], image_encoder=video_components["vision"],
                          feature_extractor=fe, unet=video_components["i2v"], scheduler=theirs)
  pipe.set_progress_bar_config(disable=True)
  pixels = np.random.default_rng(5).integers(0, 256, (16, 16, 3), dtype=np.uint8)
  noise = np.random.default_rng(6).standard_normal((1, 3, 8, 8, 4)).astype(np.float32)
  steps, g, fps = 3, 9.0, 8
  with torch.no_grad():
    # clip_skip=None: diffusers' clip_skip path reads `text_encoder.text_model`, which
    # transformers 5's CLIPTextModel no longer has (ours is checked in test_clip_skip)
    want = pipe("a cat", image=PIL.Image.fromarray(pixels), height=16, width=16, num_frames=3,
                target_fps=fps, num_inference_steps=steps, guidance_scale=g, output_type="np",
                latents=torch.from_numpy(noise).permute(0, 4, 1, 2, 3), clip_skip=None).frames
  params = video_components["pi"]
  tok = components["tok"]
  image = jnp.asarray(pixels[None] / 255.0, jnp.float32)

  @jax.jit
  def run(p, c, u, im, n):
    cond = P.encode_prompt(models, p, c)
    unc = P.encode_prompt(models, p, u)
    return P.image_to_video(models, p, cond, unc, images=im, noise=n, fps=fps,
                            num_inference_steps=steps, guidance_scale=g)
  got = run(params, ids(tok, ["a cat"]), ids(tok, [""]), image, jnp.asarray(noise))
  np.testing.assert_allclose(np.asarray(got["videos"]), want, atol=1e-3)


def test_whole_pipeline_folder_loads_and_matches_diffusers(components, tmp_path):
  from vitron_jax.convert import load_diffusion_pipeline
  from vitron_jax.convert.safetensors_io import WeightsError
  theirs = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                         clip_sample=False, set_alpha_to_one=False, steps_offset=1)
  pipe = StableDiffusionPipeline(
      vae=components["vae"], text_encoder=components["text"], tokenizer=components["tok"],
      unet=components["unet"], scheduler=theirs, safety_checker=None, feature_extractor=None,
      requires_safety_checker=False)
  pipe.set_progress_bar_config(disable=True)
  pipe.save_pretrained(tmp_path / "pipe")
  models, params = load_diffusion_pipeline(tmp_path / "pipe")
  assert models.scheduler.kind == "ddim" and models.image_encoder is None
  tok = transformers.CLIPTokenizer.from_pretrained(tmp_path / "pipe" / "tokenizer")
  noise = np.random.default_rng(3).standard_normal((1, 8, 8, 4)).astype(np.float32)
  with torch.no_grad():
    want = pipe(["a cat"], num_inference_steps=3, guidance_scale=4.0, output_type="latent",
                latents=torch.from_numpy(noise).permute(0, 3, 1, 2), height=16,
                width=16).images.permute(0, 2, 3, 1).numpy()
  cond = P.encode_prompt(models, params, ids(tok, ["a cat"]))
  uncond = P.encode_prompt(models, params, ids(tok, [""]))
  got = P.text_to_image(models, params, cond, uncond, noise=jnp.asarray(noise),
                        num_inference_steps=3, guidance_scale=4.0)
  np.testing.assert_allclose(np.asarray(got["latents"]), want, atol=1e-3, rtol=1e-3)
  with pytest.raises(WeightsError, match="no model_index.json"):
    load_diffusion_pipeline(tmp_path)
