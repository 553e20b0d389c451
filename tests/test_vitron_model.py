"""The assembled VITRON model: paper-size shapes, per-component counts, the assembly path."""
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vitron_testlib as lib
from experiments import vitron_7b, vitron_tiny
from vitron_jax.models.clip import CLIPVisionModel
from vitron_jax.models.clip_config import vision_preset
from vitron_jax.models.llama import Llama
from vitron_jax.models.vitron import (Vitron, check_batch, component_param_counts,
                                      dummy_batch, dummy_natives)
from vitron_jax.models.vitron_config import (canonical_protocol_ids, vitron_config_from,
                                             VitronConfig)
from vitron_jax.nn.partitioning import count_params
from vitron_jax.protocol import tokens as T


def test_paper_size_eval_shape_and_component_counts():
  cfg = vitron_config_from(vitron_7b.get_config().model)
  n_special = len(T.all_special_tokens())
  assert cfg.llm.vocab_size == 33152 == -(-(32000 + n_special) // 128) * 128
  assert cfg.slot_ids.image == 32000 and cfg.frontend.image_tokens == 576
  assert cfg.head.k_max == 32 and len(cfg.head.modules) == len(T.MODULES)
  abstract = jax.eval_shape(lambda k: Vitron(cfg).init(k, dummy_batch(cfg, 1),
                                                        natives=dummy_natives(cfg, 1)),
                            jax.random.key(0))
  counts = component_param_counts(abstract["params"])
  print("\nVITRON-7B parameters per component:")
  for k, v in counts.items():
    print(f"  {k:28s} {v:>14,d}")
  # Vicuna-7B (6,738,415,616 with 32000 rows) grown to 33152 rows in embed and lm_head
  assert counts["llm"] == 6_738_415_616 + 2 * 4096 * (33152 - 32000)
  tower = jax.eval_shape(lambda k: CLIPVisionModel(vision_preset("vit_l14_336")).init(
      k, jnp.zeros((1, 336, 336, 3))), jax.random.key(0))
  assert counts["frontend/vision_tower"] == count_params(tower["params"])
  assert 303_000_000 < counts["frontend/vision_tower"] < 305_000_000
  assert counts["frontend/mm_projector"] == 1024 * 4096 + 4096 + 4096 * 4096 + 4096
  assert counts["head/queries"] == 4096 * (2 * 8 + 5 * 32)
  assert counts["head/gate"] == len(T.MODULES)
  for key in ("frontend/region_encoder", "head/task_proj", "head/shared_proj",
              "head/projector", "discriminator"):
    assert counts[key] > 0
  assert counts["total"] == sum(v for k, v in counts.items() if k != "total")
  # every parameter carries logical axis names (shardable by the rule presets)
  leaves = jax.tree_util.tree_leaves(abstract["params"],
                                     is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
  assert all(isinstance(x, nn.LogicallyPartitioned) for x in leaves)


def test_text_only_batch_equals_the_plain_llm():
  cfg = lib.config("hybrid")
  params = lib.params(cfg)
  ids = np.asarray([[1, 40, 41, 42, 43, 2], [1, 50, 51, 2, 0, 0]], np.int32)
  mask = ids != 0
  mask[:, 0] = True
  batch = {"input_ids": ids, "attention_mask": mask, "query_mask": np.zeros_like(mask),
           "module_ids": np.full((2,), -1, np.int32)}
  out = jax.jit(lambda p, b: Vitron(cfg).apply({"params": p}, b))(params, batch)
  ref = Llama(cfg.llm).apply({"params": params["llm"]}, ids, attention_mask=mask)
  np.testing.assert_allclose(out.logits, ref, rtol=1e-5, atol=1e-5)
  assert out.disc_logits.shape == (2, 2)


def test_visual_slots_carry_the_image_and_only_affect_later_positions():
  cfg = lib.config("hybrid")
  params = lib.params(cfg)
  batch = lib.training_batch(cfg, ["segment_image", None], 96, with_region=True)
  fwd = jax.jit(lambda p, b: Vitron(cfg).apply({"params": p}, b))
  out = fwd(params, batch)
  emb, errors = Vitron(cfg).apply({"params": params}, batch, method=Vitron.embed_inputs)
  assert {k: int(v) for k, v in errors.items()} == {"image": 0, "roi": 0, "query": 0}
  ids = batch["input_ids"]
  img_slots = ids == cfg.slot_ids.image
  assert img_slots.sum(1).tolist() == [cfg.frontend.image_tokens] * 2
  fe_tokens = Vitron(cfg).apply({"params": params}, images=batch["images"],
                                method=lambda m, images: m.frontend(images=images))
  np.testing.assert_allclose(np.asarray(emb)[img_slots],
                             np.asarray(fe_tokens["image"][0]).reshape(-1, cfg.llm.hidden_size),
                             rtol=1e-6)
  q = batch["query_mask"]
  bank = params["head"]["queries_segment_image"]
  np.testing.assert_allclose(np.asarray(emb)[0][q[0]], bank, rtol=1e-6)
  # another image for row 0: hidden states before its first slot are unchanged, after differ
  other = dict(batch, images=batch["images"].copy())
  other["images"][0] = -other["images"][0]
  out2 = fwd(params, other)
  first = int(np.flatnonzero(img_slots[0])[0])
  np.testing.assert_allclose(out2.hidden_states[0, :first], out.hidden_states[0, :first],
                             atol=1e-6)
  assert not np.allclose(out2.hidden_states[0, first:], out.hidden_states[0, first:])
  np.testing.assert_allclose(out2.hidden_states[1], out.hidden_states[1], atol=1e-6)


def test_mismatched_inputs_are_rejected_with_names():
  cfg = lib.config("hybrid")
  params = lib.params(cfg)
  batch = lib.training_batch(cfg, ["segment_image", None], 96)
  model = Vitron(cfg)
  no_images = {k: v for k, v in batch.items() if k != "images"}
  with pytest.raises(ValueError, match="<image> slots but the batch has no images"):
    model.apply({"params": params}, no_images, method=Vitron.embed_inputs)
  two = dict(batch, images=np.concatenate([batch["images"]] * 2, 1))
  with pytest.raises(ValueError, match="<image> slots: row 0 has 16 placeholder slots"):
    model.apply({"params": params}, two, method=Vitron.embed_inputs)
  wrong_module = dict(batch, module_ids=np.asarray([1, -1], np.int32))  # K=4, 2 slots
  with pytest.raises(ValueError, match="query slots: row 0"):
    model.apply({"params": params}, wrong_module, method=Vitron.embed_inputs)
  bad_ids = dict(batch, input_ids=np.where(batch["input_ids"] == 5, 10**6, batch["input_ids"]))
  bad_ids["input_ids"][0, 1] = 10**6
  with pytest.raises(ValueError, match="input_ids"):
    model.apply({"params": params}, bad_ids, method=Vitron.embed_inputs)
  check_batch(cfg, batch)  # the same checks on numpy inputs, before any jit
  with pytest.raises(ValueError, match="<image> slots: row 0 has 16 in input_ids but its "
                     "inputs fill 32"):
    check_batch(cfg, two)
  with pytest.raises(ValueError, match="query slots: row 0 has 2 but its module id 1 has K = 4"):
    check_batch(cfg, wrong_module)
  # inside jit nothing can raise: the mismatch is counted instead
  _, errors = jax.jit(lambda p, b: model.apply({"params": p}, b, method=Vitron.embed_inputs))(
      params, two)
  assert int(errors["image"]) == 2


def test_configs_validate_and_build():
  with pytest.raises(ValueError, match="llm_hidden"):
    cfg = lib.config()
    VitronConfig(cfg.llm.replace(hidden_size=128, intermediate_size=64), cfg.frontend,
                 cfg.head, cfg.synergy, cfg.slot_ids)
  with pytest.raises(ValueError, match="outside the LLM vocabulary"):
    cfg = lib.config()
    VitronConfig(cfg.llm.replace(vocab_size=100), cfg.frontend, cfg.head, cfg.synergy,
                 cfg.slot_ids)
  with pytest.raises(ValueError, match="phase"):
    vitron_7b.get_config("4")
  with pytest.raises(ValueError, match="routing"):
    vitron_tiny.get_config("psychic")
  for overrides in vitron_tiny.sweep():
    (key, value), = overrides.items()
    assert key == "model.head.routing"
    c = vitron_tiny.get_config()
    c.model.head.routing = value
    vitron_config_from(c.model)
  cfg = lib.config("superlink")
  assert VitronConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
  big = vitron_config_from(vitron_7b.get_config().model)
  assert VitronConfig.from_dict(json.loads(json.dumps(big.to_dict()))) == big
  ids = canonical_protocol_ids(32000)
  assert ids.image == 32000 and ids.locs[0] == 32000 + 9 + len(T.MODULES)
  assert len(vitron_7b.sweep()) == 6
  for phase in vitron_7b.PHASES:
    assert vitron_7b.get_config(phase).optim.trainable


def test_component_counts_tiny_and_text_routing_has_no_head_params():
  cfg = lib.config("hybrid")
  counts = component_param_counts(lib.params(cfg))
  assert counts["total"] == count_params(lib.params(cfg))
  text_cfg = lib.config("text")
  abstract = jax.eval_shape(lambda k: Vitron(text_cfg).init(
      k, dummy_batch(text_cfg, 1), natives=dummy_natives(text_cfg, 1)), jax.random.key(0))
  assert "head" not in abstract["params"] and "discriminator" not in abstract["params"]
