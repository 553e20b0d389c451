"""`vitron-convert import|export`: HF folder -> orbax checkpoint -> HF folder, same outputs."""
import importlib.metadata
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers

from vitron_jax.convert import cli


def _tiny_llama(path):
  torch.manual_seed(0)
  cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                 num_hidden_layers=2, num_attention_heads=4,
                                 num_key_value_heads=2, max_position_embeddings=64)
  model = transformers.LlamaForCausalLM(cfg).eval()
  model.save_pretrained(path)
  return model


def _tiny_clip_vision(path):
  torch.manual_seed(1)
  cfg = transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, image_size=24, patch_size=6,
                                      projection_dim=16)
  model = transformers.CLIPVisionModelWithProjection(cfg).eval()
  model.save_pretrained(path)
  return model


def test_console_script_is_registered():
  names = {e.name: e.value for e in importlib.metadata.entry_points(group="console_scripts")}
  assert names.get("vitron-convert") == "vitron_jax.convert.cli:run"


def test_llama_import_export_roundtrip(tmp_path):
  ref = _tiny_llama(tmp_path / "hf")
  assert cli.main(["import", "llama", str(tmp_path / "hf"), str(tmp_path / "ckpt")]) == 0
  meta = json.loads((tmp_path / "ckpt" / "model.json").read_text())
  assert meta["kind"] == "llama" and meta["description"]["config"]["num_hidden_layers"] == 2
  assert cli.main(["export", "llama", str(tmp_path / "ckpt"), str(tmp_path / "out")]) == 0
  back = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "out").eval()
  ids = torch.randint(0, 64, (2, 9))
  with torch.no_grad():
    np.testing.assert_array_equal(back(ids).logits.numpy(), ref(ids).logits.numpy())


def test_clip_vision_roundtrip_via_subprocess(tmp_path):
  ref = _tiny_clip_vision(tmp_path / "hf")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  for verb, src, dst in [("import", "hf", "ckpt"), ("export", "ckpt", "out")]:
    r = subprocess.run([sys.executable, "-m", "vitron_jax.convert.cli", verb, "clip_vision",
                        str(tmp_path / src), str(tmp_path / dst)], capture_output=True,
                       text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
  back = transformers.CLIPVisionModelWithProjection.from_pretrained(tmp_path / "out").eval()
  x = torch.randn(2, 3, 24, 24)
  with torch.no_grad():
    np.testing.assert_array_equal(back(x).image_embeds.numpy(), ref(x).image_embeds.numpy())


def test_export_refuses_other_kind_and_bad_usage(tmp_path, capsys):
  _tiny_llama(tmp_path / "hf")
  assert cli.main(["import", "llama", str(tmp_path / "hf"), str(tmp_path / "ckpt")]) == 0
  assert cli.main(["export", "clip_text", str(tmp_path / "ckpt"), str(tmp_path / "o")]) == 1
  assert "holds a 'llama' model, not 'clip_text'" in capsys.readouterr().err
  assert cli.main(["import", "nope", str(tmp_path / "hf"), str(tmp_path / "c2")]) == 1
  assert "unknown model kind 'nope'" in capsys.readouterr().err
  assert cli.main(["import", "llama", str(tmp_path / "hf"), str(tmp_path / "ckpt")]) == 1
  assert "already holds params" in capsys.readouterr().err
  assert cli.main(["frobnicate"]) == 2
  with pytest.raises(FileNotFoundError, match="not a vitron-convert checkpoint"):
    cli.load_checkpoint(tmp_path / "hf")


def test_vae_import_export_roundtrip(tmp_path):
  import diffusers
  torch.manual_seed(2)
  ref = diffusers.AutoencoderKL(block_out_channels=(8, 16), down_block_types=(
      "DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4,
                                norm_num_groups=4, layers_per_block=1, sample_size=16).eval()
  ref.save_pretrained(tmp_path / "hf")
  assert cli.main(["import", "vae", str(tmp_path / "hf"), str(tmp_path / "ckpt")]) == 0
  assert cli.main(["export", "vae", str(tmp_path / "ckpt"), str(tmp_path / "out")]) == 0
  back = diffusers.AutoencoderKL.from_pretrained(tmp_path / "out").eval()
  z = torch.randn(1, 4, 8, 8)
  with torch.no_grad():
    np.testing.assert_array_equal(back.decode(z).sample.numpy(), ref.decode(z).sample.numpy())


def test_every_kind_is_importable_and_builtin_backends_resolve():
  from vitron_jax.backends.base import REGISTRY
  from vitron_jax.convert.kinds import KINDS
  from vitron_jax.protocol.tokens import MODULES
  for kind in KINDS.values():
    assert callable(kind.load_fn()) and callable(kind.save_fn()), kind.name
  assert REGISTRY.modules() == sorted(MODULES)
  for module in MODULES:
    assert REGISTRY.factory(module).module == module
