"""Grounding drawn as UNet input channels (`backends.diffusion.layout`): exact pixel boxes, the
phrase embeddings on the latent grid, and the generator's training and sampling both taking
them."""
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from train_runs import ROOT

sys.path.insert(0, str(ROOT / "experiments"))
import pixelworld as EP  # noqa: E402

from vitron_jax.backends.diffusion import layout as L  # noqa: E402
from vitron_jax.backends.diffusion import pipelines as P  # noqa: E402
from vitron_jax.backends.diffusion.gligen import GligenInputs  # noqa: E402
from vitron_jax.data.pixelworld.sample import box_mask  # noqa: E402
from vitron_jax.train.generator import Generator  # noqa: E402
from vitron_jax.train.task import build_task  # noqa: E402


def test_layout_draws_the_pixel_boxes_and_their_phrases():
  rng = np.random.default_rng(0)
  size, f, d = 32, 4, 5
  # x0 y0 x1 y1 in pixels; box 1 has edges inside cells, the third slot is padding
  px = [np.array([4, 8, 12, 20]), np.array([18, 1, 31, 6]), np.array([0, 0, 32, 32])]
  boxes = jnp.asarray(np.stack(px)[None] / size, jnp.float32)
  emb = jnp.asarray(rng.normal(size=(1, 3, d)), jnp.float32)
  mask = jnp.asarray([[1.0, 1.0, 0.0]])  # the third slot is padding
  cover = np.asarray(L.coverage(boxes, mask, size, size))[0]
  for k in range(2):
    np.testing.assert_array_equal(cover[k], box_mask(px[k], (size, size)))
  assert not cover[2].any()
  out = np.asarray(L.layout_map(GligenInputs(boxes, emb, mask), size, size, f))
  assert out.shape == (1, 8, 8, L.layout_channels(d, f)) == (1, 8, 8, d + 16)
  union = cover[:2].max(0)
  np.testing.assert_array_equal(
      out[..., d:], np.asarray(P.space_to_depth(jnp.asarray(union[None, ..., None]), f)))
  want = np.einsum("nyx,nd->yxd", cover[:2], np.asarray(emb[0, :2]))
  want = want.reshape(8, f, 8, f, d).mean(axis=(1, 3))
  np.testing.assert_allclose(out[0, ..., :d], want, atol=1e-6)
  np.testing.assert_allclose(out[0, 2, 1, :d], emb[0, 0], atol=1e-6)  # a cell inside box 0
  np.testing.assert_allclose(out[0, 0, 4, :d], emb[0, 1] * 6 / 16, atol=1e-6)  # 3 x 2 px
  assert not out[0, 7, 0].any()  # no box there
  with pytest.raises(ValueError, match="multiples of the factor 4"):
    L.layout_map(GligenInputs(boxes, emb, mask), 30, 30, f)


@pytest.fixture(scope="module")
def tokenizer():
  return build_task(EP.get_config("generator")).generator.tokenizer


def test_generator_trains_and_samples_with_the_layout(tokenizer):
  """Closed GLIGEN gates switch the gated attention off, so what the boxes still change goes
  through the layout channels: the loss in training and the image in sampling."""
  fields = dict(EP.TINY_GENERATOR, gate_init=0.0, condition_dropout=0.0, steps=2)
  g = Generator(fields, 32, tokenizer)
  assert g.models.unet.config.in_channels == 48 + 32 + 16
  plain = Generator(dict(fields, layout=False), 32, tokenizer)
  assert plain.models.unet.config.in_channels == 48 and not plain.models.grounding_layout
  params = g.init(jax.random.key(0))
  command = "a red circle and a blue star on a white background"

  def batch(boxes):
    x = g.inputs(command, boxes)
    b = {k: jnp.asarray(v)[None] for k, v in x.items()}
    b["images"] = jnp.full((1, 32, 32, 3), 0.5)
    return b
  here, there = batch(((0.1, 0.1, 0.4, 0.4), (0.5, 0.5, 0.9, 0.9))), batch(
      ((0.5, 0.1, 0.9, 0.4), (0.1, 0.5, 0.4, 0.9)))

  def loss(b):
    return float(g.backend.loss(params, g.backend_batch(b), g.condition(params, b["command_ids"]),
                                jax.random.key(1))[0])

  def image(b):
    return np.asarray(g.sample_images(params, b, g.condition(params, b["command_ids"]),
                                      jax.random.key(2)))
  assert loss(here) != pytest.approx(loss(there), rel=1e-6)
  assert np.abs(image(here) - image(there)).max() > 1e-4
  bad = P.DiffusionModels(unet=plain.models.unet, vae=None, scheduler=plain.models.scheduler,
                          text_encoder=plain.models.text_encoder, pixel_patch=4,
                          grounding_layout=True)
  cond = g.condition(params, here["command_ids"])
  with pytest.raises(ValueError, match="takes 48 input channels, text to image 96"):
    P.text_to_image(bad, plain.init(jax.random.key(0)), cond, noise=jnp.zeros((1, 8, 8, 48)),
                    num_inference_steps=1, grounding=GligenInputs(
                        here["boxes"], jnp.zeros((1, 4, 32)), here["phrase_mask"]))
