"""The generic grain pipeline: per-host block sharding (the global batch does not depend on
the number of hosts), weighted mixtures, packing, worker processes, exact state restore."""
import json

import grain.python as grain
import numpy as np
import pytest
from absl import flags

from vitron_jax.data import pipeline
from vitron_jax.train.lm_task import SyntheticSequences


def _ids(n=10_000):
  return grain.MapDataset.range(n).map(lambda i: {"id": str(i), "x": np.int64(i)})


def test_host_shards_reassemble_the_global_batch():
  one = pipeline.make_pipeline([_ids()], global_batch=8, shuffle=True, seed=3)
  hosts = [pipeline.make_pipeline([_ids()], global_batch=8, process_index=h, process_count=4,
                                  shuffle=True, seed=3) for h in range(4)]
  for _ in range(5):
    want = next(one)["x"]
    got = np.concatenate([next(h)["x"] for h in hosts])
    np.testing.assert_array_equal(got, want)
  assert len(set(want)) == 8
  with pytest.raises(ValueError, match="not divisible"):
    pipeline.HostShard(_ids(), 8, 0, 3)


def test_mixture_follows_the_weights():
  a = grain.MapDataset.range(1000).map(lambda i: {"src": np.int32(0)})
  b = grain.MapDataset.range(1000).map(lambda i: {"src": np.int32(1)})
  it = pipeline.make_pipeline([a, b], weights=[3.0, 1.0], global_batch=100)
  src = np.concatenate([next(it)["src"] for _ in range(4)])
  assert abs(np.mean(src == 0) - 0.75) < 0.02
  with pytest.raises(ValueError, match="2 datasets"):
    pipeline.mixture([a, b], [1.0])


def test_packing_first_fit_with_segments():
  pending = [{"input_ids": [1, 2, 3], "loss_mask": [0, 1, 1]},
             {"input_ids": [4, 5, 6, 7, 8], "loss_mask": [0, 0, 1, 1, 1]},
             {"input_ids": [9, 10], "loss_mask": [1, 1]},
             {"input_ids": [11, 12, 13, 14, 15, 16], "loss_mask": [1] * 6}]
  rows, left = pipeline.pack_rows(pending, 2, 6, ("input_ids", "loss_mask"))
  np.testing.assert_array_equal(rows["input_ids"], [[1, 2, 3, 9, 10, 0], [4, 5, 6, 7, 8, 0]])
  np.testing.assert_array_equal(rows["segment_ids"], [[1, 1, 1, 2, 2, 0], [1, 1, 1, 1, 1, 0]])
  np.testing.assert_array_equal(rows["positions"], [[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 4, 0]])
  assert rows["attention_mask"].sum() == 10
  assert left == [pending[3]]


def test_packed_batches_and_state():
  src = grain.MapDataset.source(SyntheticSequences(50, 7, seed=1)).map(
      lambda s: {"id": s["id"], "input_ids": s["tokens"][: 3 + int(s["tokens"][0]) % 5],
                 "loss_mask": np.ones(3 + int(s["tokens"][0]) % 5, bool)})
  it = pipeline.make_pipeline([src], global_batch=4, shuffle=False, pack_length=16)
  b = next(it)
  assert b["input_ids"].shape == b["segment_ids"].shape == (4, 16)
  assert b["segment_ids"].max() >= 2
  state = json.loads(json.dumps(it.get_state()))
  want = next(it)
  it2 = pipeline.make_pipeline([src], global_batch=4, shuffle=False, pack_length=16)
  it2.set_state(state)
  got = next(it2)
  for k in want:
    np.testing.assert_array_equal(got[k], want[k])


class _Tokens:  # picklable per-sample transform for worker processes
  def __call__(self, s):
    if s["id"].endswith("/5"):
      raise pipeline.BadSampleError(s["id"], "test reason")
    return {"id": s["id"], "tokens": s["tokens"]}


def test_worker_processes_give_the_same_batches():
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  src = grain.MapDataset.source(SyntheticSequences(50, 5, seed=2))
  kw = dict(global_batch=4, shuffle=False, transforms=[_Tokens()])
  inproc = pipeline.make_pipeline([src], **kw)
  workers = pipeline.make_pipeline([src], num_workers=2, **kw)
  try:
    for _ in range(3):
      np.testing.assert_array_equal(next(workers)["tokens"], next(inproc)["tokens"])
    assert workers.stats()["bad_ids"] == [["synthetic/2/5", "test reason"]]
  finally:
    workers.close()
