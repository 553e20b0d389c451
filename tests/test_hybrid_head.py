"""Hybrid head: query slots in training vs cached decoding, signals, routing modes."""
import jax
import jax.numpy as jnp
import flax.linen as nn
import numpy as np
import pytest

import vitron_testlib as lib
from vitron_jax.models.assembly import gather_slots
from vitron_jax.models.condition_projector import ConditionProjector
from vitron_jax.models.invocation import HeadConfig, HybridHead
from vitron_jax.models.vitron import Vitron
from vitron_jax.models.vitron_decoding import generate


@pytest.mark.parametrize("routing",
                         ["hybrid", pytest.param("superlink", marks=pytest.mark.slow)])
def test_query_slot_hidden_states_match_between_training_and_cached_decoding(routing):
  cfg = lib.config(routing)
  params = lib.params(cfg)
  modules = ["segment_image", "generate_image", None]  # K = 2, K = 4, no invocation
  questions = ["what is this?", "draw me something nice please", "hi"]
  convs = [lib.conversation(cfg, m, q) for m, q in zip(modules, questions)]
  b = lib.builder(cfg)
  length = max(len(c[1]["input_ids"]) for c in convs) + 3
  train = b.pack([c[1] for c in convs], length, side="right")
  train["images"] = lib.images(3, cfg)
  model = Vitron(cfg)
  out = jax.jit(lambda p, x: model.apply({"params": p}, x))(params, train)
  k = cfg.head.k_max
  h_train = gather_slots(out.hidden_states, train["query_mask"], k)

  # decoding: left-padded prompts, the answers' text tokens teacher-forced
  plen = max(len(c[0]["input_ids"]) for c in convs)
  prompt = b.pack([c[0] for c in convs], plen, side="left")
  prompt["images"] = train["images"]
  n_new = 40
  forced = np.full((3, n_new), -1, np.int32)
  free_at = {}
  for i, (p, full) in enumerate(convs):
    n_p = len(p["input_ids"])
    ans = [t for t, q in zip(full["input_ids"][n_p:], full["query_mask"][n_p:]) if not q]
    forced[i, :len(ans)] = ans
    q_pos = np.flatnonzero(train["query_mask"][i])
    if q_pos.size:  # the token after the queries is left to greedy decoding
      free_at[i] = (int(q_pos[-1]) - n_p + 1 - q_pos.size, int(q_pos[-1]))
      forced[i, free_at[i][0]] = -1
  dec = generate(model, params, prompt, max_new_tokens=n_new, forced_tokens=forced,
                 stop_tokens=[])
  for i, m in enumerate(modules):
    if m is None:
      assert int(dec.num_invocations[i]) == 0 and not bool(dec.signal_valid[i].any())
      continue
    kk = cfg.head.query_counts[m]
    assert int(dec.num_invocations[i]) == 1
    assert int(dec.signal_modules[i, 0]) == cfg.head.index(m)
    assert dec.signal_valid[i, 0].tolist() == [True] * kk + [False] * (k - kk)
    np.testing.assert_allclose(dec.signals[i, 0, :kk], h_train[i, :kk], rtol=1e-5, atol=1e-5)
    # the next token comes from the logits at the last query slot, as in training
    step, last_slot = free_at[i]
    assert int(dec.tokens[i, step]) == int(jnp.argmax(out.logits[i, last_slot]))
  np.testing.assert_array_equal(dec.tokens[forced >= 0], forced[forced >= 0])
  # signals -> projected conditions agree with the training path
  for i, m in enumerate(modules[:2]):
    idx = jnp.asarray([cfg.head.index(m)])
    proj = model.apply({"params": params}, m, dec.signals[i:i + 1, 0], idx,
                       dec.signal_valid[i:i + 1, 0], method=Vitron.project_signals)
    np.testing.assert_allclose(proj[0], out.projected[m][i], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_free_generation_runs_with_sampling_and_query_steps():
  cfg = lib.config("hybrid")
  params = lib.params(cfg)
  prompt, _ = lib.conversation(cfg, None, "what is this?")
  batch = lib.builder(cfg).pack([prompt, prompt], len(prompt["input_ids"]), side="left")
  batch["images"] = lib.images(2, cfg)
  inv_close = cfg.slot_ids.inv_close
  seg = cfg.slot_ids.module_token("segment_image")
  forced = np.full((2, 12), -1, np.int32)
  forced[0, :2] = [seg, inv_close]  # row 0 invokes immediately; then free sampling
  out = generate(Vitron(cfg), params, batch, max_new_tokens=12, forced_tokens=forced,
                 temperature=1.0, rng=jax.random.key(3), max_invocations=2, stop_tokens=[])
  assert out.tokens.shape == (2, 12)
  assert int(out.num_invocations[0]) >= 1 and bool(out.signal_valid[0, 0, :2].all())
  with pytest.raises(ValueError, match="left-padded"):
    bad = dict(batch, attention_mask=np.asarray(batch["attention_mask"]).copy())
    bad["attention_mask"][:, -1] = False
    generate(Vitron(cfg), params, bad, max_new_tokens=4)
  with pytest.raises(ValueError, match="forced_tokens"):
    generate(Vitron(cfg), params, batch, max_new_tokens=4, forced_tokens=np.zeros((2, 3)))


def _head(routing, combine="gated_sum"):
  c = HeadConfig(modules=("segment_image", "generate_image"), num_queries=(2, 3),
                 condition_shapes=((4, 8), (5, 8)), routing=routing, hybrid_combine=combine,
                 task_dim=16, shared_dim=8, projector_dim=16, projector_depth=1,
                 projector_heads=2)
  head = HybridHead(c, llm_hidden=24)
  h = jnp.asarray(np.random.default_rng(0).normal(size=(3, 3, 24)), jnp.float32)
  mids = jnp.asarray([0, 1, -1])
  nat = {"segment_image": jnp.ones((3, 4, 8)), "generate_image": jnp.ones((3, 5, 8))}
  params = nn.meta.unbox(head.init(jax.random.key(0), h, mids, nat).get("params", {}))
  return c, head, params, h, mids, nat


def test_bank_signals_and_per_module_task_projection():
  c, head, params, h, mids, _ = _head("embedding")
  bank, valid = head.apply({"params": params}, mids, method=HybridHead.bank)
  assert bank.shape == (3, 3, 24)
  assert valid.tolist() == [[True, True, False], [True, True, True], [False] * 3]
  np.testing.assert_array_equal(bank[0, :2], params["queries_segment_image"])
  np.testing.assert_array_equal(bank[1], params["queries_generate_image"])
  sig = head.apply({"params": params}, h, mids, valid, method=HybridHead.signals)
  assert sig.v.shape == (3, 3, 24) and sig.v_p.shape == (3, 3, 16) and sig.v_s.shape == (3, 3, 8)
  from vitron_jax.models.invocation import ProjMLP
  for row, m in ((0, "segment_image"), (1, "generate_image")):
    want = ProjMLP(16).apply({"params": params[f"task_proj_{m}"]}, h[row])
    np.testing.assert_allclose(sig.v_p[row], want, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(sig.v_p[2], 0.0)  # no module: no task-specific part
  np.testing.assert_allclose(sig.v, jnp.concatenate([sig.v_p, sig.v_s], -1))


@pytest.mark.parametrize("routing, combine, shape", [
    ("text", "gated_sum", (3, 4, 8)), ("embedding", "gated_sum", (3, 4, 8)),
    ("hybrid", "gated_sum", (3, 4, 8)), ("hybrid", "concat", (3, 8, 8)),
    ("superlink", "gated_sum", (3, 4, 8))])
def test_routing_modes(routing, combine, shape):
  c, head, params, h, mids, nat = _head(routing, combine)
  out = head.apply({"params": params}, h, mids, nat)
  assert out["segment_image"].shape == shape
  assert c.condition_shape("segment_image") == shape[1:]
  if routing == "text":
    assert params == {} or not params
    np.testing.assert_array_equal(out["segment_image"], nat["segment_image"])
  if routing == "hybrid" and combine == "gated_sum":  # the gate starts closed
    np.testing.assert_allclose(out["segment_image"], nat["segment_image"])
    p2 = dict(params, gate_segment_image=jnp.float32(0.5))
    assert not np.allclose(head.apply({"params": p2}, h, mids, nat)["segment_image"],
                           nat["segment_image"])
  if routing == "hybrid" and combine == "concat":
    np.testing.assert_array_equal(out["segment_image"][:, :4], nat["segment_image"])
  if routing in ("hybrid", "text"):
    with pytest.raises(ValueError, match="native condition"):
      head.apply({"params": params}, h, mids, {})


def test_condition_projector_ignores_padding_tokens():
  proj = ConditionProjector(num_tokens=5, width=12, d_model=16, depth=2, num_heads=4)
  v = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 10)), jnp.float32)
  valid = jnp.asarray([[True, True, False, False], [True, True, True, True]])
  params = nn.meta.unbox(proj.init(jax.random.key(0), v, valid)["params"])
  out = proj.apply({"params": params}, v, valid)
  assert out.shape == (2, 5, 12)
  v2 = v.at[0, 2:].set(50.0)
  np.testing.assert_allclose(proj.apply({"params": params}, v2, valid)[0], out[0], atol=1e-5)
  assert not np.allclose(proj.apply({"params": params}, v2, valid)[1], out[1] + 1.0)


def test_head_config_validation():
  with pytest.raises(ValueError, match="unknown module"):
    HeadConfig(("segment_everything",), (2,), ((4, 8),))
  with pytest.raises(ValueError, match="one entry per module"):
    HeadConfig(("segment_image",), (2, 3), ((4, 8),))
  with pytest.raises(ValueError, match="K >= 1"):
    HeadConfig(("segment_image",), (0,), ((4, 8),), routing="embedding")
  with pytest.raises(ValueError, match="routing"):
    HeadConfig(("segment_image",), (2,), ((4, 8),), routing="telepathy")
  assert HeadConfig(("segment_image",), (0,), ((4, 8),), routing="text").k_max == 0
