"""The frozen backends inside the VITRON step (`train/vitron_backends.py`: the image segmenter,
generator and editor): per-example fields, the in-jit row group with static shape,
row-weighted losses, gradients reaching the LLM side but never the backends, and their outputs
scored from free-running answers."""
import os
import sys

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import pixelworld as EP  # noqa: E402

from vitron_jax.backends.segmentation.losses import sam_mask_loss  # noqa: E402
from vitron_jax.data.pixelworld import PixelWorld  # noqa: E402
from vitron_jax.eval.answers import primary_metric  # noqa: E402
from vitron_jax.train import optim as O  # noqa: E402
from vitron_jax.protocol import invocation as I  # noqa: E402
from vitron_jax.train.editor import edit_region  # noqa: E402
from vitron_jax.train.task import build_task  # noqa: E402
from vitron_jax.train.edit_attachment import EVAL_ROW as EDIT_ROW  # noqa: E402
from vitron_jax.train.generation_attachment import EVAL_ROW as GEN_ROW  # noqa: E402
from vitron_jax.train.segmentation_attachment import EVAL_ROW, MODULE  # noqa: E402

GEN, EDIT = "generate_image", "edit_image"


def _config(rows=2):
  c = EP.get_config("quick_gen")
  c.task.backend_rows.segment_image = rows
  return c


@pytest.fixture(scope="module")
def task():
  return build_task(_config())


@pytest.fixture(scope="module")
def params(task):
  return flax.linen.meta.unbox(jax.jit(task.init)(jax.random.PRNGKey(0)))


def _samples(task, split="train", n=3):
  w = PixelWorld(task.world_config, split=split, seed=0)
  return [w.sample(i, task="ref_seg") for i in range(n)], w.sample(0, task="image_caption")


def _batch(task, samples):
  ex = [task.example(s) for s in samples]
  return {k: np.stack([e[k] for e in ex]) for k in ex[0]}


def test_examples_carry_segmentation_fields_only_for_segmenting_rows(task):
  seg, cap = _samples(task)
  e, z = task.example(seg[0]), task.example(cap)
  spec = task.batch_spec()
  assert {k: np.shape(v) for k, v in e.items()} == {k: s for k, (s, _) in spec.items()}
  assert e[f"{MODULE}/valid"] == 1 and e[f"{MODULE}/masks"].sum() == seg[0]["targets"][
      "mask"].sum()
  ids = e[f"{MODULE}/command_ids"]
  assert (ids != task.tokenizer.pad_token_id).sum() >= 2
  assert z[f"{MODULE}/valid"] == 0 and all(not np.any(z[k]) for k in z if k.startswith(MODULE))
  assert task.frozen() == (r"^backends/",)
  assert task.components()[f"backend_{MODULE}"] == rf"^backends/{MODULE}/"


def test_row_group_is_static_counts_overflow_and_pads_with_zero_weight(task):
  att = task.backends[MODULE]
  spec = att.batch_spec()
  fields = {k.split("/", 1)[1]: np.zeros((5,) + s, d) for k, (s, d) in spec.items()}
  fields["valid"] = np.float32([0, 1, 0, 1, 1])
  fields["command_ids"][:, 0] = np.arange(5)
  bb, rows, counts = jax.jit(att.gather)(fields)
  assert att.rows == 2 and rows.tolist() == [1, 3]  # the first two; the third is counted
  assert bb["row_weights"].tolist() == [1.0, 1.0] and bb["command_tokens"][:, 0].tolist() == [1, 3]
  assert float(counts[f"backend_rows/{MODULE}/overflow"]) == 1.0
  fields["valid"] = np.float32([0, 0, 0, 1, 0])
  bb, rows, counts = jax.jit(att.gather)(fields)
  assert bb["row_weights"].tolist() == [1.0, 0.0] and rows[0] == 3
  assert float(counts[f"backend_rows/{MODULE}/used"]) == 1.0


def test_mask_loss_row_weights_select_images():
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(2, 1, 1, 8, 8)), jnp.float32)
  iou = jnp.asarray(rng.uniform(size=(2, 1, 1)), jnp.float32)
  targets = jnp.asarray(rng.uniform(size=(2, 8, 8)) > 0.5, jnp.float32)
  first, _ = sam_mask_loss(logits[:1], iou[:1], targets[:1])
  weighted, m = sam_mask_loss(logits, iou, targets, weights=jnp.float32([1, 0]))
  np.testing.assert_allclose(float(weighted), float(first), rtol=1e-6)
  with pytest.raises(ValueError, match="weights must be \\[2\\]"):
    sam_mask_loss(logits, iou, targets, weights=jnp.ones(3))


def test_backend_loss_reaches_the_head_and_the_backend_stays_frozen(task, params):
  seg, cap = _samples(task)
  w = PixelWorld(task.world_config, split="train", seed=0)
  gen, edit = w.sample(0, task="text_to_image"), w.sample(0, task="image_edit")
  batch = _batch(task, [cap, seg[0], gen, seg[1], edit])

  def f(p):
    return task.loss(p, batch, jax.random.PRNGKey(1))
  (loss, m), g = jax.jit(jax.value_and_grad(f, has_aux=True))(params)
  assert float(m[f"backend_rows/{MODULE}/used"]) == 2.0
  assert float(m[f"loss/backend/{MODULE}"]) > 0 and float(m[f"loss/align/{MODULE}"]) > 0
  norm = lambda t: float(sum(jnp.abs(x).sum() for x in jax.tree.leaves(t)))
  assert norm(g["head"][f"projector_{MODULE}"]) > 0 and norm(g["llm"]) > 0
  assert float(m[f"backend_rows/{GEN}/used"]) == 1.0
  assert float(m[f"loss/backend/{GEN}"]) > 0 and float(m[f"loss/align/{GEN}"]) > 0
  assert norm(g["head"][f"projector_{GEN}"]) > 0
  assert float(m[f"backend_rows/{EDIT}/used"]) == 1.0
  assert float(m[f"loss/backend/{EDIT}"]) > 0 and float(m[f"loss/align/{EDIT}"]) > 0
  assert norm(g["head"][f"projector_{EDIT}"]) > 0
  # the backends are in the step (the loss depends on their parameters) ...
  assert norm(g["backends"][MODULE]["sam"]) > 0 and norm(g["backends"][GEN]["unet"]) > 0
  assert norm(g["backends"][EDIT]["unet"]) > 0
  # ... and never trained: the optimizer labels it frozen whatever optim.trainable says
  labeler = O.Labeler(freeze=task.frozen())
  labels = labeler.labels(params)
  flat = flax.traverse_util.flatten_dict(labels, sep="/")
  assert {v for k, v in flat.items() if k.startswith("backends/")} == {"frozen"}
  assert "frozen" not in {v for k, v in flat.items() if k.startswith("head/")}
  # rows that do not segment add nothing to the backend loss
  only_cap = _batch(task, [cap] * 4)
  _, m0 = jax.jit(task.loss)(params, only_cap, jax.random.PRNGKey(1))
  assert float(m0[f"loss/backend/{MODULE}"]) == 0.0
  assert float(m0[f"loss/backend/{GEN}"]) == 0.0
  assert float(m0[f"loss/backend/{EDIT}"]) == 0.0


def test_masks_are_scored_from_free_running_answers(task, params):
  seg, cap = _samples(task, "val", 2)
  samples = seg + [cap]
  expected = [s["conversations"][1]["value"] for s in samples]
  _, signals = task.answer(params, samples, batch_size=4, max_new_tokens=4, with_signals=True)
  att = task.backends[MODULE]
  answers = [expected[0], "I cannot do that.", expected[2]]
  sig = [(np.ones_like(signals[0][0]), np.ones_like(signals[0][1]),
          task.vcfg.head.index(MODULE))] * 3
  rows, made = att.score(task.model, task.model_params(params), params["backends"][MODULE],
                         samples, answers, sig)
  assert [r[0] for r in rows] == [EVAL_ROW, EVAL_ROW]  # the caption sample is not a ref_seg
  assert sorted(made) == [0] and made[0].size == (128, 128)  # the mask tinted on the image
  (_, s0, c0), (_, s1, _) = rows
  assert 0.0 <= s0["mask_iou"] <= 1.0 and 0.0 < c0["mask_iou"] < 1.0
  assert s1 == {"mask_iou": 0.0, "text_mask_iou": 0.0}  # no invocation: nothing to segment


def _made_of_answers(task, params, subtask, module):
  """Two val samples of `subtask` and a caption; answers: the first's expected one, a refusal
  and a caption; signals all valid for `module`."""
  w = PixelWorld(task.world_config, split="val", seed=0)
  samples = [w.sample(i, task=subtask) for i in range(2)] + [w.sample(0, task="image_caption")]
  _, signals = task.answer(params, samples, batch_size=4, max_new_tokens=4, with_signals=True)
  answers = [samples[0]["conversations"][1]["value"], "I cannot do that.", "a caption"]
  sig = [(np.ones_like(signals[0][0]), np.ones_like(signals[0][1]),
          task.vcfg.head.index(module))] * 3
  return samples, answers, sig


def test_generated_images_are_scored_from_free_running_answers(task, params):
  samples, answers, sig = _made_of_answers(task, params, "text_to_image", GEN)
  att = task.backends[GEN]
  images, ok = att.images(task.model, task.model_params(params), params["backends"][GEN],
                          samples, answers, sig)
  assert images.shape == (3, 32, 32, 3) and images.dtype == np.uint8
  assert ok.tolist() == [True, False, False]
  rows, made = att.score(task.model, task.model_params(params), params["backends"][GEN],
                         samples, answers, sig)
  assert [r[0] for r in rows] == [GEN_ROW, GEN_ROW]  # the caption sample does not generate
  assert primary_metric(GEN_ROW) in rows[0][1]
  assert sorted(made) == [0] and made[0].size == (128, 128)  # the generated image
  (_, s0, c0), (_, s1, _) = rows
  assert 0.0 <= s0["colour_right"] <= 1.0 and 0.0 < c0["colour_right"] < 1.0
  assert set(s1.values()) == {0.0}  # no invocation: nothing generated scores nothing


def test_edited_images_are_scored_from_free_running_answers(task, params):
  samples, answers, sig = _made_of_answers(task, params, "image_edit", EDIT)
  att = task.backends[EDIT]
  mp, bp = task.model_params(params), params["backends"][EDIT]
  images, ok = att.images(task.model, mp, bp, samples, answers, sig)
  assert images.shape == (3, 32, 32, 3) and ok.tolist() == [True, False, False]
  # outside the answer's boxes the edited image is the conversation's image, exactly
  inv = I.find_invocation(answers[0])
  keep = ~edit_region(inv.boxes, 32)
  np.testing.assert_array_equal(images[0][keep], samples[0]["images"][0][keep])
  rows, made = att.score(task.model, mp, bp, samples, answers, sig)
  assert [r[0] for r in rows] == [EDIT_ROW, EDIT_ROW]  # the caption sample does not edit
  assert primary_metric(EDIT_ROW) == "edit_right"  # the report's table knows the row
  assert sorted(made) == [0] and made[0].size == (128, 128)
  (_, s0, c0), (_, s1, c1) = rows
  assert s0["edit_right"] in (0.0, 1.0) and 0.0 <= s0["l1_outside"] < c0["l1_outside"]
  # no invocation: nothing edited, nothing right, and no better l1 than a random image's
  assert s1 == {"edit_right": 0.0, "l1_outside": c1["l1_outside"]}


def test_mismatched_backend_configs_are_refused():
  c = _config()
  c.model.segmenter.width = 32
  with pytest.raises(ValueError, match="condition tokens.*model.head.backends"):
    build_task(c)
  c = _config()
  c.task.backend_rows = {"segment_video": 4}
  with pytest.raises(ValueError, match="backend_rows names modules \\['segment_video'\\]"):
    build_task(c)
  c = _config()
  c.model.generator.text_width = 48
  with pytest.raises(ValueError, match="generator gives condition tokens.*model.head.backends"):
    build_task(c)
  c = _config()
  c.model.editor.text_len = 16
  with pytest.raises(ValueError, match="editor gives condition tokens \\(16, 32\\)"):
    build_task(c)
