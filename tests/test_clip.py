"""CLIP vision/text towers against transformers (tiny random configs, fp32, 1e-4)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from vitron_jax.convert.clip import hf_to_flax
from vitron_jax.models.clip import CLIPTextModel, CLIPVisionModel, interpolate_position_embedding
from vitron_jax.models.clip_config import (CLIPTextConfig, CLIPVisionConfig, text_preset,
                                           vision_preset)
from vitron_jax.nn.interpolate import resize_bicubic_torch
from vitron_jax.nn.partitioning import count_params

TOL = 1e-4

VISION_CFGS = {
    "quick_gelu": dict(hidden_size=32, intermediate_size=37, num_hidden_layers=3,
                       num_attention_heads=4, image_size=30, patch_size=6,
                       hidden_act="quick_gelu", projection_dim=16),
    "gelu": dict(hidden_size=48, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=3, image_size=32, patch_size=8, num_channels=4,
                 hidden_act="gelu", projection_dim=24, layer_norm_eps=1e-6),
}
TEXT_CFGS = {
    # legacy eos_token_id == 2: pooled at argmax(ids)
    "legacy_eos": dict(vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=3,
                       num_attention_heads=4, max_position_embeddings=16,
                       hidden_act="quick_gelu", projection_dim=16, pad_token_id=1,
                       bos_token_id=0, eos_token_id=2),
    # new rule: first occurrence of eos_token_id (padding with eos itself)
    "first_eos": dict(vocab_size=99, hidden_size=48, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=3, max_position_embeddings=12, hidden_act="gelu",
                      projection_dim=24, pad_token_id=50, bos_token_id=97, eos_token_id=50),
}


def _np(t):
  return t.detach().cpu().numpy()


def _close(ours, ref, what):
  ours, ref = np.asarray(ours), np.asarray(ref)
  assert ours.shape == ref.shape, f"{what}: shape {ours.shape} vs {ref.shape}"
  err = float(np.max(np.abs(ours - ref)))
  assert err < TOL, f"{what}: max abs diff {err}"


@functools.lru_cache(maxsize=None)
def _vision(name, with_projection):
  torch.manual_seed(0)
  cfg = transformers.CLIPVisionConfig(**VISION_CFGS[name])
  cls = (transformers.CLIPVisionModelWithProjection if with_projection
         else transformers.CLIPVisionModel)
  ref = cls(cfg).eval()
  module = CLIPVisionModel(CLIPVisionConfig.from_hf(cfg), with_projection=with_projection)
  sd = {k: _np(v) for k, v in ref.state_dict().items()}
  return ref, module, hf_to_flax(sd, module)


@functools.lru_cache(maxsize=None)
def _text(name, with_projection):
  torch.manual_seed(1)
  cfg = transformers.CLIPTextConfig(**TEXT_CFGS[name])
  cls = (transformers.CLIPTextModelWithProjection if with_projection
         else transformers.CLIPTextModel)
  ref = cls(cfg).eval()
  module = CLIPTextModel(CLIPTextConfig.from_hf(cfg), with_projection=with_projection)
  sd = {k: _np(v) for k, v in ref.state_dict().items()}
  return ref, module, hf_to_flax(sd, module)


def _images(cfg, b=2, h=None, w=None, seed=0):
  h = h or cfg["image_size"]
  w = w or cfg["image_size"]
  x = np.random.default_rng(seed).standard_normal((b, h, w, cfg.get("num_channels", 3)))
  return x.astype(np.float32)


def _ref_vision(ref, x, **kw):
  with torch.no_grad():
    return ref(torch.from_numpy(x.transpose(0, 3, 1, 2)), output_hidden_states=True, **kw)


# ----------------------------------------------------------------------------- vision

@pytest.mark.parametrize("name", list(VISION_CFGS))
def test_vision_matches_hf(name):
  ref, module, params = _vision(name, False)
  x = _images(VISION_CFGS[name])
  want = _ref_vision(ref, x)
  got = module.apply({"params": params}, x, output_hidden_states=True)
  assert len(got.hidden_states) == len(want.hidden_states) == ref.config.num_hidden_layers + 1
  for i, (a, b) in enumerate(zip(got.hidden_states, want.hidden_states)):
    _close(a, _np(b), f"hidden_states[{i}]")
  _close(got.last_hidden_state, _np(want.last_hidden_state), "last_hidden_state")
  _close(got.pooler_output, _np(want.pooler_output), "pooler_output")
  assert got.image_embeds is None


@pytest.mark.parametrize("name", list(VISION_CFGS))
def test_vision_projection_matches_hf(name):
  ref, module, params = _vision(name, True)
  x = _images(VISION_CFGS[name], seed=1)
  want = _ref_vision(ref, x)
  got = jax.jit(lambda p, x: module.apply({"params": p}, x, output_hidden_states=True))(params, x)
  _close(got.image_embeds, _np(want.image_embeds), "image_embeds")
  _close(got.last_hidden_state, _np(want.last_hidden_state), "last_hidden_state")
  for i, (a, b) in enumerate(zip(got.hidden_states, want.hidden_states)):
    _close(a, _np(b), f"hidden_states[{i}]")


@pytest.mark.parametrize("hw", [(42, 36), (24, 24), (48, 48)])
def test_vision_interpolated_positions_match_hf(hw):
  ref, module, params = _vision("quick_gelu", True)
  x = _images(VISION_CFGS["quick_gelu"], h=hw[0], w=hw[1], seed=2)
  want = _ref_vision(ref, x, interpolate_pos_encoding=True)
  got = module.apply({"params": params}, x, interpolate_pos_encoding=True, output_hidden_states=True)
  n = (hw[0] // 6) * (hw[1] // 6) + 1
  assert got.last_hidden_state.shape == (2, n, 32)
  for i, (a, b) in enumerate(zip(got.hidden_states, want.hidden_states)):
    _close(a, _np(b), f"hidden_states[{i}] at {hw}")
  _close(got.image_embeds, _np(want.image_embeds), f"image_embeds at {hw}")


def test_bicubic_resize_matches_torch():
  x = np.random.default_rng(3).standard_normal((5, 7, 3)).astype(np.float32)
  for size in [(9, 4), (5, 7), (2, 13), (11, 11)]:
    want = torch.nn.functional.interpolate(
        torch.from_numpy(x.transpose(2, 0, 1))[None], size=size, mode="bicubic",
        align_corners=False)[0].numpy().transpose(1, 2, 0)
    _close(resize_bicubic_torch(jnp.asarray(x), size), want, f"bicubic to {size}")


def test_interpolation_identity_at_native_grid():
  pos = jnp.asarray(np.random.default_rng(4).standard_normal((26, 8)), jnp.float32)
  assert interpolate_position_embedding(pos, (5, 5)) is pos
  assert interpolate_position_embedding(pos, (6, 4)).shape == (25, 8)


def test_vision_select_layer_features():
  ref, module, params = _vision("quick_gelu", False)
  x = _images(VISION_CFGS["quick_gelu"], seed=5)
  want = _ref_vision(ref, x).hidden_states
  got = module.apply({"params": params}, x, -2, method=module.features)
  _close(got, _np(want[-2])[:, 1:], "penultimate patch features")
  got = module.apply({"params": params}, x, select_layer=1, with_cls=True, method=module.features)
  _close(got, _np(want[1]), "layer 1 with CLS")
  got = module.apply({"params": params}, x, select_layer=[0, -1, 2], method=module.features)
  for g, i in zip(got, [0, -1, 2]):
    _close(g, _np(want[i])[:, 1:], f"layer {i}")
  with pytest.raises(ValueError, match="select_layer must be in"):
    module.apply({"params": params}, x, select_layer=4, method=module.features)
  with pytest.raises(ValueError, match="select_layer must be in"):
    module.apply({"params": params}, x, select_layer=-5, method=module.features)


# ----------------------------------------------------------------------------- text

def _ids(name, padding):
  """Batch of 3 with eos placed per the config's rule; `padding` "right"/"left"/None."""
  c = TEXT_CFGS[name]
  rng = np.random.default_rng(7)
  length, lens = c["max_position_embeddings"] - 2, [4, 10, 7]
  eos = c["vocab_size"] - 1 if c["eos_token_id"] == 2 else c["eos_token_id"]
  # HF pools at the first eos, so left padding must not use eos as the pad token.
  pad = 1 if padding == "left" else c["pad_token_id"]
  ids = np.full((3, length), pad, np.int64)
  mask = np.zeros((3, length), np.int64)
  for r, n in enumerate(lens):
    body = rng.integers(3, 49, size=n)
    body[0] = c["bos_token_id"]
    body[-1] = eos
    if c["eos_token_id"] != 2 and r == 1:
      body[n // 2] = eos  # the *first* eos counts
    sl = slice(length - n, length) if padding == "left" else slice(0, n)
    ids[r, sl], mask[r, sl] = body, 1
  if padding is None:  # full rows: fill the rest with random non-eos tokens after eos
    ids = np.where(mask == 1, ids, rng.integers(3, 49, size=ids.shape))
    mask = np.ones_like(mask)
  return ids, mask


def _ref_text(ref, ids, mask):
  with torch.no_grad():
    return ref(torch.from_numpy(ids), attention_mask=None if mask is None
               else torch.from_numpy(mask), output_hidden_states=True)


@pytest.mark.parametrize("name", list(TEXT_CFGS))
@pytest.mark.parametrize("padding", [None, "right"])
def test_text_matches_hf(name, padding):
  ref, module, params = _text(name, False)
  ids, mask = _ids(name, padding)
  mask = None if padding is None else mask
  want = _ref_text(ref, ids, mask)
  got = module.apply({"params": params}, jnp.asarray(ids, jnp.int32),
                     None if mask is None else jnp.asarray(mask), output_hidden_states=True)
  assert len(got.hidden_states) == len(want.hidden_states) == ref.config.num_hidden_layers + 1
  for i, (a, b) in enumerate(zip(got.hidden_states, want.hidden_states)):
    _close(a, _np(b), f"hidden_states[{i}]")
  _close(got.last_hidden_state, _np(want.last_hidden_state), "last_hidden_state")
  _close(got.pooler_output, _np(want.pooler_output), "pooler_output")


@pytest.mark.parametrize("name", list(TEXT_CFGS))
def test_text_projection_left_padding_and_jit(name):
  ref, module, params = _text(name, True)
  ids, mask = _ids(name, "left")
  want = _ref_text(ref, ids, mask)
  got = jax.jit(lambda p, i, m: module.apply({"params": p}, i, m, output_hidden_states=True))(
      params, jnp.asarray(ids, jnp.int32), jnp.asarray(mask))
  _close(got.text_embeds, _np(want.text_embeds), "text_embeds")
  valid = mask.astype(bool)  # padded query rows attend to nothing; compare real tokens
  for i, (a, b) in enumerate(zip(got.hidden_states, want.hidden_states)):
    _close(np.asarray(a)[valid], _np(b)[valid], f"hidden_states[{i}] (real tokens)")
  _close(np.asarray(got.last_hidden_state)[valid], _np(want.last_hidden_state)[valid],
         "last_hidden_state (real tokens)")


def test_text_eos_rules():
  ids = jnp.asarray([[97, 5, 50, 7, 50, 50]], jnp.int32)
  for name, pos in [("first_eos", 2), ("legacy_eos", 0)]:  # legacy: argmax(ids) = 97 at 0
    module = CLIPTextModel(CLIPTextConfig(**TEXT_CFGS[name]))
    params = jax.jit(module.init)(jax.random.key(0), ids)
    out = jax.jit(module.apply)(params, ids)
    np.testing.assert_array_equal(out.pooler_output, out.last_hidden_state[:, pos])


# ----------------------------------------------------------------------------- bad input

def test_bad_images():
  _, module, params = _vision("quick_gelu", False)
  with pytest.raises(ValueError, match="must have 3 channels"):
    module.apply({"params": params}, np.zeros((1, 30, 30, 4), np.float32))
  with pytest.raises(ValueError, match="must be 30x30 pixels, got 36x36"):
    module.apply({"params": params}, np.zeros((1, 36, 36, 3), np.float32))
  with pytest.raises(ValueError, match="multiples of 6, got 32x30"):
    module.apply({"params": params}, np.zeros((1, 32, 30, 3), np.float32), interpolate_pos_encoding=True)
  with pytest.raises(ValueError, match=r"channels-last \[batch, height, width, channels\]"):
    module.apply({"params": params}, np.zeros((30, 30, 3), np.float32))


def test_bad_tokens():
  _, module, params = _text("first_eos", False)
  with pytest.raises(ValueError, match=r"input_ids has token ids out of range \[0, 99\)"):
    module.apply({"params": params}, jnp.asarray([[97, 99, 50]], jnp.int32))
  with pytest.raises(ValueError, match="out of range"):
    module.apply({"params": params}, jnp.asarray([[97, -1, 50]], jnp.int32))
  with pytest.raises(ValueError, match="length 13 exceeds max_position_embeddings 12"):
    module.apply({"params": params}, jnp.full((1, 13), 50, jnp.int32))
  with pytest.raises(ValueError, match="contain no eos_token_id 50"):
    module.apply({"params": params}, jnp.asarray([[97, 3, 4], [97, 50, 50]], jnp.int32))
  with pytest.raises(TypeError, match="must be an integer array"):
    module.apply({"params": params}, jnp.zeros((1, 3), jnp.float32))
  with pytest.raises(ValueError, match="attention_mask must have the shape"):
    module.apply({"params": params}, jnp.asarray([[97, 50]], jnp.int32), jnp.ones((1, 3), jnp.int32))


def test_bad_configs():
  with pytest.raises(ValueError, match="multiple of num_attention_heads"):
    CLIPVisionConfig(hidden_size=30, num_attention_heads=4)
  with pytest.raises(ValueError, match="image_size .* multiple of patch_size"):
    CLIPVisionConfig(image_size=30, patch_size=7)
  with pytest.raises(ValueError, match="hidden_act"):
    CLIPTextConfig(hidden_act="swish9")
  with pytest.raises(ValueError, match="model_type"):
    CLIPVisionConfig.from_hf({"model_type": "clip_text_model"})
  with pytest.raises(ValueError, match="unknown fields"):
    CLIPTextConfig.from_dict({"hidden_sz": 3})
  with pytest.raises(ValueError, match="unknown CLIP vision preset"):
    vision_preset("vit_z")


# ----------------------------------------------------------------------------- configs

def test_config_dict_and_hf_roundtrip():
  for c in [vision_preset("vit_l14_336"), CLIPVisionConfig(**VISION_CFGS["gelu"])]:
    assert CLIPVisionConfig.from_dict(c.to_dict()) == c
    assert CLIPVisionConfig.from_hf(transformers.CLIPVisionConfig(**c.to_hf())) == c
  for c in [text_preset("sd1"), text_preset("openclip_h")]:
    assert CLIPTextConfig.from_dict(c.to_dict()) == c
    assert CLIPTextConfig.from_hf(transformers.CLIPTextConfig(**c.to_hf())) == c
  full = transformers.CLIPConfig(text_config=TEXT_CFGS["legacy_eos"],
                                 vision_config=VISION_CFGS["gelu"], projection_dim=40)
  assert CLIPVisionConfig.from_hf(full).projection_dim == 40
  assert CLIPTextConfig.from_hf(full.to_dict()).projection_dim == 40
  assert CLIPVisionConfig.from_hf({**VISION_CFGS["gelu"], "image_size": [32, 32]}).image_size == 32


@pytest.mark.parametrize("kind,name,proj", [("vision", "vit_l14_336", True),
                                            ("vision", "vit_h14", True),
                                            ("text", "sd1", False),
                                            ("text", "openclip_h", True)])
def test_full_size_presets_param_count(kind, name, proj):
  """eval_shape of the published sizes has exactly HF's parameter count (no memory used)."""
  if kind == "vision":
    c = vision_preset(name)
    module = CLIPVisionModel(c, with_projection=proj)
    x = jax.ShapeDtypeStruct((1, c.image_size, c.image_size, 3), jnp.float32)
    hf_cls = (transformers.CLIPVisionModelWithProjection if proj
              else transformers.CLIPVisionModel)
    hf_cfg = transformers.CLIPVisionConfig(**c.to_hf())
  else:
    c = text_preset(name)
    module = CLIPTextModel(c, with_projection=proj)
    x = jax.ShapeDtypeStruct((1, 77), jnp.int32)
    hf_cls = transformers.CLIPTextModelWithProjection if proj else transformers.CLIPTextModel
    hf_cfg = transformers.CLIPTextConfig(**c.to_hf())
  shapes = jax.eval_shape(lambda x: module.init(jax.random.key(0), x), x)
  with torch.device("meta"):
    ref = hf_cls(hf_cfg)
  assert count_params(shapes) == sum(p.numel() for p in ref.parameters())


@pytest.mark.slow
def test_vision_sharded_matches_single_device():
  """Params sharded with the fsdp_tensor rules on 8 fake devices give the same outputs."""
  import flax.linen as nn
  from vitron_jax.nn import partitioning as P
  cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, image_size=24, patch_size=6, projection_dim=16)
  module = CLIPVisionModel(cfg, with_projection=True)
  x = _images(dict(image_size=24), b=8, seed=9)
  boxed = jax.jit(module.init)(jax.random.key(0), x)
  params = nn.meta.unbox(boxed)
  want = jax.jit(lambda p, x: module.apply(p, x).image_embeds)(params, x)
  mesh, rules = P.make_mesh({"fsdp": 4, "tensor": 2}), P.rules_for("fsdp_tensor")
  shardings = P.param_shardings(jax.eval_shape(lambda: boxed), mesh, rules)
  sharded = jax.device_put(params, shardings)
  with mesh, nn.logical_axis_rules(rules):
    got = jax.jit(lambda p, x: module.apply(p, x).image_embeds)(
        sharded, jax.device_put(x, P.batch_sharding(mesh, rules, 4)))
  _close(got, want, "sharded image_embeds")
