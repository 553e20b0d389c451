"""Optimisation: schedules, freezing (bit-identical, no optimizer state), per-module learning
rates, clipping, gradient accumulation, mixed precision and LoRA."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from train_runs import load_config
from vitron_jax.nn import partitioning as PT
from vitron_jax.train import optim as O
from vitron_jax.train import state as S
from vitron_jax.train import step as ST
from vitron_jax.train.lora import LoraTask, merge_lora
from vitron_jax.train.loop import build


# ----------------------------------------------------------------------------- schedules
def test_warmup_cosine_schedule_values():
  s = O.make_schedule(1.0, 110, schedule="cosine", warmup_steps=10, end_lr_ratio=0.1)
  assert float(s(0)) == 0.0
  assert float(s(5)) == pytest.approx(0.5)
  assert float(s(10)) == pytest.approx(1.0)
  for t in (20, 60, 100):
    want = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (t - 10) / 100))
    assert float(s(t)) == pytest.approx(want, rel=1e-5)
  assert float(s(110)) == pytest.approx(0.1)
  assert float(s(500)) == pytest.approx(0.1)
  lin = O.make_schedule(2.0, 20, schedule="linear", warmup_steps=10, end_lr_ratio=0.0)
  assert float(lin(15)) == pytest.approx(1.0)
  const = O.make_schedule(2.0, 20, schedule="constant", warmup_steps=4)
  assert float(const(2)) == pytest.approx(1.0) and float(const(19)) == pytest.approx(2.0)
  with pytest.raises(ValueError, match="optim.schedule"):
    O.make_schedule(1.0, 10, schedule="step")
  with pytest.raises(ValueError, match="decay_steps"):
    O.make_schedule(1.0, 10, warmup_steps=10)


# -------------------------------------------------------------------------------- labels
PARAMS = {"vision": {"proj": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones((3,))}},
          "llm": {"layers": {"q_proj": {"kernel": jnp.ones((3, 3))}},
                  "norm": {"weight": jnp.ones((3,))}}}


def test_labels_from_path_regexes():
  lab = O.Labeler(freeze=[r"^vision/"], lr_multipliers=[(r"q_proj", 10.0)],
                  no_decay=r"(bias|weight)$", weight_decay=0.1)
  labels = lab.labels(PARAMS)
  assert labels["vision"]["proj"]["kernel"] == "frozen"
  assert labels["vision"]["proj"]["bias"] == "frozen"
  assert labels["llm"]["layers"]["q_proj"]["kernel"] == "g1_wd"
  assert labels["llm"]["norm"]["weight"] == "g0_nowd"
  assert lab.check(PARAMS) == {"frozen": 2, "g1_wd": 1, "g0_nowd": 1}
  only = O.Labeler(trainable=[r"^vision/proj/kernel$"])
  assert only.check(PARAMS) == {"g0_nowd": 1, "frozen": 3}


def test_label_errors_name_the_setting():
  with pytest.raises(ValueError, match=r"optim.freeze: pattern 'visoin' matches no parameter"):
    O.Labeler(freeze=["visoin"]).check(PARAMS)
  with pytest.raises(ValueError, match="optim.freeze.*not a valid regex"):
    O.Labeler(freeze=["(("])
  with pytest.raises(ValueError, match="every parameter is frozen"):
    O.Labeler(freeze=[".*"]).check(PARAMS)
  with pytest.raises(ValueError, match="optim.lr_multipliers"):
    O.Labeler(lr_multipliers=[("a", 1.0, 2.0)])


def test_lr_multipliers_scale_updates():
  cfg = dict(name="sgd", lr=0.5, schedule="constant", warmup_steps=0, momentum=0.0,
             clip_norm=0.0, lr_multipliers=((r"q_proj", 10.0), (r"norm", 0.0)))
  tx, lab, _ = O.build_optimizer(cfg, 10)
  grads = jax.tree_util.tree_map(jnp.ones_like, PARAMS)
  updates, _ = tx.update(grads, tx.init(PARAMS), PARAMS)
  assert np.allclose(updates["vision"]["proj"]["kernel"], -0.5)
  assert np.allclose(updates["llm"]["layers"]["q_proj"]["kernel"], -5.0)
  assert np.all(updates["llm"]["norm"]["weight"] == 0)  # multiplier 0 = frozen
  assert lab.label("llm/norm/weight") == "frozen"


def test_clipping_bounds_the_update():
  cfg = dict(name="sgd", lr=1.0, schedule="constant", warmup_steps=0, momentum=0.0,
             clip_norm=0.5)
  tx, _, _ = O.build_optimizer(cfg, 10)
  grads = jax.tree_util.tree_map(lambda x: 3.0 * jnp.ones_like(x), PARAMS)
  updates, _ = tx.update(grads, tx.init(PARAMS), PARAMS)
  assert float(optax.global_norm(updates)) == pytest.approx(0.5, rel=1e-5)


# ----------------------------------------------------------------------- in a real step
def _setup(config, mesh_shape=None, rules="data"):
  """Tiny LM state; one device unless a mesh is asked for (compiles much faster)."""
  task, tx, lab, sched = build(config)
  mesh = PT.make_mesh(mesh_shape) if mesh_shape else PT.make_mesh({"data": 1},
                                                                  jax.devices()[:1])
  rules = PT.rules_for(rules)
  _, shardings = S.state_shardings(task.init, tx, mesh, rules, 0)
  state = S.init_state(task.init, tx, shardings, 0)
  mask = lab.trainable_mask(state.params)
  return task, tx, lab, sched, mesh, rules, shardings, state, mask


def _run(config, steps=3, **kw):
  task, tx, lab, sched, mesh, rules, shardings, state, mask = _setup(config, **kw)
  step = ST.jit_train_step(
      ST.make_train_step(task, tx, mask, sched, accum_steps=config.train.accum_steps,
                         compute_dtype=config.train.compute_dtype),
      shardings, task.batch_spec(), mesh, rules)
  data = task.make_data(config.data.global_batch, 0, 1)
  init = jax.device_get(state.params)
  out = []
  for _ in range(steps):
    state, m = step(state, next(data))
    out.append(jax.device_get(m))
  return init, state, out, lab


def _flat(tree):
  return {O.path_str(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_frozen_params_are_bit_identical_and_have_no_optimizer_state():
  c = load_config()
  c.optim.freeze = (r"^embed_tokens/", r"norm/weight$", r"^layers/mlp/up_proj/")
  c.optim.weight_decay = 0.1
  init, state, metrics, lab = _run(c)
  assert metrics[-1]["loss"] < metrics[0]["loss"] + 1.0 and np.isfinite(metrics[-1]["loss"])
  before, after = _flat(init), _flat(state.params)
  frozen = [p for p in before if lab.label(p) == "frozen"]
  assert set(frozen) == {"embed_tokens/embedding", "layers/input_layernorm/weight",
                         "layers/post_attention_layernorm/weight", "norm/weight",
                         "layers/mlp/up_proj/kernel"}
  for p in before:
    if p in frozen:
      assert before[p].tobytes() == after[p].tobytes(), p
    else:
      assert not np.array_equal(before[p], after[p]), f"{p} did not train"
  # optimizer leaves: only the step counts and the moments of trainable parameters
  shapes = {p: a.shape for p, a in before.items()}
  mirrored = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(state.opt_state)[0]:
    names = [O.key_name(k) for k in path]
    hit = [p for p in shapes if "/".join(names).endswith("/" + p)]
    if hit:
      mirrored.append(hit[0])
    else:
      assert np.ndim(leaf) == 0, names  # counts
  assert not set(mirrored) & set(frozen)
  trainable = set(before) - set(frozen)
  assert sorted(mirrored) == sorted(list(trainable) * 2)  # adam: mu and nu


@pytest.fixture(scope="module")
def baseline():
  """Two fp32 steps of the tiny LM on one device: (final state, metrics)."""
  _, s, m, _ = _run(load_config(), steps=2)
  return s, m


def test_gradient_accumulation_equals_the_whole_batch(baseline):
  c = load_config()
  s1, m1 = baseline
  c.train.accum_steps = 4
  _, s4, m4, _ = _run(c, steps=2)
  for a, b in zip(m1, m4):
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)
    assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5)
    assert a["weight"] == b["weight"]
  for p, x in _flat(s1.params).items():
    np.testing.assert_allclose(_flat(s4.params)[p], x, atol=1e-6, err_msg=p)


def test_bfloat16_compute_keeps_float32_params(baseline):
  c = load_config()
  _, m32 = baseline
  c.train.compute_dtype = "bfloat16"
  _, s16, m16, _ = _run(c, steps=2)
  assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(s16.params))
  assert m16[0]["loss"] == pytest.approx(m32[0]["loss"], rel=2e-2)
  assert m16[0]["loss"] != m32[0]["loss"]  # really computed in bf16


def test_sharded_step_matches_one_device(baseline):
  c = load_config()
  _, m_data = baseline
  _, st, m_fsdp, _ = _run(c, steps=2, mesh_shape={"fsdp": 4, "tensor": 2}, rules="fsdp_tensor")
  q = st.params["layers"]["self_attn"]["q_proj"]["kernel"]
  assert len(q.sharding.device_set) == 8 and q.addressable_shards[0].data.size < q.size
  for a, b in zip(m_data, m_fsdp):
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)


# ----------------------------------------------------------------------------------- LoRA
def test_lora_trains_only_adapters_from_the_base_model():
  c = load_config()
  c.lora.enabled = True
  c.lora.rank = 4
  c.optim.lr = 1e-2
  init, st, metrics, lab = _run(c, steps=4)
  task = build(c)[0]
  assert isinstance(task, LoraTask)
  key = "layers|self_attn|q_proj|kernel"
  assert init["lora"][key]["lora_a"].shape == (2, 32, 4)
  assert init["lora"][key]["lora_b"].shape == (2, 4, 32)
  batch = next(task.make_data(8, 0, 1))
  both = jax.jit(lambda p: (task.loss(p, batch, None)[0],
                            task.task.loss(p["model"], batch, None)[0]))
  lora_loss, base_loss = both(init)
  assert float(lora_loss) == float(base_loss)  # B = 0: exactly the base model
  before, after = _flat(init), _flat(st.params)
  for p in before:
    if p.startswith("model/"):
      assert before[p].tobytes() == after[p].tobytes(), p
  assert any(not np.array_equal(before[p], after[p]) for p in before if p.startswith("lora/"))
  assert metrics[-1]["loss"] < metrics[0]["loss"]
  merged = merge_lora(jax.device_get(st.params), c.lora.alpha, c.lora.rank)
  assert set(_flat(merged)) == {p[len("model/"):] for p in before if p.startswith("model/")}
  with pytest.raises(ValueError, match="lora.targets"):
    LoraTask(task.task, rank=2, alpha=1.0, targets="nothing_like_this").init(
        jax.random.key(0))
