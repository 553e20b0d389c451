"""Sequence packing: segment_ids in Llama (each packed sample attends only to itself, positions
restart per segment), next-token targets that stop at segment ends, and the lm_conversations
task with `task.pack` (tiny random fp32 models)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llava_fixture import write_llava_folder
from train_runs import ROOT, load_config
from vitron_jax.data import pipeline
from vitron_jax.models.llama import Llama, LlamaConfig, init_cache
from vitron_jax.nn.attention import segment_mask, segment_positions
from vitron_jax.train.losses import lm_loss, next_token_targets
from vitron_jax.train.task import build_task

LENGTHS = [5, 7, 3, 9, 4]  # first-fit into 2 rows of 16: [5, 7, 3] + 1 pad, [9, 4] + 3 pad
ROW = 16


def _model(scan_layers=True, attention_chunk=0):
  # A large init so that tokens really depend on their context.
  cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                    initializer_range=0.3, scan_layers=scan_layers,
                    attention_chunk=attention_chunk)
  model = Llama(cfg)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))["params"]
  return model, params


def _jit_logits(model):
  """`(params, ids, **kw) -> logits`, jitted (much faster than eager on CPU)."""
  return jax.jit(lambda params, ids, **kw: model.apply({"params": params}, ids, **kw))


def _separately(model, params, seqs):
  """Logits of each sequence run alone: one row each, right-padded (causal attention, so the
  padding after a sequence cannot change its logits)."""
  n = max(map(len, seqs))
  ids = np.zeros((len(seqs), n), np.int32)
  for i, x in enumerate(seqs):
    ids[i, :len(x)] = x
  mask = np.arange(n)[None] < np.asarray([len(x) for x in seqs])[:, None]
  out = _jit_logits(model)(params, jnp.asarray(ids), attention_mask=jnp.asarray(mask))
  return [out[i, :len(x)] for i, x in enumerate(seqs)]


def _packed():
  rng = np.random.default_rng(0)
  samples = [{"input_ids": rng.integers(3, 64, n).tolist(), "loss_mask": [True] * n}
             for n in LENGTHS]
  rows, left = pipeline.pack_rows(samples, 2, ROW, ("input_ids", "loss_mask"))
  assert not left and rows["segment_ids"].max() == 3
  return samples, rows


@pytest.mark.parametrize("scan_layers,chunk", [(True, 0), (False, 0), (False, 4)])
def test_packed_forward_equals_separate_forwards(scan_layers, chunk):
  model, params = _model(scan_layers, chunk)
  samples, rows = _packed()
  ids, seg = jnp.asarray(rows["input_ids"]), jnp.asarray(rows["segment_ids"])
  logits = _jit_logits(model)
  packed = logits(params, ids, segment_ids=seg)
  unpacked = logits(params, ids, attention_mask=seg > 0)
  alone = _separately(model, params, [x["input_ids"] for x in samples])
  k = 0
  for r in range(2):
    for s in range(1, int(seg[r].max()) + 1):
      at = np.asarray(seg[r] == s)
      assert at.sum() == LENGTHS[k]
      np.testing.assert_allclose(packed[r][at], alone[k], atol=1e-5, rtol=0)
      if s > 1:  # the test has teeth: without segments, later samples see earlier ones
        assert not np.allclose(unpacked[r][at], alone[k], atol=1e-3)
      k += 1
  assert k == len(LENGTHS)


def test_default_positions_restart_per_segment():
  _, rows = _packed()
  seg = jnp.asarray(rows["segment_ids"])
  np.testing.assert_array_equal(segment_positions(seg), rows["positions"])
  np.testing.assert_array_equal(segment_positions(jnp.asarray([[1, 1, 0, 0, 2, 2, 2]])),
                                [[0, 1, 0, 0, 0, 1, 2]])
  m = segment_mask(seg, seg)
  assert m.shape == (2, 1, ROW, ROW) and not m[0, 0, :, -1].any()  # padding key: never seen
  model, params = _model()
  ids, logits = jnp.asarray(rows["input_ids"]), _jit_logits(model)
  default = logits(params, ids, segment_ids=seg)
  explicit = logits(params, ids, segment_ids=seg, positions=jnp.asarray(rows["positions"]),
                    attention_mask=seg > 0)  # the same mask again: no change
  np.testing.assert_allclose(default, explicit, atol=1e-6, rtol=0)


def test_bad_segment_ids_raise():
  model, params = _model()
  ids = jnp.ones((2, 6), jnp.int32)
  with pytest.raises(ValueError, match=r"segment_ids must be integer \[batch, length\] = "
                                       r"\(2, 6\), got shape \(2, 5\)"):
    model.apply({"params": params}, ids, segment_ids=jnp.ones((2, 5), jnp.int32))
  with pytest.raises(ValueError, match="segment_ids must be integer.*float32"):
    model.apply({"params": params}, ids, segment_ids=jnp.ones((2, 6), jnp.float32))
  cache = init_cache(model.config, 2, 8)
  with pytest.raises(ValueError, match="segment_ids .* not supported with a KV cache"):
    model.apply({"params": params}, ids, segment_ids=jnp.ones((2, 6), jnp.int32), cache=cache,
                method=Llama.forward)


def test_next_token_targets_stop_at_segment_ends():
  ids = jnp.asarray([[1, 2, 3, 4, 5, 0], [6, 7, 8, 9, 10, 11]])
  seg = jnp.asarray([[1, 1, 2, 2, 2, 0], [1, 1, 1, 2, 3, 3]])
  targets, mask = next_token_targets(ids, segment_ids=seg)
  np.testing.assert_array_equal(targets[0], [2, 3, 4, 5, 0, 0])
  np.testing.assert_array_equal(mask, [[1, 0, 1, 1, 0, 0], [1, 1, 0, 0, 1, 0]])
  loss_mask = jnp.asarray([[1, 1, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1]], bool)
  _, mask = next_token_targets(ids, loss_mask, seg)
  np.testing.assert_array_equal(mask, [[1, 0, 1, 1, 0, 0], [1, 1, 0, 0, 1, 0]])
  with pytest.raises(ValueError, match="segment_ids must have the shape of input_ids"):
    next_token_targets(ids, segment_ids=seg[:, :3])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  return write_llava_folder(tmp_path_factory.mktemp("llava") / "folder")


def test_packed_conversation_task(folder):
  c = load_config("tiny", ROOT / "experiments" / "llava_lm.py")
  c.task.folder = str(folder)
  c.task.pack = True
  c.model.seq_len = 512  # two ~220-token samples per row; "too_long" (~750) is still too long
  task = build_task(c)
  spec = task.batch_spec()
  assert spec["segment_ids"] == ((512,), np.int32) and spec["positions"] == ((512,), np.int32)
  data = task.make_data(2, 0, 1)
  batch = next(data)
  assert set(spec) <= set(batch)
  for k, (shape, _) in spec.items():  # the trainer casts to the spec's dtypes
    assert batch[k].shape == (2,) + shape, k
  assert batch["segment_ids"].max() >= 2
  assert ["too_long", "longer than the sequence"] in data.stats()["bad_ids"]

  params = jax.tree_util.tree_map(lambda p: 5 * p, task.init(jax.random.PRNGKey(0)))
  loss, metrics = jax.jit(task.loss)(params, {k: batch[k] for k in spec}, None)
  # The same samples one per row, not packed: the same token-weighted mean.
  seg = batch["segment_ids"]
  where = [(r, seg[r] == s) for r in range(2) for s in range(1, int(seg[r].max()) + 1)]
  ids = [batch["input_ids"][r][at] for r, at in where]
  logits = _separately(task.model, params, ids)
  total, count = 0.0, 0.0
  for (r, at), x, lg in zip(where, ids, logits):
    targets, mask = next_token_targets(jnp.asarray(x)[None],
                                       jnp.asarray(batch["loss_mask"][r][at])[None])
    mean, num = lm_loss(lg[None], targets, mask)
    total, count = total + float(mean) * float(num), count + float(num)
  assert float(metrics["weight"]) == count == batch["loss_mask"].sum()
  np.testing.assert_allclose(float(loss), total / count, atol=1e-5, rtol=0)
  data.close()
