"""Bad inputs to the segmentation backend raise errors that name the input."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vitron_jax.backends.segmentation import (SamConfig, SamModel, SegmentationConfig,
                                              SegmentImageBackend, SegmentVideoBackend)
from vitron_jax.backends.segmentation.config import SamVisionConfig
from vitron_jax.backends.segmentation.tracking import track

CFG = SegmentationConfig(sam=SamConfig.tiny(image_size=32, patch_size=4, hidden=16, width=16),
                         num_signal_tokens=2, text_dim=8, text_heads=2)
IMAGES = np.zeros((1, 48, 40, 3), np.uint8)  # H=48, W=40


@pytest.fixture(scope="module")
def abstract_params():
  return jax.eval_shape(SegmentImageBackend(CFG).init, jax.random.PRNGKey(0))


def test_points_outside_the_image():
  be = SegmentImageBackend(CFG)
  with pytest.raises(ValueError, match=r"points .*outside the image \(width 40, height 48\)"):
    be.preprocess(IMAGES, points=[[[[41.0, 10.0]]]])
  with pytest.raises(ValueError, match="points .*outside the image"):
    be.preprocess(IMAGES, points=[[[[5.0, -0.5]]]])
  with pytest.raises(ValueError, match="points labels must be 1, 0, -1 or -10"):
    be.preprocess(IMAGES, points=[[[[5.0, 5.0]]]], point_labels=[[[2]]])
  # padding points are not checked; in-range points are mapped into the 32-px model frame
  out = be.preprocess(IMAGES, points=[[[[40.0, 48.0], [99.0, 99.0]]]],
                      point_labels=[[[1, -10]]])
  np.testing.assert_allclose(out["points"][0, 0, 0], [27.0, 32.0])  # resized to 32x27


def test_empty_or_inverted_boxes():
  be = SegmentImageBackend(CFG)
  with pytest.raises(ValueError, match=r"boxes \(0, 0\) = .* is empty"):
    be.preprocess(IMAGES, boxes=[[[5.0, 5.0, 5.0, 20.0]]])
  with pytest.raises(ValueError, match=r"boxes \(0, 0\) = .* is inverted"):
    be.preprocess(IMAGES, boxes=[[[20.0, 5.0, 10.0, 20.0]]])
  with pytest.raises(ValueError, match="boxes .*outside the image"):
    be.preprocess(IMAGES, boxes=[[[0.0, 0.0, 41.0, 20.0]]])
  with pytest.raises(ValueError, match=r"boxes must be \[batch, masks, 4\]"):
    be.preprocess(IMAGES, boxes=[[1.0, 2.0, 3.0, 4.0]])


def test_mask_prompt_of_the_wrong_size(abstract_params):
  be = SegmentImageBackend(CFG)
  lr = CFG.sam.low_res_size
  with pytest.raises(ValueError, match=rf"mask_prompt must be low-resolution logits .*\[1, {lr}, "
                     rf"{lr}\].*got shape \(1, 16, 16\)"):
    be.preprocess(IMAGES, mask_prompt=np.zeros((1, 16, 16)))
  with pytest.raises(ValueError, match=r"mask must be \[\.\.\., 48, 40\]"):
    be.preprocess(IMAGES, mask=np.zeros((1, 40, 48), bool))
  # Inside jit the static shape check names it too.
  inputs = {"pixel_values": jnp.zeros((1, 32, 32, 3)), "mask_prompt": jnp.zeros((1, 8, 8))}
  with pytest.raises(ValueError, match="mask_prompt must be low-resolution logits"):
    jax.eval_shape(functools.partial(be.run, rng=None), abstract_params, inputs, None)


def test_video_with_no_frames(abstract_params):
  vb = SegmentVideoBackend(CFG)
  with pytest.raises(ValueError, match="video has no frames"):
    vb.preprocess(np.zeros((1, 0, 48, 40, 3), np.uint8))
  with pytest.raises(ValueError, match="video must be .* at least one frame"):
    jax.eval_shape(functools.partial(vb.run, rng=None), abstract_params,
                   {"pixel_values": jnp.zeros((1, 0, 32, 32, 3))}, None)
  with pytest.raises(ValueError, match="video has no frames"):
    track(SamModel(CFG.sam), abstract_params["sam"], jnp.zeros((1, 0, 32, 32, 3)),
          signal=jnp.zeros((1, 2, 16)))


def test_other_inputs_are_named(abstract_params):
  be = SegmentImageBackend(CFG)
  with pytest.raises(ValueError, match=r"images float values must lie in \[0, 1\]"):
    be.preprocess(np.full((1, 8, 8, 3), 2.0, np.float32))
  with pytest.raises(ValueError, match="images must be channels-last RGB"):
    be.preprocess(np.zeros((1, 3, 8, 8), np.uint8))
  with pytest.raises(ValueError, match=r"condition \(signal prompt tokens\) must be"):
    jax.eval_shape(functools.partial(be.run, rng=None), abstract_params,
                   {"pixel_values": jnp.zeros((1, 32, 32, 3))}, jnp.zeros((1, 2, 5)))
  with pytest.raises(ValueError, match=r"text_embedding must be \[batch, 8\]"):
    jax.eval_shape(be.native_condition, abstract_params, jnp.zeros((1, 7)))
  with pytest.raises(ValueError, match="needs a prompt"):
    jax.eval_shape(functools.partial(be.run, rng=None), abstract_params,
                   {"pixel_values": jnp.zeros((1, 32, 32, 3))}, None)
  with pytest.raises(ValueError, match="token ids but this backend has no text_encoder"):
    jax.eval_shape(be.native_condition, abstract_params, jnp.zeros((1, 4), jnp.int32))
  with pytest.raises(ValueError, match="global_attn_indexes"):
    SamConfig(vision=SamVisionConfig(num_hidden_layers=2, global_attn_indexes=(5,)))
  with pytest.raises(ValueError, match="routing"):
    SegmentationConfig(routing="telepathy")
