"""KV-cache generation against transformers' `generate` (tiny random fp32 models)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from vitron_jax.convert.llama import params_from_hf
from vitron_jax.models import decoding
from vitron_jax.models.decoding import SamplingConfig, generate, sample_logits
from vitron_jax.models.llama import Llama, LlamaConfig

PAD = 0


def tiny_hf(seed=0, **kw):
  base = dict(vocab_size=96, hidden_size=64, intermediate_size=112, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
              rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=None, pad_token_id=PAD)
  base.update(kw)
  torch.manual_seed(seed)
  model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**base)).eval()
  with torch.no_grad():
    for p in model.parameters():
      if p.ndim == 2:
        p.normal_(0.0, 0.15)
  return model


def ours(hf, **runtime):
  cfg = LlamaConfig.from_hf(hf.config, **runtime)
  sd = {k: v.numpy() for k, v in hf.state_dict().items()}
  return Llama(cfg), jax.tree_util.tree_map(jnp.asarray, params_from_hf(sd, cfg))


def hf_generate(hf, ids, mask, n, eos=None):
  with torch.no_grad():
    out = hf.generate(torch.tensor(ids), attention_mask=torch.tensor(mask.astype(np.int64)),
                      max_new_tokens=n, do_sample=False, pad_token_id=PAD, eos_token_id=eos)
  return out.numpy()[:, ids.shape[1]:]


@pytest.fixture(scope="module")
def models():
  hf = tiny_hf()
  return hf, ours(hf, scan_layers=True), ours(hf, scan_layers=False)


def prompts(seed=0):
  rng = np.random.default_rng(seed)
  ids = rng.integers(3, 96, (3, 9))
  mask = np.ones((3, 9), bool)
  mask[0, :4] = False
  mask[2, :1] = False
  ids[~mask] = PAD
  return ids, mask


def test_greedy_matches_transformers_single_equal_and_left_padded(models):
  hf, (module, params), (module_u, params_u) = models
  ids, mask = prompts()
  n = 14
  # batch 1 (both layer layouts), equal-length batch, left-padded batch
  ref1 = hf_generate(hf, ids[1:2], mask[1:2], n)
  for m, p in ((module, params), (module_u, params_u)):
    out = generate(m, p, ids[1:2], max_new_tokens=n, stop_tokens=())
    np.testing.assert_array_equal(np.asarray(out.tokens), ref1)
  eq = np.random.default_rng(5).integers(3, 96, (2, 6))
  ref_eq = hf_generate(hf, eq, np.ones_like(eq, bool), n)
  out = generate(module, params, eq, max_new_tokens=n, stop_tokens=())
  np.testing.assert_array_equal(np.asarray(out.tokens), ref_eq)
  ref = hf_generate(hf, ids, mask, n)
  out = generate(module, params, ids, mask, max_new_tokens=n, stop_tokens=())
  np.testing.assert_array_equal(np.asarray(out.tokens), ref)
  assert out.lengths.tolist() == [n] * 3
  # each padded row gives what its prompt gives alone
  alone = generate(module, params, ids[0:1, 4:], max_new_tokens=n, stop_tokens=())
  np.testing.assert_array_equal(np.asarray(alone.tokens)[0], np.asarray(out.tokens)[0])


def test_stop_tokens_per_sequence_then_pad(models):
  hf, (module, params), _ = models
  ids, mask = prompts()
  n = 14
  free = np.asarray(generate(module, params, ids, mask, max_new_tokens=n,
                             stop_tokens=()).tokens)
  stop = int(free[0, 3])  # sequence 0 stops at step 3 (or earlier if it repeats)
  first = [int(np.argmax(r == stop)) if (r == stop).any() else None for r in free]
  out = generate(module, params, ids, mask, max_new_tokens=n, stop_tokens=(stop,),
                 pad_token_id=PAD)
  tokens = np.asarray(out.tokens)
  for b, f in enumerate(first):
    if f is None:
      np.testing.assert_array_equal(tokens[b], free[b])
      assert int(out.lengths[b]) == n
    else:
      np.testing.assert_array_equal(tokens[b, :f + 1], free[b, :f + 1])
      assert (tokens[b, f + 1:] == PAD).all()
      assert int(out.lengths[b]) == f + 1
  ref = hf_generate(hf, ids, mask, n, eos=stop)  # transformers pads finished rows too
  np.testing.assert_array_equal(tokens[:, :ref.shape[1]], ref)
  assert (tokens[:, ref.shape[1]:] == PAD).all()
  # all sequences stopped -> the loop ends early, the rest is padding
  all_stop = generate(module, params, ids, mask, max_new_tokens=n,
                      stop_tokens=tuple(int(t) for t in free[:, 0]))
  assert all_stop.lengths.tolist() == [1, 1, 1]
  assert (np.asarray(all_stop.tokens)[:, 1:] == PAD).all()


def test_sampling_temperature_and_top_p(models):
  _, (module, params), _ = models
  ids, mask = prompts(1)
  greedy = generate(module, params, ids, mask, max_new_tokens=8, stop_tokens=())
  key = jax.random.key(3)
  # a tiny nucleus keeps only the most likely token: sampling equals greedy
  nucleus = generate(module, params, ids, mask, max_new_tokens=8, stop_tokens=(),
                     temperature=1.0, top_p=1e-6, rng=key)
  np.testing.assert_array_equal(np.asarray(nucleus.tokens), np.asarray(greedy.tokens))
  a = generate(module, params, ids, mask, max_new_tokens=8, stop_tokens=(), temperature=2.0,
               rng=key)
  b = generate(module, params, ids, mask, max_new_tokens=8, stop_tokens=(), temperature=2.0,
               rng=key)
  c = generate(module, params, ids, mask, max_new_tokens=8, stop_tokens=(), temperature=2.0,
               rng=jax.random.key(4))
  np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))
  assert (np.asarray(a.tokens) != np.asarray(c.tokens)).any()


def test_sample_logits_distribution():
  probs = np.array([0.5, 0.25, 0.15, 0.07, 0.03])
  logits = jnp.asarray(np.log(probs))[None].repeat(4000, 0)
  key = jax.random.key(0)
  draws = np.asarray(sample_logits(logits, key, SamplingConfig(temperature=1.0)))
  freq = np.bincount(draws, minlength=5) / draws.size
  np.testing.assert_allclose(freq, probs, atol=0.03)
  # temperature 0.5 squares the probabilities (renormalised)
  draws = np.asarray(sample_logits(logits, key, SamplingConfig(temperature=0.5)))
  sq = probs ** 2 / np.sum(probs ** 2)
  np.testing.assert_allclose(np.bincount(draws, minlength=5) / draws.size, sq, atol=0.03)
  # top_p=0.7: tokens 0 and 1 (mass before token 1 is 0.5 < 0.7, before token 2 is 0.75)
  draws = np.asarray(sample_logits(logits, key, SamplingConfig(temperature=1.0, top_p=0.7)))
  freq = np.bincount(draws, minlength=5) / draws.size
  assert set(np.unique(draws)) == {0, 1}
  np.testing.assert_allclose(freq[:2], [2 / 3, 1 / 3], atol=0.03)
  assert (np.asarray(sample_logits(logits[:3], key, SamplingConfig())) == 0).all()


def test_embeddings_prompt_and_single_compilation(models):
  _, (module, params), _ = models
  ids, mask = prompts(2)
  by_ids = generate(module, params, ids, mask, max_new_tokens=6, stop_tokens=())
  emb = module.apply({"params": params}, jnp.asarray(ids), method="embed")
  by_emb = generate(module, params, inputs_embeds=emb, attention_mask=mask, max_new_tokens=6,
                    stop_tokens=())
  np.testing.assert_array_equal(np.asarray(by_emb.tokens), np.asarray(by_ids.tokens))
  fn = decoding._compiled(module.config, 6, SamplingConfig(), (), PAD)
  size = fn._cache_size()
  generate(module, params, prompts(3)[0], prompts(3)[1], max_new_tokens=6, stop_tokens=())
  assert fn._cache_size() == size  # same shapes: no recompilation


def test_generate_input_errors(models):
  _, (module, params), _ = models
  ids, mask = prompts()
  with pytest.raises(ValueError, match="out of range"):
    generate(module, params, np.array([[5, 96]]), max_new_tokens=2)
  with pytest.raises(ValueError, match="left-padded"):
    generate(module, params, ids, mask[:, ::-1], max_new_tokens=2)
  with pytest.raises(ValueError, match="needs an `rng`"):
    generate(module, params, ids, mask, max_new_tokens=2, temperature=0.7)
  with pytest.raises(ValueError, match="top_p"):
    generate(module, params, ids, mask, max_new_tokens=2, temperature=0.7, top_p=0.0,
             rng=jax.random.key(0))
  with pytest.raises(ValueError, match="max_new_tokens"):
    generate(module, params, ids, mask, max_new_tokens=0)
  with pytest.raises(ValueError, match="stop_tokens"):
    generate(module, params, ids, mask, max_new_tokens=2, stop_tokens=(1000,))
  with pytest.raises(ValueError, match="attention_mask must have the prompt's shape"):
    generate(module, params, ids, mask[:, :3], max_new_tokens=2)
