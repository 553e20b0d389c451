"""Tracking a moving object through synthetic videos from a first-frame ground-truth mask with
a tiny segmenter trained in the test (mask prompts only: the previous frame's mask, dilated,
is the next frame's dense prompt)."""
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from segmentation_scenes import moving_object_video, tracking_pairs
from vitron_jax.backends.segmentation import (SamConfig, SegmentationConfig, SegmentImageBackend,
                                              SegmentVideoBackend)
from vitron_jax.backends.segmentation.losses import mask_iou
from vitron_jax.backends.segmentation.processing import mask_to_prompt

SIZE, DILATION = 64, 2
STEPS, BATCH = 400, 16


@pytest.mark.slow
def test_tracking_keeps_the_object():
  t0 = time.time()
  cfg = SegmentationConfig(sam=SamConfig.tiny(image_size=SIZE, patch_size=8),
                           prompt_dilation=DILATION)
  image, video = SegmentImageBackend(cfg), SegmentVideoBackend(cfg)
  # Training pairs: the object's mask at a previous position (shifted, resized) is the prompt,
  # its current mask the target; another object and a distractor share the scene.
  images, prompts, targets, _ = tracking_pairs(np.random.default_rng(0), 2048, SIZE,
                                               max_shift=5.0, twin=False)
  train = image.preprocess(images, target_masks=targets)
  train["mask_prompt"] = jnp.asarray(mask_to_prompt(prompts, train["image_sizes"], cfg.sam,
                                                    dilation=DILATION))
  params = jax.jit(image.init)(jax.random.key(0, impl="rbg"))
  opt = optax.adam(optax.warmup_cosine_decay_schedule(0.0, 3e-3, 30, STEPS, 1e-4))
  state = opt.init(params)

  @jax.jit
  def step(params, state, pixels, mask_prompt, masks):
    def loss_fn(p):
      return image.loss(p, {"pixel_values": pixels, "mask_prompt": mask_prompt, "masks": masks},
                        None)
    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state, metrics

  order = np.random.default_rng(1)
  for _ in range(STEPS):
    idx = order.integers(0, len(images), BATCH)
    params, state, metrics = step(params, state, train["pixel_values"][idx],
                                  train["mask_prompt"][idx], train["masks"][idx])

  # Held-out videos: 12 frames, 3 px/frame, tracked from the first frame's true mask.
  clips = [moving_object_video(np.random.default_rng(100 + i), 12, SIZE, twin=False)
           for i in range(8)]
  frames = np.stack([c[0] for c in clips])
  truth = np.stack([c[1] for c in clips])
  inputs = video.preprocess(frames, mask=truth[:, 0])
  out = jax.jit(video.run)(params, inputs, None, None)
  assert out["masks"].shape == truth.shape
  iou = np.asarray(mask_iou(out["masks"], truth))  # [videos, frames]
  print(f"\ntracking mask IoU per frame {np.round(iou.mean(0), 2)}; mean {iou.mean():.3f} "
        f"(last train loss {float(metrics['loss']):.3f}, {time.time() - t0:.0f}s)")
  assert iou.mean() >= 0.8, iou.mean(0)
  assert not np.asarray(out["redetected"]).any()  # the object never got lost
  # Boxes follow the masks frame by frame.
  ys, xs = np.nonzero(np.asarray(out["masks"][0, -1]))
  np.testing.assert_array_equal(out["boxes"][0, -1], [xs.min(), ys.min(), xs.max() + 1,
                                                      ys.max() + 1])
