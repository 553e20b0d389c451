"""HF CLIP folders <-> Flax: load, compare, save, reload with transformers."""
import json

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import load_file, save_file

from vitron_jax.convert.clip import (load_clip_text, load_clip_vision, save_clip_text,
                                     save_clip_vision)
from vitron_jax.convert.safetensors_io import WeightsError
from vitron_jax.convert.tree import WeightsMismatchError

VISION = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
              image_size=24, patch_size=6, hidden_act="gelu", projection_dim=16)
TEXT = dict(vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=16, hidden_act="quick_gelu",
            projection_dim=16, pad_token_id=1, bos_token_id=0, eos_token_id=2)
TOL = 1e-4


def _np(t):
  return t.detach().cpu().numpy()


def _err(a, b):
  return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


def _pixels(seed=0):
  return np.random.default_rng(seed).standard_normal((2, 24, 24, 3)).astype(np.float32)


def _ids():
  ids = np.array([[0, 5, 9, 98, 1, 1, 1], [0, 7, 3, 4, 8, 6, 98]], np.int64)
  return ids, (ids != 1).astype(np.int64)


def _hf_vision(m, x):
  with torch.no_grad():
    o = m(torch.from_numpy(x.transpose(0, 3, 1, 2)), output_hidden_states=True)
  return o


def _hf_text(m, ids, mask):
  with torch.no_grad():
    return m(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
             output_hidden_states=True)


def _same_state(a, b):
  sa, sb = a.state_dict(), b.state_dict()
  assert sorted(sa) == sorted(sb)
  for k in sa:
    assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("cls,shard", [(transformers.CLIPVisionModel, None),
                                       (transformers.CLIPVisionModelWithProjection, 20_000)])
def test_vision_roundtrip(tmp_path, cls, shard):
  torch.manual_seed(0)
  ref = cls(transformers.CLIPVisionConfig(**VISION)).eval()
  ref.save_pretrained(tmp_path / "hf", max_shard_size="20KB" if shard else "5GB")
  module, params = load_clip_vision(tmp_path / "hf")
  proj = cls is transformers.CLIPVisionModelWithProjection
  assert module.with_projection == proj
  x = _pixels()
  want = _hf_vision(ref, x)
  got = module.apply({"params": params}, x, output_hidden_states=True)
  assert _err(got.last_hidden_state, _np(want.last_hidden_state)) < TOL
  for a, b in zip(got.hidden_states, want.hidden_states):
    assert _err(a, _np(b)) < TOL
  if proj:
    assert _err(got.image_embeds, _np(want.image_embeds)) < TOL
  else:
    assert _err(got.pooler_output, _np(want.pooler_output)) < TOL

  save_clip_vision(module, params, tmp_path / "out", max_shard_bytes=shard)
  if shard:
    assert (tmp_path / "out" / "model.safetensors.index.json").is_file()
  assert json.loads((tmp_path / "out" / "config.json").read_text())["architectures"] == [
      cls.__name__]
  back = cls.from_pretrained(tmp_path / "out").eval()
  _same_state(ref, back)
  again = _hf_vision(back, x)
  for k in want.keys():
    v, w = want[k], again[k]
    if isinstance(v, tuple):
      assert all(torch.equal(a, b) for a, b in zip(v, w))
    else:
      assert torch.equal(v, w), k


@pytest.mark.parametrize("cls,shard", [(transformers.CLIPTextModel, 20_000),
                                       (transformers.CLIPTextModelWithProjection, None)])
def test_text_roundtrip(tmp_path, cls, shard):
  torch.manual_seed(1)
  ref = cls(transformers.CLIPTextConfig(**TEXT)).eval()
  ref.save_pretrained(tmp_path / "hf", max_shard_size="20KB" if shard else "5GB")
  module, params = load_clip_text(tmp_path / "hf")
  proj = cls is transformers.CLIPTextModelWithProjection
  assert module.with_projection == proj
  ids, mask = _ids()
  want = _hf_text(ref, ids, mask)
  got = module.apply({"params": params}, jnp.asarray(ids, jnp.int32), jnp.asarray(mask),
                     output_hidden_states=True)
  assert _err(got.last_hidden_state, _np(want.last_hidden_state)) < TOL
  for a, b in zip(got.hidden_states, want.hidden_states):
    assert _err(a, _np(b)) < TOL
  if proj:
    assert _err(got.text_embeds, _np(want.text_embeds)) < TOL
  else:
    assert _err(got.pooler_output, _np(want.pooler_output)) < TOL

  save_clip_text(module, params, tmp_path / "out", max_shard_bytes=shard)
  back = cls.from_pretrained(tmp_path / "out").eval()
  _same_state(ref, back)
  again = _hf_text(back, ids, mask)
  assert torch.equal(want.last_hidden_state, again.last_hidden_state)
  key = "text_embeds" if proj else "pooler_output"
  assert torch.equal(want[key], again[key])


def test_full_clip_model_folder(tmp_path):
  torch.manual_seed(2)
  cfg = transformers.CLIPConfig(text_config=TEXT, vision_config=VISION, projection_dim=12)
  ref = transformers.CLIPModel(cfg).eval()
  ref.save_pretrained(tmp_path / "clip")
  x, (ids, mask) = _pixels(3), _ids()
  with torch.no_grad():
    v = ref.vision_model(torch.from_numpy(x.transpose(0, 3, 1, 2)), output_hidden_states=True)
    t = ref.text_model(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
    image_embeds = ref.visual_projection(v.pooler_output)
    text_embeds = ref.text_projection(t.pooler_output)

  vm, vp = load_clip_vision(tmp_path / "clip")
  assert vm.with_projection and vm.config.projection_dim == 12
  got = vm.apply({"params": vp}, x)
  assert _err(got.image_embeds, _np(image_embeds)) < TOL
  assert _err(got.last_hidden_state, _np(v.last_hidden_state)) < TOL
  tm, tp = load_clip_text(tmp_path / "clip")
  got = tm.apply({"params": tp}, jnp.asarray(ids, jnp.int32), jnp.asarray(mask))
  assert _err(got.text_embeds, _np(text_embeds)) < TOL
  assert _err(got.last_hidden_state, _np(t.last_hidden_state)) < TOL

  # the tower alone, without its projection, when asked
  bare, bp = load_clip_vision(tmp_path / "clip", with_projection=False)
  assert not bare.with_projection and "visual_projection" not in bp

  save_clip_vision(vm, vp, tmp_path / "vision")
  save_clip_text(tm, tp, tmp_path / "text")
  hv = transformers.CLIPVisionModelWithProjection.from_pretrained(tmp_path / "vision").eval()
  ht = transformers.CLIPTextModelWithProjection.from_pretrained(tmp_path / "text").eval()
  with torch.no_grad():
    assert torch.equal(hv(torch.from_numpy(x.transpose(0, 3, 1, 2))).image_embeds, image_embeds)
    assert torch.equal(ht(torch.from_numpy(ids),
                          attention_mask=torch.from_numpy(mask)).text_embeds, text_embeds)
  with pytest.raises(WeightsError, match="not a CLIP vision config"):
    load_clip_vision(tmp_path / "text")


def test_legacy_prefixed_text_folder_with_position_ids(tmp_path):
  """Hub SD text encoders: `text_model.` keys and a stored `position_ids` buffer."""
  torch.manual_seed(3)
  ref = transformers.CLIPTextModel(transformers.CLIPTextConfig(**TEXT)).eval()
  ref.save_pretrained(tmp_path)
  sd = load_file(str(tmp_path / "model.safetensors"))
  sd = {"text_model." + k: v for k, v in sd.items()}
  sd["text_model.embeddings.position_ids"] = np.arange(16, dtype=np.int64)[None]
  save_file(sd, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
  module, params = load_clip_text(tmp_path)
  ids, mask = _ids()
  got = module.apply({"params": params}, jnp.asarray(ids, jnp.int32), jnp.asarray(mask))
  assert _err(got.pooler_output, _np(_hf_text(ref, ids, mask).pooler_output)) < TOL


def test_mismatched_weights_one_error(tmp_path):
  torch.manual_seed(4)
  ref = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**VISION))
  ref.save_pretrained(tmp_path)
  sd = load_file(str(tmp_path / "model.safetensors"))
  del sd["encoder.layers.1.mlp.fc1.bias"]
  sd["encoder.layers.2.mlp.fc1.bias"] = np.zeros(37, np.float32)
  sd["post_layernorm.weight"] = np.ones(31, np.float32)
  save_file(sd, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
  with pytest.raises(WeightsMismatchError) as e:
    load_clip_vision(tmp_path)
  msg = str(e.value)
  assert "missing keys (1): ['vision_model.encoder.layers.1.mlp.fc1.bias']" in msg
  assert "unexpected keys (1): ['vision_model.encoder.layers.2.mlp.fc1.bias']" in msg
  assert "'vision_model.post_layernorm.weight': checkpoint (31,), expected (32,)" in msg


def test_bad_folders_and_params(tmp_path):
  with pytest.raises(WeightsError, match="no config.json"):
    load_clip_text(tmp_path)
  torch.manual_seed(5)
  ref = transformers.CLIPTextModel(transformers.CLIPTextConfig(**TEXT))
  ref.save_pretrained(tmp_path / "t")
  with pytest.raises(WeightsMismatchError, match="missing keys"):
    load_clip_text(tmp_path / "t", with_projection=True)
  module, params = load_clip_text(tmp_path / "t")
  del params["final_layer_norm"]
  with pytest.raises(WeightsMismatchError, match="final_layer_norm/weight"):
    save_clip_text(module, params, tmp_path / "out")
  with pytest.raises(TypeError, match="save_clip_vision needs a CLIP vision module"):
    save_clip_vision(module, params, tmp_path / "out")
