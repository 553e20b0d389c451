"""Frontend encoders against transformers/PyTorch, video modes, freezing, slot assembly."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from vitron_jax.convert.clip import hf_to_flax
from vitron_jax.models.assembly import (check_slot_counts, compact_tokens, gather_slots,
                                        place_tokens, slot_mismatch)
from vitron_jax.models.clip import CLIPVisionModel
from vitron_jax.models.clip_config import CLIPVisionConfig
from vitron_jax.models.frontend import Frontend, FrontendConfig
from vitron_jax.models.projector import Projector
from vitron_jax.models.region_inputs import prepare_image_regions, prepare_video_regions

VISION = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
              image_size=32, patch_size=8, hidden_act="quick_gelu", projection_dim=16)
TOL = 1e-4


def _frontend(**kw):
  cfg = FrontendConfig(vision=CLIPVisionConfig(**VISION), llm_hidden=24,
                       **{"num_frames": 2, "region_layers": (1, 3), **kw})
  return cfg, Frontend(cfg)


def _with_hf_weights(cfg, module, seed=0):
  """Frontend params with the vision tower taken from a random HF CLIPVisionModel and the
  projector from a PyTorch LLaVA projector."""
  torch.manual_seed(seed)
  ref = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**VISION)).eval()
  tower = hf_to_flax({k: v.numpy() for k, v in ref.state_dict().items()},
                     CLIPVisionModel(cfg.vision))
  layers = [torch.nn.Linear(32, 24)]
  if cfg.projector == "mlp2x_gelu":
    layers += [torch.nn.GELU(), torch.nn.Linear(24, 24)]
  proj_ref = torch.nn.Sequential(*layers) if len(layers) > 1 else layers[0]
  s = cfg.vision.image_size
  x = np.zeros((1, 1, s, s, 3), np.float32)
  regions = prepare_image_regions([[{"box": (0, 0, 8, 8)}]], s, s, 1)
  params = nn.meta.unbox(module.init(jax.random.key(0), images=x,
                                     image_regions=regions)["params"])
  params["vision_tower"] = tower
  seq = proj_ref if isinstance(proj_ref, torch.nn.Sequential) else [proj_ref]
  for i, lin in enumerate(seq):
    if isinstance(lin, torch.nn.Linear):
      params["mm_projector"][f"layers_{i}"] = {"kernel": lin.weight.detach().numpy().T,
                                               "bias": lin.bias.detach().numpy()}
  return params, ref, proj_ref


@pytest.mark.parametrize("projector, select_layer, feature",
                         [("mlp2x_gelu", -2, "patch"), ("linear", 1, "cls_patch")])
def test_image_tokens_match_hf_clip_and_torch_projector(projector, select_layer, feature):
  cfg, fe = _frontend(projector=projector, select_layer=select_layer, select_feature=feature)
  params, ref, proj_ref = _with_hf_weights(cfg, fe)
  x = np.random.default_rng(0).normal(size=(2, 2, 32, 32, 3)).astype(np.float32)
  tokens, maps = fe.apply({"params": params}, jnp.asarray(x), method=Frontend.encode_images)
  assert tokens.shape == (2, 2, cfg.image_tokens, 24)
  assert cfg.image_tokens == 16 + (feature == "cls_patch")
  with torch.no_grad():
    hs = ref(torch.from_numpy(x.reshape(4, 32, 32, 3).transpose(0, 3, 1, 2)),
             output_hidden_states=True).hidden_states
    feats = hs[select_layer] if feature == "cls_patch" else hs[select_layer][:, 1:]
    want = proj_ref(feats).numpy().reshape(2, 2, -1, 24)
    want_maps = [hs[i][:, 1:].numpy().reshape(2, 2, 1, 4, 4, 32) for i in cfg.region_layers]
  np.testing.assert_allclose(tokens, want, atol=TOL, rtol=TOL)
  for m, w in zip(maps, want_maps):
    np.testing.assert_allclose(m, w, atol=TOL, rtol=TOL)


def test_video_per_frame_and_pooled_tokens():
  x = np.random.default_rng(1).normal(size=(1, 1, 2, 32, 32, 3)).astype(np.float32)
  cfg, fe = _frontend(video_tokens="per_frame")
  params, _, _ = _with_hf_weights(cfg, fe)
  vt, vmaps = fe.apply({"params": params}, jnp.asarray(x), method=Frontend.encode_videos)
  it, _ = fe.apply({"params": params}, jnp.asarray(x[0, 0][None]),
                   method=Frontend.encode_images)  # the 2 frames as 2 images
  assert vt.shape == (1, 1, cfg.video_token_count, 24) and cfg.video_token_count == 32
  np.testing.assert_allclose(vt[0, 0], it[0].reshape(32, 24), atol=1e-5)
  assert vmaps[0].shape == (1, 1, 2, 4, 4, 32)

  cfg_p, fe_p = _frontend(video_tokens="pooled")
  pt, _ = fe_p.apply({"params": params}, jnp.asarray(x), method=Frontend.encode_videos)
  assert cfg_p.video_token_count == 2 + 16 and pt.shape == (1, 1, 18, 24)
  sel, _ = fe_p.apply({"params": params}, jnp.asarray(x[0, 0]),
                      method=Frontend.vision_features)  # [2 frames, 16, 32]
  pooled = jnp.concatenate([sel.mean(1), sel.mean(0)], 0)   # frame means, then patch means
  want = fe_p.apply({"params": params}, pooled, method=lambda m, f: m.mm_projector(f))
  np.testing.assert_allclose(pt[0, 0], want, atol=1e-5)


@pytest.mark.parametrize("freeze", [True, False])
def test_frozen_vision_tower_gets_no_gradient(freeze):
  cfg, fe = _frontend(freeze_vision=freeze)
  params, _, _ = _with_hf_weights(cfg, fe)
  x = jnp.asarray(np.random.default_rng(2).normal(size=(1, 1, 32, 32, 3)), jnp.float32)
  regions = prepare_image_regions([[{"box": (0, 0, 16, 16)}]], 32, 32, 1)

  def loss(p):
    out = fe.apply({"params": p}, images=x, image_regions=regions)
    return jnp.sum(out["image"][0] ** 2) + jnp.sum(out["roi"][0] ** 2)

  g = jax.grad(loss)(params)
  tower = sum(float(jnp.abs(a).sum()) for a in jax.tree_util.tree_leaves(g["vision_tower"]))
  assert (tower == 0.0) == freeze
  proj = sum(float(jnp.abs(a).sum()) for a in jax.tree_util.tree_leaves(g["mm_projector"]))
  assert proj > 0.0


def test_frontend_outputs_with_regions_on_images_and_videos():
  cfg, fe = _frontend(region_tokens="per_layer")
  params, _, _ = _with_hf_weights(cfg, fe)
  rng = np.random.default_rng(3)
  imgs = rng.normal(size=(2, 2, 32, 32, 3)).astype(np.float32)
  vids = rng.normal(size=(2, 1, 2, 32, 32, 3)).astype(np.float32)
  ireg = prepare_image_regions([[{"box": (0, 0, 16, 16), "source": 1}], []], 32, 32, 2, 2)
  vreg = prepare_video_regions([[[{"box": (0, 0, 8, 8)}, None]], []], 2, 32, 32, 1)
  out = fe.apply({"params": params}, images=imgs, image_valid=np.asarray([[1, 1], [1, 0]], bool),
                 videos=vids, image_regions=ireg, video_regions=vreg)
  n_roi = cfg.region_token_count
  assert n_roi == 2
  assert out["image"][0].shape == (2, 2 * 16, 24)
  assert out["image"][1].sum(1).tolist() == [32, 16]
  assert out["video"][0].shape == (2, 32, 24)
  assert out["roi"][0].shape == (2, (2 + 1) * n_roi, 24)
  assert out["roi"][1].sum(1).tolist() == [2 * n_roi, 0]
  with pytest.raises(ValueError, match="without images"):
    fe.apply({"params": params}, image_regions=ireg)
  with pytest.raises(ValueError, match="frames=2"):
    fe.apply({"params": params}, videos=vids[:, :, :1])


def test_place_and_gather_tokens_static_shapes_one_compile():
  d = 3
  traces = []

  @jax.jit
  def assemble(emb, slots, toks, valid):
    traces.append(1)
    return place_tokens(emb, slots, toks, valid), slot_mismatch(slots, valid)

  emb = jnp.zeros((2, 8, d))
  toks = jnp.arange(2 * 4 * d, dtype=jnp.float32).reshape(2, 4, d) + 1
  valid = jnp.asarray([[True, False, True, True], [True, True, False, False]])
  slots_a = jnp.asarray([[0, 1, 1, 0, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0, 0]], bool)
  slots_b = jnp.asarray([[0, 0, 0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 0, 1, 0, 0]], bool)
  for slots in (slots_a, slots_b):
    out, bad = assemble(emb, slots, toks, valid)
    assert int(bad) == 0
    for b in range(2):
      want = np.asarray(toks[b])[np.asarray(valid[b])]
      np.testing.assert_array_equal(np.asarray(out[b])[np.asarray(slots[b])], want)
      np.testing.assert_array_equal(np.asarray(out[b])[~np.asarray(slots[b])], 0.0)
    np.testing.assert_array_equal(gather_slots(out, slots, 3)[0], np.asarray(toks[0])[[0, 2, 3]])
  assert len(traces) == 1
  np.testing.assert_array_equal(compact_tokens(toks, valid)[0, :3], np.asarray(toks[0])[[0, 2, 3]])
  wrong = jnp.asarray([[1, 1, 0, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0, 0]], bool)
  assert int(assemble(emb, wrong, toks, valid)[1]) == 1
  with pytest.raises(ValueError, match="row 0 has 2 placeholder slots .* 3 valid tokens"):
    check_slot_counts(wrong, valid, "<image> slots")


def test_projector_kinds():
  x = jnp.ones((2, 5, 6))
  for kind, names in (("linear", {"layers_0"}), ("mlp2x_gelu", {"layers_0", "layers_2"}),
                      ("mlp3x_gelu", {"layers_0", "layers_2", "layers_4"})):
    p = Projector(kind, 8).init(jax.random.key(0), x)["params"]
    assert set(p) == names
  with pytest.raises(ValueError, match="projector type"):
    Projector("conv", 8).init(jax.random.key(0), x)
  with pytest.raises(ValueError, match="select_layer"):
    FrontendConfig(vision=CLIPVisionConfig(**VISION), llm_hidden=8, select_layer=7)
  with pytest.raises(ValueError, match="video_tokens"):
    FrontendConfig(vision=CLIPVisionConfig(**VISION), llm_hidden=8, video_tokens="mean")
