"""Stages (`train.stages`) and the vision-tower pretraining task (`pixelworld_clip`): the quick
PixelWorld config first trains its vision tower contrastively, then VITRON starts from it."""
import os
import sys

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from train_runs import ROOT, run_train

sys.path.insert(0, str(ROOT))
from experiments import pixelworld as EP  # noqa: E402

from vitron_jax.data.pipeline import BadSampleError  # noqa: E402
from vitron_jax.data.pixelworld import PixelWorld  # noqa: E402
from vitron_jax.train.clip_task import (contrastive_loss, dense_loss, patch_box_iou,  # noqa: E402
                                         patch_labels)
from vitron_jax.train.defaults import base_config  # noqa: E402
from vitron_jax.train.stages import init_sources, run_stages  # noqa: E402
from vitron_jax.train.task import build_task  # noqa: E402

CONFIG = str(ROOT / "experiments" / "pixelworld.py") + ":quick_gen"


def _clip_task():
  return build_task(EP.get_config("quick").stages.s1_vision)


def test_contrastive_loss_and_accuracy():
  r = np.random.default_rng(0)
  x = r.normal(size=(8, 16)).astype(np.float32)
  x /= np.linalg.norm(x, axis=-1, keepdims=True)
  good, acc = contrastive_loss(jnp.asarray(x), jnp.asarray(x), jnp.float32(np.log(50.0)))
  bad, acc_bad = contrastive_loss(jnp.asarray(x), jnp.asarray(x[::-1]), jnp.float32(np.log(50.)))
  assert float(acc) == 1.0 and float(acc_bad) < 0.5
  assert float(good) < 0.5 < float(bad)


def test_clip_task_batches_loss_and_components():
  task = _clip_task()
  assert task.vision.image_size == 32
  batch = next(task.make_data(8, 0, 1))
  spec = task.batch_spec()
  assert {k: v.shape[1:] for k, v in batch.items()} == {k: s for k, (s, _) in spec.items()}
  params = flax.linen.meta.unbox(task.init(jax.random.key(0)))
  loss, metrics = jax.jit(task.loss)(params, batch, jax.random.key(1))
  assert np.isfinite(float(loss)) and float(metrics["weight"]) == 8
  # the tower sits where VITRON keeps it, so a VITRON run loads it by path
  assert "vision_tower" in params["frontend"]
  comps = task.components()
  assert set(comps) == {"vision", "text"}
  vit = build_task(EP.get_config("quick"))
  vparams = jax.eval_shape(vit.init, jax.random.key(0))
  ours = jax.tree_util.tree_map(lambda a: a.shape, params["frontend"]["vision_tower"])
  theirs = jax.tree_util.tree_map(lambda a: a.shape,
                                  flax.linen.meta.unbox(vparams)["frontend"]["vision_tower"])
  assert ours == theirs


def test_patch_labels_mark_every_patch_a_box_overlaps():
  objects = [{"colour": "red", "shape": "star", "visible": [True],
              "boxes": [[9.0, 1.0, 17.0, 8.0]]},        # x 9..16, y 1..7: patches (0,1), (0,2)
             {"colour": "blue", "shape": "ring", "visible": [False],
              "boxes": [[0.0, 0.0, 32.0, 32.0]]}]       # not visible: no labels
  lab = patch_labels(objects, 32, 8)
  assert lab["colour"].shape == (16, 8) and lab["shape"].shape == (16, 7)
  assert sorted(np.flatnonzero(lab["colour"].any(-1))) == [1, 2]
  assert lab["colour"][1, 0] == 1 and lab["shape"][2, 3] == 1      # red, star
  assert lab["colour"].sum() == 2 and lab["shape"].sum() == 2
  np.testing.assert_array_equal(np.flatnonzero(lab["box_valid"]), [1, 2])
  np.testing.assert_allclose(lab["box"][1], np.array([9, 1, 17, 8]) / 32)
  assert not lab["box"][0].any()


def test_patch_box_goes_to_the_object_covering_most_of_the_patch():
  objects = [{"colour": "red", "shape": "star", "visible": [True], "boxes": [[0, 0, 2, 2]]},
             {"colour": "blue", "shape": "ring", "visible": [True], "boxes": [[1, 1, 8, 8]]},
             {"colour": "pink", "shape": "cross", "visible": [True], "boxes": [[6, 6, 9, 9]]}]
  lab = patch_labels(objects, 16, 8)
  np.testing.assert_allclose(lab["box"][0], np.array([1, 1, 8, 8]) / 16)   # 49 px of 64
  np.testing.assert_allclose(lab["box"][3], np.array([6, 6, 9, 9]) / 16)   # only the cross
  assert lab["colour"][0].sum() == 3 and lab["box_valid"].tolist() == [1, 1, 1, 1]


def test_dense_loss_is_balanced_and_box_iou_scores_the_boxes():
  lab = patch_labels([{"colour": "red", "shape": "star", "visible": [True],
                       "boxes": [[9.0, 1.0, 17.0, 8.0]]}], 32, 8)
  batch = {f"patch_{k}": jnp.asarray(v)[None] for k, v in lab.items()}
  logit = lambda p: jnp.log(jnp.clip(p, 1e-4, 1 - 1e-4) / (1 - jnp.clip(p, 1e-4, 1 - 1e-4)))
  exact = {k: logit(batch[f"patch_{k}"]) * 10 for k in ("colour", "shape")}
  exact["box"] = logit(batch["patch_box"])
  nothing = {k: jnp.full_like(v, -10.0) for k, v in exact.items()}
  # predicting "nothing anywhere" is right on 254 of 256 labels yet costs as much as
  # being wrong on the two present ones: the loss is a mean over present + a mean over absent
  assert float(dense_loss(exact, batch)) < 0.01 < 10 < float(dense_loss(nothing, batch))
  assert float(patch_box_iou(exact, batch)) > 0.99
  shifted = dict(exact, box=logit(batch["patch_box"] + 4 / 32))
  assert float(patch_box_iou(shifted, batch)) < 0.5


def test_long_caption_is_a_bad_sample():
  task = _clip_task()
  sample = PixelWorld(task.world_config, split="train").sample(0, task="image_caption")
  sample["conversations"][1]["value"] = " ".join(["red"] * 60)
  with pytest.raises(BadSampleError, match="longer than the sequence"):
    task.encoder(sample)


def test_init_sources_parsing():
  c = EP.get_config("quick")
  assert init_sources(c) == []
  c.checkpoint.init_from = "/a/1, /b/2"
  assert init_sources(c) == ["/a/1", "/b/2"]


def _fake_train(order):
  """A train_fn that records (stage workdir, its init_from) and leaves a finished run."""
  def train(sub, where):
    order.append((os.path.basename(where), sub.checkpoint.init_from))
    steps = int(sub.train.steps)
    os.makedirs(os.path.join(where, "checkpoints", str(steps)), exist_ok=True)
    with open(os.path.join(where, "summary.json"), "w", encoding="utf-8") as f:
      f.write(f'{{"final_step": {steps}, "preempted": false}}')
    return {"final_step": steps}
  return train


def _staged(**inputs):
  c = base_config()
  stages = {}
  for name in ("s0_a", "s1_b", "s2_c"):
    s = base_config()
    s.train.steps = 3
    s.checkpoint.init_from_stages = inputs.get(name, "")
    stages[name] = s
  c.stages = ml_collections.ConfigDict(stages)
  return c


def test_a_stage_starts_from_the_stages_it_names(tmp_path):
  c = _staged(s2_c="s0_a, s1_b")
  order = []
  main, summary = run_stages(c, str(tmp_path), _fake_train(order))
  final = {n: str(tmp_path / "stages" / n / "checkpoints" / "3") for n in ("s0_a", "s1_b", "s2_c")}
  assert summary is None
  # s2_c trains after both and starts from their final checkpoints, in the order it names
  assert order == [("s0_a", ""), ("s1_b", ""), ("s2_c", f"{final['s0_a']},{final['s1_b']}")]
  assert main.checkpoint.init_from == ",".join(final[n] for n in ("s0_a", "s1_b", "s2_c"))
  assert c.stages.s2_c.checkpoint.init_from == ""  # the config given is left as it was
  # resumed with its inputs finished, it still gets them
  os.remove(tmp_path / "stages" / "s2_c" / "summary.json")
  order.clear()
  run_stages(c, str(tmp_path), _fake_train(order))
  assert order == [("s2_c", f"{final['s0_a']},{final['s1_b']}")]


def test_chains_of_stages_train_first(tmp_path):
  order = []
  run_stages(_staged(s2_c="s1_b"), str(tmp_path), _fake_train(order))
  assert [n for n, _ in order] == ["s1_b", "s2_c", "s0_a"]


@pytest.mark.parametrize("inputs,match", [({"s1_b": "s2_c"}, r"names \['s2_c'\]"),
                                          ({"s1_b": "s1_b"}, r"names \['s1_b'\]"),
                                          ({"s2_c": "vision"}, r"names \['vision'\]")])
def test_a_stage_starts_only_from_earlier_stages(tmp_path, inputs, match):
  with pytest.raises(ValueError, match=match):
    run_stages(_staged(**inputs), str(tmp_path), _fake_train([]))
  assert not (tmp_path / "stages").exists()  # refused before anything trained


def test_the_grounding_stage_hands_the_main_run_its_llm_and_tower():
  c = EP.get_config("")
  s = c.stages.s2_grounding
  assert s.checkpoint.init_from_stages == "s1_vision" and not s.get("stages")
  assert s.data.sources == (("pixelworld", "ref_box,video_grounding", 1.0),)
  shapes = {}
  for name, cfg in (("stage", s), ("main", c)):
    params = jax.eval_shape(build_task(cfg).init, jax.random.PRNGKey(0))
    shapes[name] = {jax.tree_util.keystr(p): x.shape
                    for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}
  # no backend in its step; everything it trains is the main run's, shape for shape
  assert not any("backends" in k for k in shapes["stage"])
  assert any("llm" in k for k in shapes["stage"]) and any("vision_tower" in k for k in shapes["stage"])
  assert {k: shapes["main"].get(k) for k in shapes["stage"]} == shapes["stage"]


def _vision_params(step_dir, item):
  return _item(step_dir, item)["frontend"]["vision_tower"]


def _item(step_dir, item):
  ck = ocp.StandardCheckpointer()
  tree = ck.restore(os.path.join(step_dir, item))
  ck.close()
  return tree


@pytest.mark.slow
def test_stage_hands_its_vision_tower_to_the_main_run(tmp_path):
  # the stages' fields as test_serve_chat's run has them, so the session's compilation cache
  # gives one run the other's stage programs
  args = ("--config.stages.s1_vision.train.steps=2", "--config.stages.s1_vision.data.global_batch=4",
          "--config.stages.s1_vision.optim.warmup_steps=1",
          "--config.stages.s0_segmenter.train.steps=2",
          "--config.stages.s0_segmenter.data.global_batch=4",
          "--config.stages.s0_segmenter.optim.warmup_steps=1",
          "--config.stages.s0_generator.train.steps=2",
          "--config.stages.s0_generator.data.global_batch=4",
          "--config.stages.s0_generator.optim.warmup_steps=1",
          "--config.stages.s0_generator.model.generator.steps=2",
          "--config.stages.s0_editor.train.steps=2",
          "--config.stages.s0_editor.data.global_batch=4",
          "--config.stages.s0_editor.optim.warmup_steps=1",
          "--config.stages.s0_editor.model.editor.steps=2",
          "--config.train.steps=2", "--config.optim.warmup_steps=1",
          "--config.data.global_batch=4", "--config.train.eval_at_end=False",
          "--config.optim.freeze=('frontend/vision_tower/',)", "--config.log.tensorboard=False")
  proc = run_train(tmp_path, *args, devices=1, config=CONFIG, timeout=1200)
  stage_dir = tmp_path / "stages" / "s1_vision" / "checkpoints" / "2"
  assert stage_dir.is_dir() and (tmp_path / "checkpoints" / "2").is_dir()
  assert f"from {stage_dir}" in proc.stderr
  # frozen in the main run, the tower is exactly the stage's
  a = _vision_params(str(stage_dir), "params_vision")
  b = _vision_params(str(tmp_path / "checkpoints" / "2"), "params_vision")
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  # the backend stages ran first; their backends are in the main run's step, frozen by the task
  for stage, module in (("s0_segmenter", "segment_image"), ("s0_generator", "generate_image"),
                        ("s0_editor", "edit_image")):
    a = _item(str(tmp_path / "stages" / stage / "checkpoints" / "2"), f"params_backend_{module}")
    b = _item(str(tmp_path / "checkpoints" / "2"), f"params_backend_{module}")
    assert len(jax.tree_util.tree_leaves(a)) > 20
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  # a rerun neither trains the finished stages again nor repeats the finished main run
  again = run_train(tmp_path, *args, devices=1, config=CONFIG, timeout=1200)
  assert "stage s1_vision already finished" in again.stderr
  assert "stage s0_segmenter already finished" in again.stderr
  assert "stage s0_generator already finished" in again.stderr
  assert "stage s0_editor already finished" in again.stderr
