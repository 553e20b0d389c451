"""One sharded LLM train step on 8 fake CPU devices equals the single-device step."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from vitron_jax.models.llama import Llama, LlamaConfig
from vitron_jax.nn import partitioning
from vitron_jax.train.losses import lm_loss, next_token_targets

CFG = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
B, T = 8, 16


def make_step(module, tx):
  def loss_fn(params, batch):
    logits = module.apply({"params": params}, batch["input_ids"],
                          attention_mask=batch["attention_mask"])
    return lm_loss(logits, batch["targets"], batch["loss_mask"])[0]

  def step(params, opt_state, batch):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch)
    updates, opt_state = tx.update(grads, opt_state, params)
    return loss, grads, optax.apply_updates(params, updates), opt_state

  return step


def make_batch():
  rng = np.random.default_rng(0)
  ids = rng.integers(0, CFG.vocab_size, (B, T)).astype(np.int32)
  attention_mask = np.ones((B, T), bool)
  attention_mask[:, T - 3:] = rng.random((B, 3)) < 0.5  # some right padding
  attention_mask = np.cumprod(attention_mask, axis=1).astype(bool)
  targets, loss_mask = next_token_targets(jnp.asarray(ids), jnp.asarray(attention_mask))
  return {"input_ids": ids, "attention_mask": attention_mask,
          "targets": np.asarray(targets), "loss_mask": np.asarray(loss_mask)}


@pytest.mark.parametrize("mesh_shape,preset,scan", [
    ({"fsdp": 8}, "fsdp", True),
    ({"fsdp": 4, "tensor": 2}, "fsdp_tensor", True),
    pytest.param({"fsdp": 4, "tensor": 2}, "fsdp_tensor", False, marks=pytest.mark.slow),
])
def test_sharded_train_step_matches_single_device(mesh_shape, preset, scan):
  assert jax.device_count() == 8
  module = Llama(CFG.replace(scan_layers=scan, remat_policy="dots_saveable"))
  tx = optax.adamw(1e-3, weight_decay=0.1)
  step = make_step(module, tx)
  batch = make_batch()
  mesh = partitioning.make_mesh(mesh_shape)
  rules = partitioning.rules_for(preset)

  def init_fn(key):
    return module.init(key, jnp.zeros((1, T), jnp.int32))["params"]

  params, p_shard = partitioning.sharded_init(init_fn, mesh, rules, jax.random.key(0))
  # the parameters are really spread over the mesh
  q = params["layers"]["self_attn"]["q_proj"]["kernel"] if scan else \
      params["layers_0"]["self_attn"]["q_proj"]["kernel"]
  want = {"fsdp": P(None, "fsdp", None), "fsdp_tensor": P(None, "fsdp", "tensor")}[preset]
  assert q.sharding.spec == (want if scan else P(*want[1:]))
  assert len(q.addressable_shards) == 8
  assert q.addressable_shards[0].data.size == q.size // 8

  # single-device reference, from the same values
  host = jax.device_get(params)
  dev0 = jax.devices()[0]
  single = jax.device_put(host, dev0)
  ref = jax.jit(step)(single, tx.init(single), jax.device_put(batch, dev0))

  replicated = NamedSharding(mesh, P())
  # optimizer moments shard like their parameters; scalars (step count) are replicated
  opt_shard = optax.tree_map_params(tx, lambda _, s: s, jax.eval_shape(tx.init, params),
                                    p_shard, transform_non_params=lambda _: replicated)
  b_shard = {k: partitioning.batch_sharding(mesh, rules, 2) for k in batch}
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    opt_state = jax.jit(tx.init, out_shardings=opt_shard)(params)
    sharded_step = jax.jit(step, in_shardings=(p_shard, opt_shard, b_shard),
                           out_shardings=(replicated, p_shard, p_shard, opt_shard))
    got = sharded_step(params, opt_state, jax.device_put(batch, b_shard))

  loss, grads, new_params, _ = got
  np.testing.assert_allclose(float(loss), float(ref[0]), rtol=0, atol=1e-5)
  # AdamW's first step moves each weight by ~lr * g / (|g| + eps): for a gradient near zero a
  # 1e-8 difference in g (summation order across shards) shifts it by a fraction of lr (seen:
  # 1.4e-5, 1 weight in 16384), so params get 5% of lr; a wrong sharding is off by ~lr
  for name, tree_got, tree_ref, atol in (("grads", grads, ref[1], 1e-5),
                                         ("params", new_params, ref[2], 5e-5)):
    flat_got = jax.tree_util.tree_leaves_with_path(tree_got)
    flat_ref = jax.tree_util.tree_leaves(tree_ref)
    for (path, g), r in zip(flat_got, flat_ref):
      np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=0, atol=atol,
                                 err_msg=f"{name} {jax.tree_util.keystr(path)}")
  gq = grads["layers"]["self_attn"]["q_proj"]["kernel"] if scan else \
      grads["layers_0"]["self_attn"]["q_proj"]["kernel"]
  assert gq.sharding.spec == q.sharding.spec
