"""Checkpoints: one item per component, restore into another mesh and keep training with the
same loss, corrupt/truncated latest checkpoint -> reported and the previous one used,
mismatched checkpoints -> one error naming every problem."""
import os
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from train_runs import load_config
from vitron_jax.nn import partitioning as PT
from vitron_jax.train import checkpoint as C
from vitron_jax.train import state as S
from vitron_jax.train.loop import build, train


def _config(steps, **mesh):
  c = load_config()
  c.train.steps = steps
  c.checkpoint.every_steps = 2
  c.log.tensorboard = False
  c.log.png = False
  if mesh:
    c.mesh.shape = dict(mesh.get("shape", {"data": -1}))
    c.mesh.rules = mesh.get("rules", "data")
    c.mesh.num_devices = mesh.get("num_devices", -1)
  return c


def _losses(workdir):
  import json
  rows = [json.loads(l) for l in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]
  return {r["step"]: r["loss"] for r in rows if r["kind"] == "train"}


def test_restore_into_other_meshes_continues_with_the_same_loss(tmp_path):
  base = tmp_path / "data8"
  train(_config(4, shape={"data": 8}), str(base))
  items = set(os.listdir(base / "checkpoints" / "4"))
  assert {"params_llm", "opt_state", "train", "data", "config", "meta"} <= items
  runs = {"data8": ({"data": 8}, "data", -1), "fsdp4_tensor2": ({"fsdp": 4, "tensor": 2},
                                                                 "fsdp_tensor", -1),
          "one_device": ({"data": 1}, "data", 1)}
  got = {}
  for name, (shape, rules, n) in runs.items():
    d = tmp_path / f"cont_{name}"
    shutil.copytree(base, d)
    summary = train(_config(6, shape=shape, rules=rules, num_devices=n), str(d))
    assert summary["start_step"] == 4 and summary["final_step"] == 6
    got[name] = _losses(d)
    assert sorted(got[name]) == list(range(1, 7))  # history up to 4 kept, 5..6 appended
  for name in ("fsdp4_tensor2", "one_device"):
    for step in (5, 6):
      assert got[name][step] == pytest.approx(got["data8"][step], rel=1e-5, abs=1e-6), name


def _small_state(hidden=32):
  c = load_config()
  c.model.hidden_size = hidden
  task, tx, _, _ = build(c)
  mesh = PT.make_mesh({"data": 1}, jax.devices()[:1])
  abstract, shardings = S.state_shardings(task.init, tx, mesh, PT.rules_for("data"), 0)
  return task, abstract, S.init_state(task.init, tx, shardings, 0)


def test_corrupt_latest_is_reported_and_the_previous_used(tmp_path, caplog):
  task, abstract, state = _small_state()
  ck = C.Checkpointer(str(tmp_path / "ck"), task.components(), keep=5, async_save=True)
  for step in (2, 4):
    st = state.replace(step=state.step + step,
                       params=jax.tree_util.tree_map(lambda x, s=step: x * s, state.params))
    ck.save(st, {"next": step})
  ck.close()
  # truncate every array file of the newest checkpoint's parameters
  for f in (tmp_path / "ck" / "4" / "params_llm").rglob("*"):
    if f.is_file() and f.parent.name == "d":
      f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
  ck = C.Checkpointer(str(tmp_path / "ck"), task.components())
  with caplog.at_level("ERROR"):
    restored, data, step = ck.restore_latest(abstract)
  assert step == 2 and data == {"next": 2}
  assert len(ck.corrupt) == 1 and str(tmp_path / "ck" / "4") in ck.corrupt[0]
  assert any(str(tmp_path / "ck" / "4") in r.getMessage() for r in caplog.records)
  assert (tmp_path / "ck" / "4.corrupt").is_dir() and ck.all_steps() == [2]
  want = jax.tree_util.tree_leaves(jax.device_get(state.params))
  for a, b in zip(jax.tree_util.tree_leaves(jax.device_get(restored.params)), want):
    assert np.array_equal(a, b * 2)
  ck.close()


def test_unfinished_save_is_ignored_and_nothing_readable_raises(tmp_path):
  task, abstract, state = _small_state()
  ck = C.Checkpointer(str(tmp_path / "ck"), task.components(), async_save=False)
  ck.save(state.replace(step=state.step + 3), {"n": 3})
  ck.close()
  (tmp_path / "ck" / "6.orbax-checkpoint-tmp").mkdir()  # a save killed half-way
  ck = C.Checkpointer(str(tmp_path / "ck"), task.components())
  assert ck.restore_latest(abstract)[2] == 3
  ck.close()
  shutil.rmtree(tmp_path / "ck" / "3" / "opt_state")
  ck = C.Checkpointer(str(tmp_path / "ck"), task.components())
  with pytest.raises(C.NoUsableCheckpointError, match="3"):
    ck.restore_latest(abstract)


def test_checkpoint_of_another_model_names_the_problems(tmp_path):
  task, _, state = _small_state(hidden=32)
  ck = C.Checkpointer(str(tmp_path / "ck"), task.components(), async_save=False)
  ck.save(state.replace(step=state.step + 1), {})
  ck.close()
  _, other, _ = _small_state(hidden=64)
  ck = C.Checkpointer(str(tmp_path / "ck"), task.components())
  with pytest.raises(C.CheckpointMismatchError,
                     match=r"params_llm: embed_tokens/embedding has shape \(32, 32\), expected "
                           r"\(32, 64\)"):
    ck.restore_latest(other)
  assert ck.all_steps() == [1]  # a mismatch is not corruption: nothing set aside


def test_components_split_and_join():
  params = {"llm": {"w": np.ones(2)}, "vision": {"w": np.zeros(3)}, "head": {"b": np.ones(1)}}
  parts = C.split_components(params, {"llm": "^llm/", "vision": "^vision/", "heads": "^head"})
  assert parts["vision"] == {"vision": {"w": params["vision"]["w"]}}
  assert C.join_components(parts).keys() == params.keys()
  with pytest.raises(ValueError, match=r"'head/b' matches components \[\]"):
    C.split_components(params, {"llm": "^llm/", "vision": "^vision/"})
  with pytest.raises(ValueError, match=r"'llm/w' matches components \['a', 'b'\]"):
    C.split_components(params, {"a": "llm", "b": "w$"})


@pytest.mark.slow
def test_init_from_another_run_with_lora(tmp_path):
  """Phase chaining: a LoRA run starts from a plain run's checkpoint (paths gain 'model/')."""
  c = _config(2, shape={"data": 1}, num_devices=1)
  train(c, str(tmp_path / "a"))
  ck = C.Checkpointer(str(tmp_path / "a" / "checkpoints"), {"llm": ".*"})
  task, _, _, _ = build(c)
  mesh = PT.make_mesh({"data": 1}, jax.devices()[:1])
  abstract, _ = S.state_shardings(task.init, build(c)[1], mesh, PT.rules_for("data"), 0)
  saved, _ = ck.restore_step(2, abstract)
  ck.close()
  c2 = _config(1, shape={"data": 1}, num_devices=1)
  c2.lora.enabled = True
  c2.checkpoint.init_from = str(tmp_path / "a" / "checkpoints" / "2")
  c2.train.eval_at_end = False
  from vitron_jax.train import loop
  task2, tx2, _, _ = loop.build(c2)
  abstract2, _ = S.state_shardings(task2.init, tx2, mesh, PT.rules_for("data"), 0)
  loaded, paths = C.load_params(c2.checkpoint.init_from, abstract2.params, task2.components())
  assert paths and all(p.startswith("model/") for p in paths)
  assert loaded["lora"]["layers|self_attn|q_proj|kernel"]["lora_a"] is None
  np.testing.assert_array_equal(np.asarray(loaded["model"]["norm"]["weight"]),
                                np.asarray(saved.params["norm"]["weight"]))
  summary = train(c2, str(tmp_path / "b"))
  assert summary["final_step"] == 1
  # LoRA B starts at 0, so step 1 of run b is the loaded model's loss on the first batch
  batch = next(task.make_data(8, 0, 1))
  want = float(jax.jit(lambda p: task.loss(p, batch, None)[0])(saved.params))
  assert _losses(tmp_path / "b")[1] == pytest.approx(want, rel=1e-6)
  bad = _config(1, shape={"data": 1}, num_devices=1)
  bad.model.hidden_size = 64
  bad.checkpoint.init_from = c2.checkpoint.init_from
  with pytest.raises(C.CheckpointMismatchError, match="has shape"):
    train(bad, str(tmp_path / "c"))
