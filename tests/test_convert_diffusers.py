"""diffusers folders <-> Flax: load, export, reload with `from_pretrained`, and the errors."""
import json

import jax
import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL as TorchVAE
from diffusers import I2VGenXLUNet as TorchI2VGen
from diffusers import UNet2DConditionModel as TorchUNet2D
from diffusers import UNet3DConditionModel as TorchUNet3D

from vitron_jax.convert import diffusers as conv
from vitron_jax.convert.safetensors_io import WeightsError
from vitron_jax.convert.tree import WeightsMismatchError

TINY_VAE = dict(block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
                down_block_types=("DownEncoderBlock2D",) * 2,
                up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, sample_size=16)
TINY_UNET = dict(sample_size=8, in_channels=9, out_channels=4, block_out_channels=(16, 32),
                 layers_per_block=1, norm_num_groups=8, cross_attention_dim=16,
                 attention_head_dim=2, attention_type="gated", use_linear_projection=True,
                 down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
TINY_3D = dict(sample_size=8, block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
               cross_attention_dim=16, attention_head_dim=4,
               down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
               up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"))


def _randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
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
  return model.eval()


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
  sa, sb = a.state_dict(), b.state_dict()
  assert sorted(sa) == sorted(sb)
  for k in sa:
    assert torch.equal(sa[k], sb[k]), k


def test_names_map_both_ways():
  f2t = conv.flax_to_torch_name
  assert f2t("down_blocks_0/resnets_1/conv1/kernel") == "down_blocks.0.resnets.1.conv1.weight"
  assert f2t("time_embedding/linear_1/bias") == "time_embedding.linear_1.bias"
  assert (f2t("down_blocks_0/attentions_0/transformer_blocks_0/attn1/to_out_0/kernel")
          == "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0.weight")
  assert (f2t("down_blocks_0/temp_convs_0/conv2_3/kernel")
          == "down_blocks.0.temp_convs.0.conv2.3.weight")
  assert f2t("mid_block/attentions_0/group_norm/weight") == "mid_block.attentions.0.group_norm.weight"


def test_vae_load_export_reload(tmp_path):
  torch.manual_seed(0)
  ref = _randomize(TorchVAE(**TINY_VAE))
  ref.save_pretrained(tmp_path / "src")
  module, params = conv.load_vae(tmp_path / "src")
  z = np.random.default_rng(0).normal(size=(1, 8, 8, 4)).astype(np.float32)
  with torch.no_grad():
    want = ref.decode(torch.from_numpy(z).permute(0, 3, 1, 2)).sample.permute(0, 2, 3, 1).numpy()
  got = module.apply({"params": params}, z, method=module.decode)
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-4, rtol=0)

  conv.save_vae(module, params, tmp_path / "out")
  back = TorchVAE.from_pretrained(tmp_path / "out").eval()
  _same_state(ref, back)
  assert dict(back.config)["scaling_factor"] == ref.config.scaling_factor
  with torch.no_grad():
    again = back.decode(torch.from_numpy(z).permute(0, 3, 1, 2)).sample.permute(0, 2, 3, 1)
  np.testing.assert_array_equal(again.numpy(), want)


def test_unet2d_gligen_inpainting_sharded_roundtrip(tmp_path):
  torch.manual_seed(0)
  ref = _randomize(TorchUNet2D(**TINY_UNET))
  ref.save_pretrained(tmp_path / "src", max_shard_size="100KB")
  assert (tmp_path / "src" / "diffusion_pytorch_model.safetensors.index.json").exists()
  module, params = conv.load_unet2d(tmp_path / "src")
  assert module.config.in_channels == 9 and module.config.attention_type == "gated"
  files = conv.save_unet2d(module, params, tmp_path / "out", max_shard_bytes=100_000)
  assert len(files) > 1
  back = TorchUNet2D.from_pretrained(tmp_path / "out").eval()
  _same_state(ref, back)
  assert dict(back.config)["attention_head_dim"] == 2
  rng = np.random.default_rng(0)
  x = torch.from_numpy(rng.normal(size=(1, 9, 8, 8)).astype(np.float32))
  ctx = torch.from_numpy(rng.normal(size=(1, 3, 16)).astype(np.float32))
  g = {"gligen": {"boxes": torch.tensor([[[0.1, 0.2, 0.5, 0.9]]]),
                  "positive_embeddings": torch.randn(1, 1, 16), "masks": torch.ones(1, 1)}}
  with torch.no_grad():
    a = ref(x, 10, ctx, cross_attention_kwargs=g).sample
    b = back(x, 10, ctx, cross_attention_kwargs=g).sample
  assert torch.equal(a, b)


@pytest.mark.parametrize("kind", ["unet3d", "i2vgen"])
def test_video_unets_roundtrip(tmp_path, kind):
  torch.manual_seed(0)
  cls = TorchUNet3D if kind == "unet3d" else TorchI2VGen
  ref = _randomize(cls(**TINY_3D))
  ref.save_pretrained(tmp_path / "src")
  load = conv.load_unet3d if kind == "unet3d" else conv.load_i2vgen_unet
  save = conv.save_unet3d if kind == "unet3d" else conv.save_i2vgen_unet
  module, params = load(tmp_path / "src")
  save(module.config, params, tmp_path / "out")
  back = cls.from_pretrained(tmp_path / "out").eval()
  _same_state(ref, back)
  g = torch.Generator().manual_seed(1)
  x = torch.randn(1, 4, 2, 8, 8, generator=g)  # [B, C, T, H, W]
  ctx = torch.randn(1, 3, 16, generator=g)
  extra = {} if kind == "unet3d" else dict(
      fps=torch.tensor([8]), image_latents=torch.randn(1, 4, 2, 8, 8, generator=g),
      image_embeddings=torch.randn(1, 16, generator=g))
  with torch.no_grad():
    a = ref(x, torch.tensor([5]), encoder_hidden_states=ctx, **extra).sample
    b = back(x, torch.tensor([5]), encoder_hidden_states=ctx, **extra).sample
  # Weights are bit-identical (above); PyTorch itself is not bit-reproducible across a reload
  # of I2VGenXLUNet (~1e-6, also for diffusers' own save_pretrained), hence a tolerance.
  torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_missing_weight_file_and_config(tmp_path):
  torch.manual_seed(0)
  TorchVAE(**TINY_VAE).save_pretrained(tmp_path / "m")
  (tmp_path / "m" / "diffusion_pytorch_model.safetensors").unlink()
  with pytest.raises(WeightsError, match=r"no \*\.safetensors weights in folder"):
    conv.load_vae(tmp_path / "m")
  (tmp_path / "empty").mkdir()
  with pytest.raises(WeightsError, match="no config.json"):
    conv.load_vae(tmp_path / "empty")
  TorchVAE(**TINY_VAE).save_pretrained(tmp_path / "v")
  with pytest.raises(WeightsError, match="holds a 'AutoencoderKL', expected a "
                                         "'UNet2DConditionModel'"):
    conv.load_unet2d(tmp_path / "v")


def test_key_mismatch_is_one_error_listing_everything(tmp_path):
  from safetensors.numpy import load_file, save_file
  torch.manual_seed(0)
  TorchVAE(**TINY_VAE).save_pretrained(tmp_path / "m")
  f = tmp_path / "m" / "diffusion_pytorch_model.safetensors"
  t = load_file(str(f))
  del t["decoder.conv_out.bias"]
  t["encoder.extra.weight"] = np.zeros(3, np.float32)
  t["quant_conv.weight"] = np.zeros((8, 8, 3, 3), np.float32)
  save_file(t, str(f))
  with pytest.raises(WeightsMismatchError) as e:
    conv.load_vae(tmp_path / "m")
  msg = str(e.value)
  assert "decoder.conv_out.bias" in msg and "encoder.extra.weight" in msg
  assert "'quant_conv.weight': checkpoint (8, 8, 3, 3), expected (8, 8, 1, 1)" in msg


def test_exported_config_is_diffusers_json(tmp_path):
  torch.manual_seed(0)
  ref = TorchUNet2D(**{**TINY_UNET, "attention_type": "default"})
  ref.save_pretrained(tmp_path / "src")
  module, params = conv.load_unet2d(tmp_path / "src")
  params = jax.tree_util.tree_map(np.asarray, params)
  conv.save_unet2d(module, params, tmp_path / "out")
  cfg = json.loads((tmp_path / "out" / "config.json").read_text())
  assert cfg["_class_name"] == "UNet2DConditionModel"
  assert "gligen_max_objs" not in cfg
  assert cfg["down_block_types"] == list(TINY_UNET["down_block_types"])
  own = json.loads(json.dumps(module.config.to_dict()))  # our own form, for orbax metadata
  assert own["gligen_max_objs"] == 30
  assert type(module.config).from_dict(own) == module.config
