"""One full VITRON training step (LM + alignment + synergy + a backend-loss hook): compiles
once, and gives the same loss on 8 fake devices (fsdp) as on one."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

import vitron_testlib as lib
from vitron_jax.backends.base import Backend
from vitron_jax.models.objective import BackendHook, LossWeights, vitron_loss
from vitron_jax.models.synergy import partition_discriminator
from vitron_jax.models.vitron import Vitron, dummy_batch, dummy_natives
from vitron_jax.nn import partitioning


class ToyDiffusionBackend(Backend):
  """A frozen toy backend with the real contract: a text encoder (embedding table) for the
  native condition, a denoising loss (predict the noise from x_t and the pooled condition)."""

  def __init__(self, module, shape, dim=6):
    self.module, self._shape, self.dim = module, shape, dim

  @property
  def condition_shape(self):
    return self._shape

  def init(self, seed):
    r = np.random.default_rng(seed)
    n, w = self._shape
    return {"text": r.normal(size=(50, w)).astype(np.float32),
            "w_x": r.normal(size=(self.dim, self.dim)).astype(np.float32) * 0.3,
            "w_c": r.normal(size=(w, self.dim)).astype(np.float32) * 0.3}

  def native_condition(self, params, tokens):
    return jnp.take(params["text"], tokens, axis=0)  # [n, N, W]

  def loss(self, params, batch, condition, rng):
    noise = jax.random.normal(rng, batch["x0"].shape)
    x_t = 0.7 * batch["x0"] + 0.7 * noise
    pred = x_t @ params["w_x"] + condition.mean(1) @ params["w_c"]
    mse = jnp.mean((pred - noise) ** 2)
    return mse, {"mse": mse}

  def run(self, params, inputs, condition, rng):
    raise NotImplementedError


def _setup():
  cfg = lib.config("hybrid")
  modules = ["segment_image"] * 3 + ["generate_image"] * 3 + [None] * 2
  batch = lib.training_batch(cfg, modules, 96, with_region=True)
  backends = {m: ToyDiffusionBackend(m, cfg.head.condition_shapes[cfg.head.index(m)])
              for m in cfg.head.modules}
  bparams = {m: b.init(i) for i, (m, b) in enumerate(backends.items())}
  rows = {"segment_image": np.arange(0, 3, dtype=np.int32),
          "generate_image": np.arange(3, 6, dtype=np.int32)}
  batch["backend_rows"] = rows
  r = np.random.default_rng(5)
  batch["backend"] = {m: {"command_tokens": r.integers(0, 50, (3, cfg.head.condition_shapes[
      cfg.head.index(m)][0])).astype(np.int32),
                          "x0": r.normal(size=(3, 6)).astype(np.float32)} for m in backends}
  hooks = tuple(BackendHook.from_backend(b) for b in backends.values())
  return cfg, batch, hooks, bparams


def _make_step(cfg, hooks, tx, traces):
  model = Vitron(cfg)
  weights = LossWeights(lm=1.0, align=0.5, synergy=0.1, backend=1.0)

  def step(params, opt_state, batch, bparams, rng, lam):
    traces.append(1)
    (loss, metrics), grads = jax.value_and_grad(
        lambda p: vitron_loss(model, p, batch, rng, hooks=hooks, backend_params=bparams,
                              weights=weights, lam=lam), has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return loss, metrics, optax.apply_updates(params, updates), opt_state

  return step


def _next_batch(batch, seed):
  """Same shapes, other content (images, backend targets)."""
  r = np.random.default_rng(seed)
  out = dict(batch, images=r.normal(size=batch["images"].shape).astype(np.float32))
  out["backend"] = {m: dict(v, x0=r.normal(size=v["x0"].shape).astype(np.float32))
                    for m, v in batch["backend"].items()}
  return out


@pytest.mark.slow
def test_full_step_compiles_once_and_matches_on_8_fsdp_devices():
  assert jax.device_count() == 8
  cfg, batch, hooks, bparams = _setup()
  tx = optax.adam(1e-3)
  traces = []
  step = _make_step(cfg, hooks, tx, traces)
  params = jax.device_get(lib.params(cfg))
  rng, lam = jax.random.key(7), jnp.float32(0.3)

  # one device
  dev0 = jax.devices()[0]
  single = jax.jit(step)
  p1 = jax.device_put(params, dev0)
  o1 = tx.init(p1)
  loss_a, met_a, p1, o1 = single(p1, o1, batch, bparams, rng, lam)
  loss_b, met_b, _, _ = single(p1, o1, _next_batch(batch, 1), bparams, rng, lam)
  assert len(traces) == 1  # the second batch (other content) reuses the compiled step
  for name in ("loss/lm", "loss/align/segment_image", "loss/align/generate_image",
               "loss/synergy", "loss/backend/segment_image", "loss/backend/generate_image"):
    assert np.isfinite(float(met_a[name])) and float(met_a[name]) > 0, name
  assert float(met_a["slot_errors/image"]) == 0 and float(met_a["slot_errors/query"]) == 0
  assert set(k for k in met_a if k.startswith("lm/")) == {
      "lm/segment_image", "lm/generate_image", "lm/chat"}
  assert "backend/generate_image/mse" in met_a and "synergy/disc_accuracy" in met_a
  assert float(met_a["weight"]) == float(met_a["tokens/segment_image"] + met_a[
      "tokens/generate_image"] + met_a["tokens/chat"])

  # eight devices, parameters sharded fsdp, batch rows sharded, backend data replicated
  mesh = partitioning.make_mesh({"data": 1, "fsdp": 8, "tensor": 1})
  rules = partitioning.rules_for("fsdp")
  boxed = jax.eval_shape(lambda k: Vitron(cfg).init(k, dummy_batch(cfg, 1),
                                                    natives=dummy_natives(cfg, 1)),
                         jax.random.key(0))["params"]
  p_shard = partitioning.param_shardings(boxed, mesh, rules)
  sharded_leaves = [s for s in jax.tree_util.tree_leaves(p_shard) if s.spec != P()]
  assert len(sharded_leaves) > 50  # most kernels are really split over the 8 devices
  repl = NamedSharding(mesh, P())
  opt_shard = optax.tree_map_params(tx, lambda _, s: s, jax.eval_shape(tx.init, params),
                                    p_shard, transform_non_params=lambda _: repl)

  def batch_shard(b):
    out = {}
    for k, v in b.items():
      if k in ("backend", "backend_rows"):
        out[k] = jax.tree_util.tree_map(lambda _: repl, v)
      else:
        out[k] = jax.tree_util.tree_map(
            lambda x: partitioning.batch_sharding(mesh, rules, np.ndim(x)), v)
    return out

  traces8 = []
  step8 = _make_step(cfg, hooks, tx, traces8)
  b_shard = batch_shard(batch)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    sharded = jax.jit(step8, in_shardings=(p_shard, opt_shard, b_shard, repl, repl, repl),
                      out_shardings=(repl, repl, p_shard, opt_shard))
    p8 = jax.device_put(params, p_shard)
    o8 = jax.jit(tx.init, out_shardings=opt_shard)(p8)
    loss8_a, met8_a, p8, o8 = sharded(p8, o8, jax.device_put(batch, b_shard), bparams, rng, lam)
    loss8_b, _, p8, _ = sharded(p8, o8, jax.device_put(_next_batch(batch, 1), b_shard),
                                bparams, rng, lam)
  assert len(traces8) == 1
  np.testing.assert_allclose(float(loss8_a), float(loss_a), rtol=2e-5, atol=2e-5)
  np.testing.assert_allclose(float(loss8_b), float(loss_b), rtol=2e-5, atol=2e-5)
  for k in met_a:
    np.testing.assert_allclose(float(met8_a[k]), float(met_a[k]), rtol=1e-4, atol=1e-5,
                               err_msg=k)
  q = p8["llm"]["layers"]["self_attn"]["q_proj"]["kernel"]
  assert q.sharding.spec == P(None, "fsdp", None) and len(q.addressable_shards) == 8


def test_objective_phases_and_alternating_partition():
  cfg, batch, hooks, bparams = _setup()
  params = lib.params(cfg)
  model = Vitron(cfg)
  rng = jax.random.key(0)

  def loss(p, phase, lam=None, weights=LossWeights()):
    return vitron_loss(model, p, batch, rng, hooks=hooks, backend_params=bparams,
                       synergy_phase=phase, lam=lam, weights=weights)

  syn_only = LossWeights(lm=0, align=0, synergy=1.0, backend=0)

  @jax.jit
  def everything(p):  # one compile for all the phases
    (joint, mj), (disc, _), (gen, mg) = (loss(p, ph) for ph in ("joint", "discriminator",
                                                                 "generator"))
    g_disc = jax.grad(lambda q: loss(q, "discriminator")[0])(p)
    g_plus = jax.grad(lambda q: loss(q, "joint", 1.0, syn_only)[0])(p)
    g_minus = jax.grad(lambda q: loss(q, "joint", -1.0, syn_only)[0])(p)
    return joint, mj, disc, mg, g_disc, g_plus, g_minus

  joint, mj, disc, mg, g_disc, gp, gm = everything(params)
  np.testing.assert_allclose(float(disc), 0.1 * float(mj["loss/synergy"]), rtol=1e-5)
  assert "synergy/disc_loss" in mg and float(mg["loss/synergy"]) > 0
  # discriminator phase: only discriminator parameters get gradients
  labels = partition_discriminator(g_disc)
  norms = {"discriminator": 0.0, "model": 0.0}
  for lab, x in zip(jax.tree_util.tree_leaves(labels), jax.tree_util.tree_leaves(g_disc)):
    norms[lab] += float(jnp.sum(jnp.abs(x)))
  assert norms["discriminator"] > 0 and norms["model"] == 0.0
  # gradient reversal: the LLM side's synergy gradient flips sign with lam, the
  # discriminator's does not
  a = gp["head"]["shared_proj"]["fc2"]["kernel"]
  b = gm["head"]["shared_proj"]["fc2"]["kernel"]
  assert float(jnp.abs(a).sum()) > 0
  np.testing.assert_allclose(a, -b, rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(gp["discriminator"]["classifier"]["kernel"],
                             gm["discriminator"]["classifier"]["kernel"], rtol=1e-5)
  with pytest.raises(ValueError, match="synergy_phase"):
    vitron_loss(model, params, batch, rng, synergy_phase="both")
  with pytest.raises(ValueError, match="hooks for modules"):
    vitron_loss(model, params, batch, rng,
                hooks=(BackendHook("edit_video", lambda *a: (0.0, {})),))
