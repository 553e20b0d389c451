"""Llama parity with transformers' LlamaForCausalLM (tiny random fp32 models built here)."""
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from vitron_jax.convert.llama import params_from_hf
from vitron_jax.models.llama import Llama, LlamaConfig, init_cache, stack_layers, unstack_layers
from vitron_jax.nn.rope import RopeConfig

TOL = 1e-4

CONFIGS = {
    "mha_untied_default": dict(num_key_value_heads=4, tie_word_embeddings=False),
    "gqa_tied_linear": dict(num_key_value_heads=2, tie_word_embeddings=True,
                            rope_parameters={"rope_type": "linear", "factor": 2.0,
                                             "rope_theta": 10000.0}),
    "mqa_untied_llama3": dict(num_key_value_heads=1, tie_word_embeddings=False,
                              rope_parameters={"rope_type": "llama3", "factor": 8.0,
                                               "rope_theta": 500000.0, "low_freq_factor": 1.0,
                                               "high_freq_factor": 4.0,
                                               "original_max_position_embeddings": 8}),
    "gqa_bias_dynamic": dict(num_key_value_heads=2, attention_bias=True, mlp_bias=True,
                             max_position_embeddings=8,
                             rope_parameters={"rope_type": "dynamic", "factor": 2.0,
                                              "rope_theta": 10000.0}),
}


def tiny_hf(seed=0, **kw):
  """A random fp32 transformers Llama; larger-than-default init so tokens are not all ties."""
  base = dict(vocab_size=96, hidden_size=64, intermediate_size=112, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
              rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2, pad_token_id=0)
  base.update(kw)
  torch.manual_seed(seed)
  cfg = transformers.LlamaConfig(**base)
  model = transformers.LlamaForCausalLM(cfg).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if p.ndim == 2:
        p.normal_(0.0, 0.1)
      elif "bias" in name:
        p.normal_(0.0, 0.05)
      else:  # norms
        p.uniform_(0.5, 1.5)
  return model


def state_dict(model):
  return {k: v.detach().numpy() for k, v in model.state_dict().items()}


def ours(hf_model, **runtime):
  cfg = LlamaConfig.from_hf(hf_model.config, **runtime)
  return Llama(cfg), jax.tree_util.tree_map(jnp.asarray,
                                            params_from_hf(state_dict(hf_model), cfg))


def hf_logits(model, ids, **kw):
  with torch.no_grad():
    out = model(torch.tensor(np.asarray(ids)), output_hidden_states=True, **kw)
  return out.logits.numpy(), out.hidden_states[-1].numpy()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_logits_match_transformers(name):
  hf = tiny_hf(**CONFIGS[name])
  ids = np.random.default_rng(1).integers(0, 96, (2, 13))
  ref, _ = hf_logits(hf, ids)
  for scan in (False, True):
    module, params = ours(hf, scan_layers=scan)
    got = module.apply({"params": params}, jnp.asarray(ids))
    assert got.shape == (2, 13, 96)
    np.testing.assert_allclose(np.asarray(got), ref, atol=TOL, rtol=0, err_msg=f"scan={scan}")


def test_scanned_equals_unscanned_and_remat_keeps_values_and_grads():
  hf = tiny_hf(num_key_value_heads=2)
  ids = jnp.asarray(np.random.default_rng(2).integers(0, 96, (2, 9)))
  results = []
  for scan, remat in ((False, "none"), (True, "none"), (True, "full"), (False, "dots_saveable")):
    module, params = ours(hf, scan_layers=scan, remat_policy=remat)

    def loss(p):
      return jnp.mean(jax.nn.log_softmax(module.apply({"params": p}, ids))[..., 3])

    val, grad = jax.value_and_grad(loss)(params)
    g = grad["embed_tokens"]["embedding"]
    qk = grad["layers"]["self_attn"]["q_proj"]["kernel"][1] if scan else \
        grad["layers_1"]["self_attn"]["q_proj"]["kernel"]
    results.append((float(val), np.asarray(g), np.asarray(qk)))
  for val, g, qk in results[1:]:
    np.testing.assert_allclose(val, results[0][0], rtol=1e-6)
    np.testing.assert_allclose(g, results[0][1], atol=1e-6)
    np.testing.assert_allclose(qk, results[0][2], atol=1e-6)


def test_scanned_params_stack_layers_with_logical_axis():
  cfg = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=24, num_hidden_layers=3,
                    num_attention_heads=2, scan_layers=True)
  boxed = jax.eval_shape(Llama(cfg).init, jax.random.key(0), jnp.zeros((1, 2), jnp.int32))
  q = boxed["params"]["layers"]["self_attn"]["q_proj"]["kernel"]
  assert q.names == ("layers", "embed", "heads") and q.value.shape == (3, 16, 16)
  assert set(boxed["params"]) == {"embed_tokens", "layers", "norm", "lm_head"}


@pytest.mark.parametrize("scan", [False, True])
def test_cached_decoding_equals_full_forward(scan):
  hf = tiny_hf(num_key_value_heads=2)
  module, params = ours(hf, scan_layers=scan)
  ids = jnp.asarray(np.random.default_rng(3).integers(0, 96, (2, 12)))
  full = module.apply({"params": params}, ids)
  cache = init_cache(module.config, 2, 16)
  fwd = jax.jit(lambda p, x, c: module.apply({"params": p}, x, cache=c, method="forward"))
  out = fwd(params, ids[:, :5], cache)  # prefill 5, then one token at a time
  logits = [out.logits]
  cache = out.cache
  for t in range(5, 12):
    out = fwd(params, ids[:, t:t + 1], cache)
    cache = out.cache
    logits.append(out.logits)
  assert int(cache["index"]) == 12 and cache["pos"].tolist() == [12, 12]
  np.testing.assert_allclose(np.concatenate(logits, 1), np.asarray(full), atol=1e-5)


def test_padding_mask_positions_hidden_and_embeddings_entry():
  hf = tiny_hf()
  module, params = ours(hf, scan_layers=True)
  rng = np.random.default_rng(4)
  ids = rng.integers(3, 96, (2, 10))
  mask = np.ones((2, 10), bool)
  mask[0, :4] = False  # left padding
  pos = np.maximum(np.cumsum(mask, 1) - 1, 0)
  ref, ref_hidden = hf_logits(hf, ids, attention_mask=torch.tensor(mask.astype(np.int64)),
                              position_ids=torch.tensor(pos))
  v = {"params": params}
  out = module.apply(v, jnp.asarray(ids), attention_mask=jnp.asarray(mask), method="forward")
  np.testing.assert_allclose(np.asarray(out.logits)[mask], ref[mask], atol=TOL)
  np.testing.assert_allclose(np.asarray(out.hidden_states)[mask], ref_hidden[mask], atol=TOL)
  # the same with explicit positions, and with embeddings instead of ids
  emb = module.apply(v, jnp.asarray(ids), method="embed")
  assert emb.shape == (2, 10, 64)
  out2 = module.apply(v, inputs_embeds=emb, attention_mask=jnp.asarray(mask),
                      positions=jnp.asarray(pos), method="forward")
  np.testing.assert_allclose(np.asarray(out2.logits), np.asarray(out.logits), atol=1e-6)
  # a padded row gives the logits of the unpadded sequence alone
  alone = module.apply(v, jnp.asarray(ids[:1, 4:]))
  np.testing.assert_allclose(np.asarray(out.logits)[0, 4:], np.asarray(alone)[0], atol=1e-5)
  # logits="last" / "none", and logits(hidden) on the final-norm hidden states
  full = np.asarray(module.apply(v, jnp.asarray(ids)))
  last = module.apply(v, jnp.asarray(ids), logits="last", method="forward")
  assert last.logits.shape == (2, 1, 96)
  np.testing.assert_allclose(np.asarray(last.logits)[:, 0], full[:, -1], atol=1e-6)
  none = module.apply(v, jnp.asarray(ids), logits="none", method="forward")
  assert none.logits is None and none.hidden_states.shape == (2, 10, 64)
  again = module.apply(v, none.hidden_states, method="logits")
  np.testing.assert_allclose(np.asarray(again), full, atol=1e-6)


def test_token_ids_and_inputs_are_checked():
  hf = tiny_hf()
  module, params = ours(hf)
  v = {"params": params}
  with pytest.raises(ValueError, match=r"input_ids has token ids out of range \[0, 96\)"):
    module.apply(v, jnp.asarray([[1, 96]]))
  with pytest.raises(ValueError, match="out of range"):
    module.apply(v, jnp.asarray([[-1, 3]]), method="embed")
  with pytest.raises(TypeError, match="integer"):
    module.apply(v, jnp.asarray([[1.0, 2.0]]))
  with pytest.raises(ValueError, match="exactly one of input_ids and inputs_embeds"):
    module.apply(v, method="forward")
  with pytest.raises(ValueError, match=r"inputs_embeds must be \[batch, length, 64\]"):
    module.apply(v, inputs_embeds=jnp.zeros((1, 3, 8)), method="forward")
  with pytest.raises(ValueError, match="attention_mask must be"):
    module.apply(v, jnp.asarray([[1, 2]]), attention_mask=jnp.ones((1, 3), bool))
  with pytest.raises(ValueError, match="do not fit a cache"):
    module.apply(v, jnp.ones((1, 5), jnp.int32), cache=init_cache(module.config, 1, 4),
                 method="forward")


def test_config_roundtrips_and_validation():
  for kw in CONFIGS.values():
    hf_cfg = tiny_hf(**kw).config
    cfg = LlamaConfig.from_hf(hf_cfg, scan_layers=False, remat_policy="full", dtype="bfloat16")
    assert cfg.dtype == "bfloat16" and cfg.head_dim == 16
    again = LlamaConfig.from_hf(cfg.to_hf(), scan_layers=False, remat_policy="full",
                                dtype="bfloat16")
    assert again == cfg
    d = json.loads(json.dumps(cfg.to_dict()))
    assert LlamaConfig.from_dict(d) == cfg
    assert cfg.to_hf().rope_parameters == hf_cfg.rope_parameters
  # v4-style rope_scaling + rope_theta dicts are read too
  cfg = LlamaConfig.from_hf_dict(dict(vocab_size=10, hidden_size=8, intermediate_size=16,
                                      num_hidden_layers=1, num_attention_heads=2,
                                      max_position_embeddings=32, rope_theta=5e5,
                                      rope_scaling={"type": "linear", "factor": 4.0}))
  assert cfg.rope == RopeConfig(head_dim=4, theta=5e5, rope_type="linear", factor=4.0,
                                max_position_embeddings=32)
  v = LlamaConfig.vicuna_7b()
  assert (v.hidden_size, v.intermediate_size, v.num_hidden_layers, v.num_attention_heads,
          v.vocab_size, v.rms_norm_eps, v.max_position_embeddings,
          v.tie_word_embeddings) == (4096, 11008, 32, 32, 32000, 1e-5, 4096, False)
  with pytest.raises(ValueError, match="remat_policy"):
    LlamaConfig(remat_policy="sometimes")
  with pytest.raises(ValueError, match="multiple of num_key_value_heads"):
    LlamaConfig(num_attention_heads=4, num_key_value_heads=3, hidden_size=64)
  with pytest.raises(ValueError, match="hidden_size"):
    LlamaConfig(hidden_size=-1)
  with pytest.raises(ValueError, match="unknown keys"):
    LlamaConfig.from_dict({"hidden_sise": 3})
  with pytest.raises(ValueError, match="rope.head_dim"):
    LlamaConfig(hidden_size=64, num_attention_heads=4, rope=RopeConfig(head_dim=8))
  assert dataclasses.replace(v, scan_layers=False).scan_layers is False


def test_stack_unstack_layers_and_bfloat16_compute():
  hf = tiny_hf()
  module, params = ours(hf, scan_layers=True)
  ids = jnp.asarray(np.random.default_rng(6).integers(0, 96, (2, 8)))
  ref = np.asarray(module.apply({"params": params}, ids))
  flat = unstack_layers(params, 2)
  assert "layers" not in flat and flat["layers_1"]["mlp"]["up_proj"]["kernel"].shape == (64, 112)
  unscanned = Llama(module.config.replace(scan_layers=False))
  np.testing.assert_allclose(np.asarray(unscanned.apply({"params": flat}, ids)), ref, atol=1e-5)
  back = stack_layers(flat, 2)
  jax.tree_util.tree_map(np.testing.assert_array_equal, back, params)
  # bf16 compute with fp32 params stays close to fp32 and returns bf16 logits
  bf16 = Llama(module.config.replace(dtype="bfloat16"))
  out = bf16.apply({"params": params}, ids)
  assert out.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(out, np.float32), ref, atol=0.15)


def test_query_chunked_attention_is_exact():
  hf = tiny_hf()
  module, params = ours(hf, scan_layers=True)
  chunked = Llama(module.config.replace(attention_chunk=4))
  rng = np.random.default_rng(7)
  ids = jnp.asarray(rng.integers(3, 96, (2, 13)))  # 13 = 3 blocks of 4 and a block of 1
  mask = jnp.asarray(np.arange(13)[None] >= np.array([[0], [5]]))
  v = {"params": params}
  for kw in ({}, {"attention_mask": mask}):
    real = np.asarray(kw.get("attention_mask", np.ones((2, 13), bool)))  # padding is garbage
    np.testing.assert_allclose(np.asarray(chunked.apply(v, ids, **kw))[real],
                               np.asarray(module.apply(v, ids, **kw))[real], atol=1e-5)
  with pytest.raises(ValueError, match="attention_chunk"):
    LlamaConfig(attention_chunk=-2)
