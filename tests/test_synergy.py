"""Synergy module: gradient reversal, the task discriminator and the adversarial game."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import flax.linen as nn
import pytest

from vitron_jax.models.synergy import (SynergyConfig, TaskDiscriminator, discriminator_loss,
                                       generator_loss, gradient_reversal,
                                       partition_discriminator)


def test_gradient_reversal_identity_forward_negated_scaled_backward():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 5)), jnp.float32)
  w = jnp.asarray(np.random.default_rng(1).normal(size=(3, 5)), jnp.float32)
  np.testing.assert_array_equal(gradient_reversal(x, 0.7), x)
  f = lambda x, lam: jnp.sum(jnp.sin(gradient_reversal(x, lam)) * w)
  plain = jax.grad(lambda x: jnp.sum(jnp.sin(x) * w))(x)
  for lam in (0.0, 0.3, 2.0):
    g = jax.jit(jax.grad(f))(x, jnp.float32(lam))
    np.testing.assert_allclose(g, -lam * plain, rtol=1e-6, atol=1e-7)
  # lam may be a Python float; its own gradient is zero; works under vmap.
  assert float(jax.grad(f, argnums=1)(x, 0.5)) == 0.0
  gv = jax.vmap(jax.grad(lambda r: jnp.sum(gradient_reversal(r, 1.5) * 2.0)))(x)
  np.testing.assert_allclose(gv, -3.0 * np.ones_like(x))


def test_discriminator_shapes_mask_and_losses():
  d = TaskDiscriminator(num_tasks=3, d_model=16, depth=1, num_heads=2)
  v = jnp.asarray(np.random.default_rng(0).normal(size=(4, 5, 8)), jnp.float32)
  valid = jnp.asarray([[1, 1, 0, 0, 0]] * 4, bool)
  params = nn.meta.unbox(d.init(jax.random.key(0), v, valid)["params"])
  logits = d.apply({"params": params}, v, valid)
  assert logits.shape == (4, 3)
  # padded tokens do not change the logits
  v2 = v.at[:, 2:].set(100.0)
  np.testing.assert_allclose(d.apply({"params": params}, v2, valid), logits, atol=1e-5)
  labels = jnp.asarray([0, 1, 2, -1])
  w = (labels >= 0).astype(jnp.float32)
  loss, acc = discriminator_loss(logits, labels, w)
  ref = -jax.nn.log_softmax(logits[:3])[jnp.arange(3), labels[:3]].mean()
  np.testing.assert_allclose(loss, ref, rtol=1e-5)
  assert 0.0 <= float(acc) <= 1.0
  uniform = jnp.zeros((4, 3))
  np.testing.assert_allclose(generator_loss(uniform, labels, w), np.log(3.0), rtol=1e-6)
  np.testing.assert_allclose(generator_loss(logits, labels, w, "reverse"), -loss, rtol=1e-6)
  with pytest.raises(ValueError, match="generator objective"):
    generator_loss(logits, labels, w, "nope")
  with pytest.raises(ValueError, match="mode"):
    SynergyConfig(mode="sometimes")
  labels_tree = partition_discriminator({"discriminator": {"a": 1}, "llm": {"b": 2}})
  assert labels_tree == {"discriminator": {"a": "discriminator"}, "llm": {"b": "model"}}


M, DZ, K, DS = 3, 6, 2, 8


def _problem():
  """Inputs x hold a task-independent signal z, the task's one-hot and noise; the task loss
  needs only z, so an encoder can drop the task identity without hurting it."""
  w_out = np.random.default_rng(0).normal(size=(DZ, 4))

  def batch(seed, n=128):
    q = np.random.default_rng(seed)
    task = q.integers(0, M, n)
    z = q.normal(size=(n, DZ))
    x = np.concatenate([z, np.eye(M)[task], np.zeros((n, 16 - DZ - M))], 1)
    x = x + 0.1 * q.normal(size=(n, 16))
    return np.float32(x), np.float32(z @ w_out), task.astype(np.int32)

  xs, ys, ts = zip(*(batch(100 + i) for i in range(300)))
  return np.stack(xs), np.stack(ys), np.stack(ts)


class _Encoder(nn.Module):
  @nn.compact
  def __call__(self, x):
    v = nn.Dense(K * DS)(x).reshape(x.shape[0], K, DS)   # v_s tokens
    return v, nn.Dense(4)(v.reshape(x.shape[0], -1))     # task prediction from v_s


def test_reversal_drives_discriminator_to_chance_while_task_loss_falls():
  enc, disc = _Encoder(), TaskDiscriminator(M, d_model=16, depth=1, num_heads=2)
  xs, ys, ts = _problem()
  params = nn.meta.unbox({
      "enc": enc.init(jax.random.key(0), xs[0])["params"],
      "discriminator": disc.init(jax.random.key(1), jnp.zeros((1, K, DS)))["params"]})
  opt = optax.adam(3e-3)

  def loss_fn(p, x, y, t, lam):
    v, pred = enc.apply({"params": p["enc"]}, x)
    task_loss = jnp.mean((pred - y) ** 2)
    d_loss, acc = discriminator_loss(disc.apply({"params": p["discriminator"]},
                                                gradient_reversal(v, lam)), t)
    return task_loss + d_loss, (task_loss, acc)

  @jax.jit
  def train(lam):
    def step(carry, b):
      p, s = carry
      (_, aux), g = jax.value_and_grad(loss_fn, has_aux=True)(p, *b, lam)
      u, s = opt.update(g, s, p)
      return (optax.apply_updates(p, u), s), aux
    _, (task, acc) = jax.lax.scan(step, (params, opt.init(params)), (xs, ys, ts))
    return task, acc

  task_off, acc_off = train(jnp.float32(0.0))   # reversal off: v_s never sees the discriminator
  task_on, acc_on = train(jnp.float32(1.0))
  for task in (task_off, task_on):
    assert float(task[-20:].mean()) < 0.05 * float(task[:10].mean())
  chance = 1.0 / M
  assert float(acc_off[-60:].mean()) > 0.9           # the task is readable from v_s ...
  assert float(acc_on[-60:].mean()) < chance + 0.08  # ... until the reversal hides it
  assert float(acc_off[-60:].mean()) - float(acc_on[-60:].mean()) > 0.4
