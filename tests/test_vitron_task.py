"""Task "vitron" on PixelWorld (`train/vitron_task.py`) with the "quick" experiment config."""
import io
import json
import os
import re
import sys

import flax
import jax
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import pixelworld as EP  # noqa: E402

from vitron_jax.data import vitron_examples as VE  # noqa: E402
from vitron_jax.data.pixelworld import IMAGE_TASKS, PixelWorld  # noqa: E402
from vitron_jax.train.checkpoint import split_components  # noqa: E402
from vitron_jax.train.optim import param_paths  # noqa: E402
from vitron_jax.train.task import build_task  # noqa: E402


def _config():
  c = EP.get_config("quick")
  c.data.global_batch = 4
  c.eval.num_samples = 7   # one per trained subtask
  c.eval.batch_size = 8
  c.eval.max_new_tokens = 6
  c.eval.pictures = 1
  return c


@pytest.fixture(scope="module")
def task():
  return build_task(_config())


@pytest.fixture(scope="module")
def params(task):
  return flax.linen.meta.unbox(jax.jit(task.init)(jax.random.PRNGKey(0)))


@pytest.fixture(scope="module")
def grad_fn(task):
  def f(p, batch):
    return task.loss(p, batch, jax.random.PRNGKey(1))
  return jax.jit(jax.value_and_grad(f, has_aux=True))


def test_task_fields(task):
  assert task.name == "vitron"
  assert task.subtasks == EP.QUICK_UNDERSTAND + EP.QUICK_INVOKE
  assert set(task.subtasks) == set(IMAGE_TASKS) - {"grounded_qa"}
  assert task.layout.seq_len == 96 and not task.layout.videos
  assert task.layout.image_size == task.world_config.image_size == 32
  assert task.layout.modules == tuple(EP.IMAGE_MODULES)


def test_batch_spec_matches_data(task):
  spec = task.batch_spec()
  it = task.make_data(4, 0, 1)
  for _ in range(2):
    batch = next(it)
    assert set(batch) == set(spec)
    for k, (shape, dtype) in spec.items():
      assert batch[k].shape == (4,) + tuple(shape), k
      assert batch[k].dtype == np.dtype(dtype), k
  assert spec["input_ids"] == ((96,), np.dtype(np.int32))
  assert "videos" not in spec


def test_data_has_no_unknown_or_split_protocol_tokens(task):
  """Every PixelWorld word is known, also when grain encodes in many threads at once."""
  it = task.make_data(16, 0, 1)
  for _ in range(3):
    ids = next(it)["input_ids"]
    assert not (ids == task.tokenizer.unk_token_id).any()


def test_host_sharding_partitions_the_global_batch(task):
  whole, a, b = (task.make_data(4, i, n) for i, n in ((0, 1), (0, 2), (1, 2)))
  for _ in range(2):
    w, x, y = next(whole), next(a), next(b)
    assert x["input_ids"].shape[0] == y["input_ids"].shape[0] == 2
    np.testing.assert_array_equal(np.concatenate([x["input_ids"], y["input_ids"]]),
                                  w["input_ids"])
    np.testing.assert_array_equal(np.concatenate([x["images"], y["images"]]), w["images"])
  assert not np.array_equal(next(whole)["input_ids"], w["input_ids"])  # it moves on


def test_loss_on_a_data_batch_is_finite(task, params, grad_fn):
  batch = next(task.make_data(4, 0, 1))
  (loss, metrics), grads = grad_fn(params, batch)
  assert np.isfinite(float(loss)) and float(loss) > 0
  assert float(metrics["weight"]) == float(batch["loss_mask"].sum())
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree_util.tree_leaves(grads))


def _grad_norms(grads):
  flat = flax.traverse_util.flatten_dict(grads, sep="/")
  return {k: float(np.abs(np.asarray(v)).sum()) for k, v in flat.items()}


def test_gradients_reach_llm_head_and_frontend(task, params, grad_fn):
  world = PixelWorld(task.world_config, split="train", seed=0)
  samples = [world.sample(0, task=t) for t in ("region_caption", "ref_seg", "text_to_image",
                                                "image_edit")]
  batch = VE.stack([task.example(s) for s in samples])
  assert batch["image_regions/valid"].any() and set(batch["module_ids"]) == {-1, 0, 1, 2}
  (loss, _), grads = grad_fn(params, batch)
  assert np.isfinite(float(loss))
  norms = _grad_norms(grads)
  assert all(np.isfinite(v) for v in norms.values())

  def total(prefix):
    hits = [v for k, v in norms.items() if k.startswith(prefix)]
    assert hits, f"no parameters under {prefix}"
    return sum(hits)

  for prefix in ("llm/embed_tokens", "llm/layers", "llm/lm_head", "frontend/mm_projector",
                 "frontend/region_encoder", "frontend/vision_tower", "head/"):
    assert total(prefix) > 0, f"no gradient for {prefix}"
  for m in EP.IMAGE_MODULES:  # every invoked module's query bank
    assert total(f"head/queries_{m}") > 0, m


def test_components_cover_every_parameter_once(task, params):
  comps = task.components()
  paths = param_paths(params)
  assert len(paths) > 50 and all("/" in p for p in paths)
  pats = {k: re.compile(v) for k, v in comps.items()}
  used = set()
  for p in paths:
    hits = [k for k, rx in pats.items() if rx.search(p)]
    assert len(hits) == 1, (p, hits)
    used.add(hits[0])
  assert used == {"llm", "vision", "frontend", "head", "discriminator",
                  "backend_segment_image"}
  parts = split_components(params, comps)  # what the checkpointer does
  assert sum(len(param_paths(v)) for v in parts.values()) == len(paths)


def test_evaluate_scores_writes_answers_and_pictures(task, params, tmp_path):
  assert task.eval_splits() == ("val", "heldout")   # the quick config's: val first
  metrics = task.evaluate(params, step=0, workdir=str(tmp_path))
  for pre in ("", "heldout/"):
    for sub in task.subtasks:
      assert f"{pre}{sub}/primary" in metrics and f"{pre}{sub}/chance" in metrics, sub
      assert 0.0 <= metrics[f"{pre}{sub}/primary"] <= 1.0
      assert 0.0 < metrics[f"{pre}{sub}/chance"] < 1.0
      assert metrics[f"{pre}{sub}/n"] == 1.0
    assert metrics[f"{pre}eval_skipped"] == 0.0
    assert metrics[f"{pre}beats_chance_all"] in (0.0, 1.0)

  path = tmp_path / "eval" / "answers_00000000.jsonl"
  lines = [json.loads(x) for x in path.read_text().splitlines()]
  samples = task.eval_samples("val") + task.eval_samples("heldout")
  assert [x["id"] for x in task.eval_samples()] == [x["id"] for x in samples[:len(lines) // 2]]
  assert len(lines) == len(samples) == 2 * len(task.subtasks)
  for line, s in zip(lines, samples):
    assert line["id"] == s["id"] and line["subtask"] == s["subtask"]
    assert line["expected"] == s["conversations"][1]["value"]
    assert isinstance(line["answer"], str)
    assert line["split"] in line["id"]
  assert [x["split"] for x in lines] == ["val"] * len(task.subtasks) + ["heldout"] * len(
      task.subtasks)
  assert not list((tmp_path / "eval").glob("*.tmp"))
  assert task.grammar is not None  # answers decode under the invocation grammar by default

  report = (tmp_path / "report.md").read_text()
  assert "decoded under the invocation grammar" in report
  val, held = report.split("## `heldout` split")
  assert "## `val` split" in val
  for part, pre in ((val, ""), (held, "heldout/")):
    for sub in task.subtasks:
      row = next(x for x in part.splitlines() if x.startswith(f"| {sub} |"))
      assert (f"| {metrics[f'{pre}{sub}/primary']:.3f} | {metrics[f'{pre}{sub}/chance']:.3f} |"
              in row), row
  for tag in metrics["pictures"]:
    name = tag.replace("/", "_") + ".png"
    assert f"(report/{name})" in report and (tmp_path / "report" / name).is_file()

  from PIL import Image  # pylint: disable=import-outside-toplevel
  pics = metrics["pictures"]
  assert set(pics) == ({f"answers/{s}/0" for s in task.subtasks}
                       | {f"answers/heldout/{s}/0" for s in task.subtasks})
  for tag, (png, h, w) in pics.items():
    assert png[:8] == b"\x89PNG\r\n\x1a\n", tag
    im = Image.open(io.BytesIO(png))
    im.load()
    assert (im.height, im.width) == (h, w) and h > 0 and w > 0, tag


def test_eval_split_names_are_checked():
  c = _config()
  c.eval.split = "val,nope"
  with pytest.raises(ValueError, match="nope"):
    build_task(c).eval_splits()
  c.eval.split = "val,val"
  with pytest.raises(ValueError, match="distinct"):
    build_task(c).eval_splits()


def test_the_invocation_grammar_is_configured_by_the_task():
  c = _config()
  assert build_task(c).grammar.max_boxes == 6   # the PixelWorld configs: 3 objects x 2 frames
  c.task.constrained_decoding = False
  assert build_task(c).grammar is None
  c.task.constrained_decoding = True
  c.task.max_invocation_boxes = 0
  with pytest.raises(ValueError, match="max_boxes"):
    build_task(c)


def test_image_size_mismatch_is_refused():
  c = _config()
  c.data.pixelworld.image_size = 64
  with pytest.raises(ValueError, match=r"image_size=64.*image_size=32"):
    build_task(c)
  c = _config()
  c.data.sources = (("bogus", None, 1.0),)
  with pytest.raises(ValueError, match="kind must be one of"):
    build_task(c)
