"""HF folder -> load_llama -> save_llama -> transformers round trips, and refused inputs."""
import json

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from vitron_jax.convert import WeightsError, WeightsMismatchError, read_weights
from vitron_jax.convert.llama import load_llama, save_llama
from vitron_jax.convert.safetensors_io import write_weights


def tiny_hf(seed=0, **kw):
  base = dict(vocab_size=80, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
              rms_norm_eps=1e-5)
  base.update(kw)
  torch.manual_seed(seed)
  model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**base)).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.normal_(0.0, 0.1) if p.ndim == 2 else p.uniform_(0.5, 1.5)
  return model


def torch_logits(model, ids):
  with torch.no_grad():
    return model(torch.tensor(ids)).logits.numpy()


IDS = np.random.default_rng(0).integers(0, 80, (2, 7))


@pytest.mark.parametrize("shard,tied,scan", [(None, False, True), ("20KB", False, False),
                                             ("20KB", True, True)])
def test_roundtrip_through_transformers(tmp_path, shard, tied, scan):
  hf = tiny_hf(tie_word_embeddings=tied)
  src = tmp_path / "hf"
  kw = {} if shard is None else {"max_shard_size": shard}
  hf.save_pretrained(src, **kw)
  if shard:
    assert list(src.glob("*.safetensors.index.json")), "the source should be sharded"
  ref = torch_logits(hf, IDS)

  module, params = load_llama(src, scan_layers=scan)
  assert module.config.scan_layers is scan and module.config.tie_word_embeddings is tied
  got = np.asarray(module.apply({"params": params}, jnp.asarray(IDS)))
  np.testing.assert_allclose(got, ref, atol=1e-4)

  for max_shard_bytes in (None, 16 * 1024):
    dst = tmp_path / f"out_{max_shard_bytes}"
    files = save_llama(module, params, dst, max_shard_bytes=max_shard_bytes)
    assert (len(files) > 1) == (max_shard_bytes is not None)
    back = transformers.LlamaForCausalLM.from_pretrained(dst).eval()
    assert back.config.tie_word_embeddings is tied
    for k, v in hf.state_dict().items():
      np.testing.assert_array_equal(back.state_dict()[k].numpy(), v.numpy(), err_msg=k)
    np.testing.assert_array_equal(torch_logits(back, IDS), ref)
    # and back into Flax, in the other layer layout
    module2, params2 = load_llama(dst, scan_layers=not scan)
    np.testing.assert_allclose(np.asarray(module2.apply({"params": params2}, jnp.asarray(IDS))),
                               ref, atol=1e-4)


def test_all_key_problems_reported_at_once(tmp_path):
  hf = tiny_hf()
  hf.save_pretrained(tmp_path)
  tensors = read_weights(tmp_path)
  del tensors["model.layers.1.mlp.up_proj.weight"]
  tensors["model.layers.7.mlp.up_proj.weight"] = np.zeros((48, 32), np.float32)
  tensors["model.norm.weight"] = np.ones((31,), np.float32)
  for p in tmp_path.glob("*.safetensors*"):
    p.unlink()
  write_weights(tensors, tmp_path)
  with pytest.raises(WeightsMismatchError) as err:
    load_llama(tmp_path)
  e = err.value
  assert e.missing == ["model.layers.1.mlp.up_proj.weight"]
  assert e.unexpected == ["model.layers.7.mlp.up_proj.weight"]
  assert e.mismatched == [("model.norm.weight", (31,), (32,))]
  msg = str(e)
  for s in ("missing keys (1)", "unexpected keys (1)", "shape mismatch for 'model.norm.weight'"):
    assert s in msg


def test_folder_without_safetensors_and_pickles_are_refused(tmp_path):
  hf = tiny_hf()
  empty = tmp_path / "empty"
  hf.config.save_pretrained(empty)
  with pytest.raises(WeightsError, match=r"no \*\.safetensors weights"):
    load_llama(empty)
  pickled = tmp_path / "pickled"
  hf.config.save_pretrained(pickled)
  torch.save(hf.state_dict(), pickled / "pytorch_model.bin")
  with pytest.raises(WeightsError, match="pickle weights.*never loaded"):
    load_llama(pickled)
  # a pickle disguised as safetensors is refused too
  (pickled / "model.safetensors").write_bytes((pickled / "pytorch_model.bin").read_bytes())
  with pytest.raises(WeightsError, match="pickle"):
    load_llama(pickled)
  with pytest.raises(WeightsError, match="config.json"):
    load_llama(tmp_path / "nowhere")


def test_saved_config_is_transformers_format(tmp_path):
  hf = tiny_hf(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4})
  hf.save_pretrained(tmp_path / "a")
  module, params = load_llama(tmp_path / "a", remat_policy="full")
  save_llama(module, params, tmp_path / "b")
  cfg = json.loads((tmp_path / "b" / "config.json").read_text())
  assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["model_type"] == "llama"
  assert cfg["rope_parameters"] == {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}
  assert "remat_policy" not in cfg and "scan_layers" not in cfg
  back = transformers.AutoConfig.from_pretrained(tmp_path / "b")
  assert back.rope_parameters == hf.config.rope_parameters
  assert back.num_key_value_heads == 2 and back.head_dim == 8
