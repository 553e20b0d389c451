"""Meshes, rule presets and sharded init on 8 fake CPU devices."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vitron_jax.nn import partitioning as P
from vitron_jax.nn.layers import Dense


class Two(nn.Module):
  @nn.compact
  def __call__(self, x):
    h = Dense(64, axes=("embed", "mlp"), name="up")(x)
    return Dense(4, axes=("mlp", "embed"), name="down")(h)  # 4 outputs: not divisible by 8


def test_make_mesh_fills_and_validates():
  mesh = P.make_mesh({"fsdp": -1, "tensor": 2})
  assert dict(mesh.shape) == {"data": 1, "fsdp": 4, "tensor": 2}
  with pytest.raises(ValueError, match="needs 6 devices, but 8"):
    P.make_mesh({"data": 3, "fsdp": 2})
  with pytest.raises(ValueError, match="not known"):
    P.make_mesh({"model": 8})
  with pytest.raises(ValueError, match="at most one axis may be -1"):
    P.make_mesh({"data": -1, "fsdp": -1})
  with pytest.raises(ValueError, match="unknown sharding rule preset"):
    P.rules_for("zero3")


def test_sharded_init_places_params_and_replicates_indivisible_dims():
  mesh, rules = P.make_mesh({"fsdp": 8}), P.rules_for("fsdp")
  model = Two()
  x = jnp.ones((8, 16))
  params, shardings = P.sharded_init(lambda k: model.init(k, x)["params"], mesh, rules,
                                     jax.random.key(0))
  up = params["up"]["kernel"]
  assert up.sharding.spec == jax.sharding.PartitionSpec("fsdp", None)
  assert len(up.addressable_shards) == 8 and up.addressable_shards[0].data.shape == (2, 64)
  # "down" maps its 4-wide "embed" output to fsdp=8, which does not divide: replicated there.
  assert params["down"]["kernel"].sharding.spec == jax.sharding.PartitionSpec(None, None)
  ref = nn.meta.unbox(model.init(jax.random.key(0), x)["params"])
  for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(ref)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
  assert P.count_params(params) == 16 * 64 + 64 + 64 * 4 + 4
