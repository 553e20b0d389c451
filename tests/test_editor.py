"""The image editing backend at PixelWorld size (`train.editor`, task pixelworld_editor): the
repaint region from the invocation's boxes, inputs and their errors, batches and padding rows,
edited images that keep the source outside the region exactly, and the edit scores
(`eval.edited`)."""
import sys

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from train_runs import ROOT

sys.path.insert(0, str(ROOT / "experiments"))
import pixelworld as EP  # noqa: E402

from vitron_jax.backends.diffusion import pipelines as P  # noqa: E402
from vitron_jax.data import pipeline  # noqa: E402
from vitron_jax.data.pixelworld import PixelWorld  # noqa: E402
from vitron_jax.eval.edited import edit_scores, label_agreement  # noqa: E402
from vitron_jax.protocol import invocation as I  # noqa: E402
from vitron_jax.train.editor import Editor, edit_region  # noqa: E402
from vitron_jax.train.task import build_task  # noqa: E402


@pytest.fixture(scope="module")
def task():
  return build_task(EP.get_config("editor"))


@pytest.fixture(scope="module")
def edits(task):
  w = PixelWorld(task.world_config, split="train", seed=0)
  return [w.sample(i, task="image_edit") for i in range(60)]


def test_the_region_covers_every_changed_pixel(edits):
  ops = set()
  for s in edits:
    inv = I.find_invocation(s["conversations"][-1]["value"])
    region = edit_region(inv.boxes, 32)
    t = s["targets"]
    assert not (t["mask"] & ~region).any(), s["id"]
    changed = (t["image"] != t["source_image"]).any(-1)
    assert not (changed & ~region).any(), s["id"]
    assert region.sum() < 32 * 32
    ops.add(s["truth"]["op"])
  assert ops == {"recolour", "remove", "add", "move"}
  one = edit_region([(0.25, 0.25, 0.5, 0.5)], 32)  # pixels 8..16, grown by 1
  assert one.sum() == 10 * 10 and one[7, 7] and one[16, 16] and not one[17, 17]
  with pytest.raises(ValueError, match="no box"):
    edit_region([], 32)


def test_inputs_examples_and_their_errors(task, edits):
  e = task.backend
  s = edits[0]
  x = task.encoder(s)
  assert {k: v.shape for k, v in x.items()} == {k: sh for k, (sh, _) in e.spec().items()}
  np.testing.assert_allclose(x["source_images"] * 255, s["targets"]["source_image"], atol=1e-3)
  np.testing.assert_allclose(x["images"] * 255, s["targets"]["image"], atol=1e-3)
  assert set(np.unique(x["pixel_weights"])) == {1.0, e.fields["object_weight"]}
  np.testing.assert_array_equal(x["pixel_weights"] > 1, x["masks"] > 0)
  assert x["command_ids"][0] == e.bos and x["command_ids"][-1] == e.eot
  with pytest.raises(ValueError, match="uint8 \\(32, 32, 3\\)"):
    e.inputs("make it red", ((0, 0, 1, 1),), np.zeros((32, 32, 3), np.float32))
  with pytest.raises(ValueError, match="command .* has 31 tokens.*editor's text encoder"):
    e.inputs(" ".join(["red"] * 31), ((0, 0, 1, 1),), s["targets"]["source_image"])
  caption = PixelWorld(task.world_config, split="train", seed=0).sample(0, task="image_caption")
  with pytest.raises(pipeline.BadSampleError, match="not an edit sample"):
    task.encoder(caption)
  with pytest.raises(ValueError, match="editor config: unknown fields.*max_phrases"):
    Editor({"max_phrases": 4}, 32, e.tokenizer)
  # inpainting: noisy, mask, masked source, whole source; then the layout: command
  # embedding, box union
  assert e.models.unet.config.in_channels == 3 * 48 + 1 + 32 + 16
  n = len(I.find_invocation(s["conversations"][-1]["value"]).boxes)
  np.testing.assert_array_equal(x["phrase_mask"], [1.0] * n + [0.0] * (e.max_boxes - n))
  assert (x["phrase_ids"] == x["command_ids"]).all()
  with pytest.raises(ValueError, match="5 boxes; the editor takes at most max_boxes=4"):
    e.inputs("make it red", ((0, 0, 1, 1),) * 5, s["targets"]["source_image"])
  plain = Editor({**e.fields, "layout": False}, 32, e.tokenizer)
  assert plain.models.unet.config.in_channels == 3 * 48 + 1


def test_loss_padding_rows_and_edits_that_keep_the_rest(task):
  batch = next(task.make_data(4, 0, 1))
  params = flax.linen.meta.unbox(task.init(jax.random.key(0)))
  assert list(params["backends"]) == ["edit_image"]
  assert task.backend.backend.condition_shape == tuple(
      EP.TINY_BACKENDS["edit_image"]["condition_shape"])
  loss, metrics = jax.jit(task.loss)(params, batch, jax.random.key(1))
  assert np.isfinite(float(loss)) and float(metrics["weight"]) == 4
  e = Editor(task.backend.fields, 32, task.backend.tokenizer, training=False)
  p = params["backends"]["edit_image"]

  def weighted(b, w):
    b = dict(b, row_weights=jnp.asarray(w, jnp.float32))
    return float(e.backend.loss(p, e.backend_batch(b), e.condition(p, b["command_ids"]),
                                jax.random.key(2))[0])
  other = dict(batch, images=np.asarray(batch["images"]).copy())
  other["images"][3] = 1.0 - other["images"][3]
  assert weighted(batch, [1, 1, 1, 0]) == pytest.approx(weighted(other, [1, 1, 1, 0]), rel=1e-6)
  assert weighted(batch, [1] * 4) != pytest.approx(weighted(other, [1] * 4))
  # the source masked outside the region is an input: another source changes the loss
  src = dict(batch, source_images=1.0 - np.asarray(batch["source_images"]))
  assert weighted(src, [1] * 4) != pytest.approx(weighted(batch, [1] * 4))
  # ... and, with source_channels, the source inside the region too (a recolour keeps the
  # shape it repaints)
  inside = np.asarray(batch["masks"])[..., None] > 0
  seen = dict(batch, source_images=np.where(inside, 1.0 - np.asarray(batch["source_images"]),
                                            np.asarray(batch["source_images"])))
  assert weighted(seen, [1] * 4) != pytest.approx(weighted(batch, [1] * 4))
  # and so is the layout: the command drawn in the boxes
  moved = dict(batch, boxes=np.asarray(batch["boxes"])[:, :, [1, 0, 3, 2]])
  assert weighted(moved, [1] * 4) != pytest.approx(weighted(batch, [1] * 4))
  # edited images (random UNet): the source outside the region, exactly; repainted inside
  run = {k: batch[k] for k in ("source_images", "masks", "command_ids", "boxes", "phrase_ids",
                               "phrase_mask")}
  out = np.asarray(jax.jit(e.sample_images)(p, run, e.condition(p, run["command_ids"]),
                                            jax.random.key(3)))
  keep = np.asarray(batch["masks"]) == 0
  np.testing.assert_array_equal(out[keep], np.asarray(batch["source_images"])[keep])
  assert np.abs(out - np.asarray(batch["source_images"]))[~keep].mean() > 0.01


def test_edit_scores_of_the_exact_edit_the_source_and_noise(edits):
  rng = np.random.default_rng(0)
  for s in edits[:8]:
    t = s["targets"]
    scores, chance = edit_scores(t["image"], s)
    assert scores == {"edit_right": 1.0, "l1_outside": 0.0}, (s["id"], scores)
    unchanged, _ = edit_scores(t["source_image"], s)
    assert unchanged["edit_right"] == chance["edit_right"] == 0.0 and unchanged["l1_outside"] == 0
    noise = rng.integers(0, 256, t["image"].shape).astype(np.uint8)
    noisy, _ = edit_scores(noise, s)
    assert noisy["edit_right"] == 0.0
    assert noisy["l1_outside"] == pytest.approx(chance["l1_outside"], rel=0.15)
  assert label_agreement(t["image"], t["image"], np.zeros((32, 32), bool)) == 1.0
  caption = {"id": "c", "targets": {"image": t["image"]}}
  with pytest.raises(ValueError, match="not an image edit: targets lack \\['source_image', "
                                       "'mask'\\]"):
    edit_scores(t["image"], caption)
  with pytest.raises(ValueError, match="uint8"):
    edit_scores(t["image"].astype(np.float32), edits[0])


def test_source_channels_follow_the_masked_source(task):
  """`pipelines.inpaint_channels`: [repaint mask, masked source] (Stable Diffusion
  inpainting's 2c + 1), then the whole source with `source_channels`; the UNet's in_channels
  follow."""
  fields = task.backend.fields
  c, k = 3 * 4 ** 2, task.backend._layout_channels()
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.uniform(size=(2, 32, 32, 3)), jnp.float32)
  masks = jnp.zeros((2, 32, 32, 1)).at[:, 8:16, 4:12].set(1.0)
  for on in (True, False):
    e = Editor(dict(fields, source_channels=on), 32, task.backend.tokenizer)
    assert e.models.unet.config.in_channels == (3 if on else 2) * c + 1 + k
    got = np.asarray(P.inpaint_channels(e.models, None, images, masks, None))
    assert got.shape == (2, 8, 8, (2 if on else 1) * c + 1)  # after the noisy latents
    np.testing.assert_array_equal(got[..., 0], np.asarray(masks)[:, ::4, ::4, 0])
    masked = P.space_to_depth((images * 2 - 1) * (1 - masks), 4)
    np.testing.assert_allclose(got[..., 1:c + 1], masked, atol=1e-6)
    if on:
      np.testing.assert_allclose(got[..., c + 1:], P.space_to_depth(images * 2 - 1, 4),
                                 atol=1e-6)
    assert ("whole source" in e.concat_description) == on
