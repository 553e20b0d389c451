"""`state.init_state`: one jitted init per group of parameters, and parameters given (loaded
from elsewhere) never initialised, give the state one init of the whole tree gives."""
import jax
import numpy as np

from train_runs import load_config
from vitron_jax.nn import partitioning as PT
from vitron_jax.train import state as S
from vitron_jax.train.loop import build
from vitron_jax.train.optim import param_paths


def _assert_same(a, b):
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    assert x.sharding == y.sharding
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_grouped_and_given_init_equals_one_whole_init():
  task, tx, _, _ = build(load_config())
  mesh = PT.make_mesh({"fsdp": 8}, jax.devices())
  _, shardings = S.state_shardings(task.init, tx, mesh, PT.rules_for("fsdp"), 3)
  whole = S.init_state(task.init, tx, shardings, 3)
  groups = {"embed": r"^embed_tokens/", "layers": r"^layers/", "rest": r"."}
  _assert_same(S.init_state(task.init, tx, shardings, 3, groups=groups), whole)
  # given leaves are taken as they are (here: ones); the others are still the whole init's
  paths = param_paths(whole.params)
  picked = {p for p in paths if p.startswith("layers/")}
  given = jax.tree_util.tree_unflatten(
      jax.tree_util.tree_structure(whole.params),
      [jax.numpy.ones_like(x) if p in picked else None
       for p, x in zip(paths, jax.tree_util.tree_leaves(whole.params))])
  got = S.init_state(task.init, tx, shardings, 3, given=given, groups=groups)
  for p, x, y in zip(paths, jax.tree_util.tree_leaves(got.params),
                     jax.tree_util.tree_leaves(whole.params)):
    np.testing.assert_array_equal(np.asarray(x), np.ones(x.shape) if p in picked else y)
  _assert_same((got.step, got.rng), (whole.step, whole.rng))
  assert picked and len(picked) < len(paths)
