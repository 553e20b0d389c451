"""The image generation backend at PixelWorld size (`train.generator`, task pixelworld_generator):
pixel-space latents, invocation inputs, padding rows weighed out of the loss, the stage's
scores of generated images. (The stage's training run is checked by test_quick_run: the quick
job trains it as stage s0_generator.)"""
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
from vitron_jax.data.pixelworld import vocab as V  # noqa: E402
from vitron_jax.eval.generated import generation_scores  # noqa: E402
from vitron_jax.train.generator import Generator, phrases_of  # noqa: E402
from vitron_jax.train.generator_task import requested  # noqa: E402
from vitron_jax.train.task import build_task  # noqa: E402


@pytest.fixture(scope="module")
def task():
  return build_task(EP.get_config("generator"))


@pytest.fixture(scope="module")
def world(task):
  return PixelWorld(task.world_config, split="train", seed=0)


def test_pixel_space_latents_round_trip_exactly():
  x = jnp.asarray(np.random.default_rng(0).random((2, 8, 12, 3)), jnp.float32)
  z = P.space_to_depth(x, 2)
  assert z.shape == (2, 4, 6, 12)
  np.testing.assert_array_equal(np.asarray(z[0, 1, 2, :3]), np.asarray(x[0, 2, 4]))
  np.testing.assert_array_equal(np.asarray(P.depth_to_space(z, 2)), np.asarray(x))
  models = P.DiffusionModels(unet=None, vae=None, scheduler=None, pixel_patch=2)
  assert (models.latent_channels, models.vae_factor) == (12, 2)
  lat = P.encode_images(models, {}, x)
  np.testing.assert_allclose(np.asarray(lat), np.asarray(z) * 2 - 1, atol=1e-7)
  np.testing.assert_allclose(np.asarray(P.decode_latents(models, {}, lat)), np.asarray(x),
                             atol=1e-6)
  with pytest.raises(ValueError, match="pixel_patch"):
    P.DiffusionModels(unet=None, vae=object(), scheduler=None, pixel_patch=2)


def test_invocation_inputs_and_their_errors(task):
  g = task.generator
  assert phrases_of("a large red circle, a small blue star and a ring on a white background",
                    3) == ["a large red circle", "a small blue star", "a ring"]
  with pytest.raises(ValueError, match="names 2 phrases but the invocation has 3 boxes"):
    phrases_of("a red circle and a ring on a grey background", 3)
  x = g.inputs("a red circle and a blue star on a white background",
               ((0.1, 0.1, 0.5, 0.5), (0.5, 0.5, 0.9, 1.2)))
  ids = x["command_ids"]
  assert ids.shape == (g.text_len,) and ids[0] == g.bos and ids[-1] == g.eot
  assert (ids == g.eot).sum() == g.text_len - 1 - 11  # 11 words, then end-of-text padding
  np.testing.assert_array_equal(x["phrase_mask"], [1, 1, 0, 0])
  np.testing.assert_allclose(x["boxes"][1], [0.5, 0.5, 0.9, 1.0])  # clipped to the image
  assert (x["phrase_ids"][2:] == g.eot).all()
  with pytest.raises(ValueError, match="command .* has 31 tokens.*1 to 30"):
    g.inputs(" ".join(["red"] * 31))
  with pytest.raises(ValueError, match="5 boxes; the generator grounds at most max_phrases=4"):
    g.inputs("a ring", ((0, 0, 1, 1),) * 5)
  caption = PixelWorld(task.world_config, split="train", seed=0).sample(0, task="image_caption")
  with pytest.raises(pipeline.BadSampleError, match="not a generation sample"):
    task.encoder(caption)
  with pytest.raises(ValueError, match="unknown fields.*depth"):
    Generator({"depth": 3}, 32, g.tokenizer)
  with pytest.raises(ValueError, match="prediction_type='x_start'"):
    Generator({"prediction": "x_start"}, 32, g.tokenizer)
  with pytest.raises(ValueError, match="min_snr_gamma must be positive"):
    Generator({"min_snr_gamma": -1.0}, 32, g.tokenizer)
  v = Generator({"prediction": "v_prediction", "min_snr_gamma": 5.0}, 32, g.tokenizer)
  assert v.models.scheduler.prediction_type == "v_prediction"
  assert v.backend.config.min_snr_gamma == 5.0 and g.backend.config.min_snr_gamma is None


def test_gligen_gates_start_open(task):
  """Trained from scratch, GLIGEN's zero-initialised gates would never open (gate_init)."""
  def gates(params):
    return {jax.tree_util.keystr(p): float(np.asarray(x))
            for p, x in jax.tree_util.tree_flatten_with_path(flax.linen.meta.unbox(params))[0]
            if "alpha_" in jax.tree_util.keystr(p)}
  opened = gates(task.generator.init(jax.random.key(0)))
  assert len(opened) >= 2 and set(opened.values()) == {1.0}, opened
  closed = Generator({**task.generator.fields, "gate_init": 0.0}, 32, task.generator.tokenizer)
  assert set(gates(closed.init(jax.random.key(0))).values()) == {0.0}


def test_batches_loss_and_padding_rows_weighed_out(task):
  batch = next(task.make_data(4, 0, 1))
  spec = task.batch_spec()
  assert {k: v.shape[1:] for k, v in batch.items()} == {k: s for k, (s, _) in spec.items()}
  params = flax.linen.meta.unbox(task.init(jax.random.key(0)))
  assert list(params["backends"]) == ["generate_image"]
  assert task.generator.backend.condition_shape == tuple(
      EP.TINY_BACKENDS["generate_image"]["condition_shape"])
  loss, metrics = jax.jit(task.loss)(params, batch, jax.random.key(1))
  assert np.isfinite(float(loss)) and float(metrics["weight"]) == 4
  # object pixels (inside the objects' boxes) weigh object_weight, the background 1
  assert set(np.unique(batch["pixel_weights"])) == {1.0, task.generator.fields["object_weight"]}
  g = build_task(EP.get_config("generator")).generator  # no condition dropout below
  g.backend.config = type(g.backend.config)(**{**g.backend.config.__dict__,
                                               "condition_dropout": 0.0})
  p = params["backends"]["generate_image"]

  def weighted(b, w):
    b = dict(b, row_weights=jnp.asarray(w, jnp.float32))
    return float(g.backend.loss(p, g.backend_batch(b), g.condition(p, b["command_ids"]),
                                jax.random.key(2))[0])
  other = dict(batch, images=np.asarray(batch["images"]).copy())
  other["images"][3] = 1.0 - other["images"][3]
  w = [1, 1, 1, 0]
  assert weighted(batch, w) == pytest.approx(weighted(other, w), rel=1e-6)
  assert weighted(batch, [1, 1, 1, 1]) != pytest.approx(weighted(other, [1, 1, 1, 1]))
  flat = dict(batch, pixel_weights=np.ones_like(batch["pixel_weights"]))
  assert weighted(flat, w) != pytest.approx(weighted(batch, w))
  with pytest.raises(ValueError, match="pixel_weights must be \\[4, 32, 32\\]"):
    weighted(dict(batch, pixel_weights=np.ones((4, 16, 16), np.float32)), w)


def test_generation_scores_of_the_true_image_noise_and_wrong_colours(world):
  rng = np.random.default_rng(0)
  grounded = [s for s in (world.sample(i, task="text_to_image") for i in range(40))
              if s["regions"]]
  assert grounded
  for s in grounded[:5]:
    colours, boxes = requested(s)
    scores, chance = generation_scores(s["targets"]["image"], colours, boxes)
    assert scores == {"colour_right": 1.0, "inside_box": 1.0}, (s["id"], scores)
    assert 0 < chance["colour_right"] < 0.2 and 0 < chance["inside_box"] < 1
    noise = rng.integers(0, 256, s["targets"]["image"].shape).astype(np.uint8)
    assert generation_scores(noise, colours, boxes)[0]["inside_box"] == 0.0
    wrong = [V.COLOUR_NAMES[(V.COLOUR_NAMES.index(c) + 1) % len(V.COLOUR_NAMES)]
             for c in colours]
    if not set(wrong) & set(colours):
      assert generation_scores(s["targets"]["image"], wrong, boxes)[0]["colour_right"] == 0.0
  plain = next(s for s in (world.sample(i, task="text_to_image") for i in range(40))
               if not s["regions"])
  colours, boxes = requested(plain)
  assert boxes is None
  assert generation_scores(plain["targets"]["image"], colours, None)[0] == {"colour_right": 1.0}
  with pytest.raises(ValueError, match="2 boxes for 1 requested objects"):
    generation_scores(plain["targets"]["image"], ["red"], [(0, 0, 1, 1)] * 2)
  with pytest.raises(ValueError, match="uint8"):
    generation_scores(plain["targets"]["image"].astype(np.float32), colours, None)
