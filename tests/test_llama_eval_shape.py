"""Full-size (Vicuna-7B) shapes through `jax.eval_shape`: no memory, exact parameter count."""
import gc

import jax
import jax.numpy as jnp
import pytest
import torch
import transformers

from vitron_jax.convert.llama import expected_hf_shapes
from vitron_jax.models.llama import Llama, LlamaConfig
from vitron_jax.nn.partitioning import count_params


def meta_hf(cfg: LlamaConfig):
  with torch.device("meta"):
    return transformers.LlamaForCausalLM(cfg.to_hf())


@pytest.mark.parametrize("scan", [True, False])
def test_vicuna_7b_param_count_matches_transformers(scan):
  cfg = LlamaConfig.vicuna_7b(scan_layers=scan, remat_policy="full", param_dtype="bfloat16")
  gc.collect()  # arrays of earlier tests freed during the call must not mask (or fake) a change
  live = {id(x) for x in jax.live_arrays()}
  abstract = jax.eval_shape(Llama(cfg).init, jax.random.key(0),
                            jax.ShapeDtypeStruct((1, 8), jnp.int32))
  leaves = jax.tree_util.tree_leaves(abstract)
  assert leaves and all(isinstance(x.value if hasattr(x, "value") else x, jax.ShapeDtypeStruct)
                        for x in leaves)
  assert [x.shape for x in jax.live_arrays() if id(x) not in live] == []  # nothing allocated
  hf = meta_hf(cfg)
  want = sum(p.numel() for p in hf.parameters())
  assert count_params(abstract) == want == 6_738_415_616
  if scan:
    q = abstract["params"]["layers"]["self_attn"]["q_proj"]["kernel"]
    assert q.value.shape == (32, 4096, 4096) and q.value.dtype == jnp.bfloat16


def test_every_tensor_shape_matches_transformers_state_dict():
  for cfg in (LlamaConfig.vicuna_7b(),
              LlamaConfig.vicuna_7b(num_key_value_heads=8, tie_word_embeddings=True,
                                    num_hidden_layers=4)):
    hf = meta_hf(cfg)
    hf_shapes = {k: tuple(v.shape) for k, v in hf.state_dict().items()}
    if cfg.tie_word_embeddings:
      hf_shapes.pop("lm_head.weight", None)
      assert count_params(jax.eval_shape(Llama(cfg).init, jax.random.key(0),
                                         jnp.zeros((1, 1), jnp.int32))) == sum(
                                             p.numel() for p in hf.parameters())
    assert expected_hf_shapes(cfg) == hf_shapes
