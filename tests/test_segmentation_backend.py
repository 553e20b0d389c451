"""The segmentation backends' contract: registry, condition shapes and routing, run outputs at
input resolution, jit-able and shardable loss, and the tracking recurrence (previous mask as
dense prompt, signal prompts every frame, re-detection when the mask vanishes)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from vitron_jax.backends.base import REGISTRY
from vitron_jax.backends.segmentation import (SamConfig, SamModel, SegmentationConfig,
                                              SegmentImageBackend, SegmentVideoBackend)
from vitron_jax.backends.segmentation.losses import (dice_per_mask, mask_iou, sam_mask_loss)
from vitron_jax.backends.segmentation.processing import ImageSizes, mask_to_prompt, masks_to_boxes
from vitron_jax.backends.segmentation.tracking import binary_prompt, dilate, select_best, track
from vitron_jax.nn import partitioning

CFG = SegmentationConfig(sam=SamConfig.tiny(image_size=32, patch_size=4, hidden=16, width=32),
                         num_signal_tokens=2, text_dim=8, text_heads=2)
K, C = 2, 32


@pytest.fixture(scope="module")
def params():
  return jax.jit(SegmentImageBackend(CFG).init)(jax.random.key(0, impl="rbg"))


def test_registry_and_condition_shapes():
  assert isinstance(REGISTRY.create("segment_image", CFG), SegmentImageBackend)
  with pytest.raises(KeyError, match="no backend registered for module 'seg_image'"):
    REGISTRY.create("seg_image", CFG)  # the token's short name is not a module name
  video = REGISTRY.create("segment_video", CFG)
  assert isinstance(video, SegmentVideoBackend) and video.module == "segment_video"
  assert video.condition_shape == (K, C)
  hybrid = SegmentationConfig(sam=CFG.sam, num_signal_tokens=K, routing="hybrid", text_dim=8,
                              text_heads=2)
  assert SegmentImageBackend(hybrid).condition_shape == (2 * K, C)


def test_text_routing_projection(params):
  be = SegmentImageBackend(CFG)
  r = np.random.default_rng(0)
  pooled = jnp.asarray(r.normal(size=(3, 8)), jnp.float32)
  tokens = jnp.asarray(r.normal(size=(3, 5, 8)), jnp.float32)
  valid = jnp.asarray([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], bool)
  assert be.native_condition(params, pooled).shape == (3, K, C)
  a = be.native_condition(params, tokens, valid)
  # Padding tokens (mask False) have no influence on the condition.
  b = be.native_condition(params, jnp.where(valid[..., None], tokens, 100.0), valid)
  assert a.shape == (3, K, C)
  np.testing.assert_allclose(a, b, atol=1e-6)
  assert not np.allclose(a[0], a[1])
  # Hybrid routing: signal tokens then text tokens.
  hybrid = SegmentImageBackend(SegmentationConfig(sam=CFG.sam, num_signal_tokens=K,
                                                  routing="hybrid", text_dim=8, text_heads=2))
  sig = jnp.ones((3, K, C))
  cond = hybrid.make_condition(params, sig, pooled)
  assert cond.shape == (3, 2 * K, C)
  np.testing.assert_allclose(cond[:, :K], sig)
  np.testing.assert_allclose(cond[:, K:], be.native_condition(params, pooled), atol=1e-6)
  with pytest.raises(ValueError, match="needs a text_embedding"):
    hybrid.make_condition(params, sig, None)


def test_run_returns_masks_scores_boxes_at_input_resolution(params):
  be = SegmentImageBackend(CFG)
  r = np.random.default_rng(1)
  images = r.integers(0, 256, (2, 48, 40, 3)).astype(np.uint8)
  inputs = be.preprocess(images, points=[[[[10.0, 12.0]]], [[[30.0, 40.0]]]],
                         boxes=[[[2.0, 3.0, 20.0, 30.0]], [[5.0, 5.0, 39.0, 47.0]]])
  cond = jnp.asarray(r.normal(size=(2, K, C)), jnp.float32)
  out = jax.jit(be.run)(params, inputs, cond, None)
  assert out["masks"].shape == (2, 1, 48, 40) and out["masks"].dtype == bool
  assert out["mask_logits"].shape == (2, 1, 48, 40)
  assert out["scores"].shape == (2, 1) and out["boxes"].shape == (2, 1, 4)
  assert out["low_res_masks"].shape == (2, 1, CFG.sam.low_res_size, CFG.sam.low_res_size)
  masks = np.asarray(out["masks"])
  np.testing.assert_array_equal(masks, np.asarray(out["mask_logits"]) > 0)
  for i in range(2):
    m = masks[i, 0]
    assert bool(out["present"][i, 0]) == m.any()
    if m.any():
      ys, xs = np.nonzero(m)
      np.testing.assert_array_equal(out["boxes"][i, 0], [xs.min(), ys.min(), xs.max() + 1,
                                                         ys.max() + 1])
  # The condition matters: other signal tokens give other masks.
  out2 = jax.jit(be.run)(params, inputs, -cond, None)
  assert not np.allclose(out["mask_logits"], out2["mask_logits"])


def test_masks_to_boxes_and_losses():
  m = np.zeros((2, 6, 7), bool)
  m[0, 1:4, 2:6] = True
  boxes, present = masks_to_boxes(jnp.asarray(m))
  np.testing.assert_array_equal(boxes, [[2, 1, 6, 4], [0, 0, 0, 0]])
  np.testing.assert_array_equal(present, [True, False])
  # Dilation (tracking prompts): a pixel grows into a (2r+1)^2 square, clipped at the border;
  # the numpy prompt builder and the in-graph tracker agree.
  dot = np.zeros((1, 8, 8), bool)
  dot[0, 0, 3] = True
  np.testing.assert_array_equal(dilate(jnp.asarray(dot), 1)[0, :3, 1:6],
                                [[0, 1, 1, 1, 0], [0, 1, 1, 1, 0], [0, 0, 0, 0, 0]])
  sizes = ImageSizes((32, 32), (32, 32), 32)
  full = np.zeros((1, 32, 32), bool)
  full[0, 10:14, 6:9] = True
  np.testing.assert_array_equal(
      mask_to_prompt(full, sizes, CFG.sam, dilation=2),
      binary_prompt(jnp.asarray(mask_to_prompt(full, sizes, CFG.sam)), 0.0, 10.0, 2))
  t = jnp.asarray(m, jnp.float32)
  assert float(dice_per_mask(jnp.where(t > 0, 30.0, -30.0), t)[0]) < 1e-6
  np.testing.assert_allclose(mask_iou(t > 0, t), [1.0, 1.0])
  # Multi-mask: the loss keeps the best of the M masks; the IoU head regresses achieved IoU.
  target = jnp.asarray(m[:1, None, :6, :6], jnp.float32)  # [1, 1, 6, 6]
  good = jnp.where(target > 0, 20.0, -20.0)[:, :, None]
  bad = -good
  logits = jnp.concatenate([bad, good, bad], axis=2)  # [1, 1, 3, 6, 6]
  loss, met = sam_mask_loss(logits, jnp.asarray([[[0.0, 1.0, 0.0]]]), target)
  assert float(met["mask_iou"]) == 1.0 and float(met["iou_mse"]) < 1e-9
  assert float(loss) < 1e-3


@pytest.mark.slow  # two full compiles, one of them SPMD over 8 devices (~70 s on 2 cores)
def test_loss_is_jittable_and_shards(params):
  be = SegmentImageBackend(CFG)
  r = np.random.default_rng(2)
  images = r.integers(0, 256, (8, 32, 32, 3)).astype(np.uint8)
  targets = r.random((8, 32, 32)) > 0.5
  batch = be.preprocess(images, target_masks=targets)
  batch.pop("image_sizes")
  cond = jnp.asarray(r.normal(size=(8, K, C)), jnp.float32)
  loss_fn = jax.jit(jax.value_and_grad(lambda p, b, c: be.loss(p, b, c, None), has_aux=True))
  (loss, met), grads = loss_fn(params, batch, cond)
  assert np.isfinite(float(loss)) and set(met) >= {"bce", "dice", "iou_mse", "mask_iou"}
  assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grads))
  assert float(jnp.abs(grads["sam"]["mask_decoder"]["iou_token"]["weight"]).sum()) > 0
  # Same loss with parameters sharded (fsdp, from their logical axes) and the batch split
  # over 8 devices.
  mesh = partitioning.make_mesh({"data": 2, "fsdp": 4})
  rules = partitioning.rules_for("fsdp")
  abstract = jax.eval_shape(SegmentImageBackend(CFG).init_boxed, jax.random.key(0, impl="rbg"))
  shardings = partitioning.param_shardings(abstract, mesh, rules)
  sharded = jax.tree_util.tree_map(jax.device_put, params, shardings)
  put = lambda x: jax.device_put(x, NamedSharding(mesh, P(("data", "fsdp"))))
  (loss2, _), grads2 = loss_fn(sharded, jax.tree_util.tree_map(put, batch), put(cond))
  np.testing.assert_allclose(float(loss2), float(loss), rtol=1e-5)
  kernel = sharded["sam"]["vision_encoder"]["layers_0"]["mlp"]["lin1"]["kernel"]
  assert tuple(kernel.sharding.spec)[:1] == ("fsdp",) and len(kernel.sharding.device_set) == 8
  for a, b in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(grads2)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-6)


def _video(seed, b=2, t=4, s=32):
  r = np.random.default_rng(seed)
  return r.integers(0, 256, (b, t, s, s, 3)).astype(np.uint8)


def test_tracking_recurrence_and_redetection(params):
  vb = SegmentVideoBackend(CFG)
  sam = SamModel(CFG.sam)
  video = _video(3)
  first = np.zeros((2, 32, 32), bool)
  first[:, 8:20, 10:24] = True
  inputs = vb.preprocess(video, mask=first)
  signal = jnp.asarray(np.random.default_rng(4).normal(size=(2, K, C)), jnp.float32)
  apply = lambda m, *a, **k: sam.apply({"params": params["sam"]}, *a, method=m, **k)

  @jax.jit
  def both(params, pixels, mask_prompt, signal, threshold):
    res = track(sam, params["sam"], pixels, first_mask_prompt=mask_prompt, signal=signal,
                threshold=threshold)
    emb = apply(SamModel.embed_image, pixels.reshape((-1,) + pixels.shape[2:]))
    emb = emb.reshape(pixels.shape[:2] + emb.shape[1:])
    # Manual chain: frame t+1 is prompted by frame t's binarised mask (or nothing if empty).
    m, s = select_best(*apply(SamModel.decode, emb[:, 0], mask_prompt=mask_prompt,
                              extra_tokens=signal, multimask_output=False))
    lows = [m[:, 0]]
    for t in range(1, pixels.shape[1]):
      prev = lows[-1]
      with_mask = select_best(*apply(SamModel.decode, emb[:, t],
                                     mask_prompt=binary_prompt(prev, threshold, 10.0),
                                     extra_tokens=signal, multimask_output=False))[0][:, 0]
      no_mask = select_best(*apply(SamModel.decode, emb[:, t], extra_tokens=signal,
                                   multimask_output=False))[0][:, 0]
      vanished = ~(prev > threshold).any(axis=(-2, -1))
      lows.append(jnp.where(vanished[:, None, None], no_mask, with_mask))
    return res, jnp.stack(lows, 1)

  res, manual = both(params, inputs["pixel_values"], inputs["mask_prompt"], signal,
                     jnp.float32(0.0))
  np.testing.assert_allclose(res["low_res_masks"], manual, atol=1e-5)
  assert res["low_res_masks"].shape == (2, 4, CFG.sam.low_res_size, CFG.sam.low_res_size)
  # A threshold no logit reaches: every mask "vanishes", each later frame is re-detected from
  # the signal prompts alone.
  res, manual = both(params, inputs["pixel_values"], inputs["mask_prompt"], signal,
                     jnp.float32(1e9))
  np.testing.assert_array_equal(res["redetected"], [[False, True, True, True]] * 2)
  np.testing.assert_allclose(res["low_res_masks"], manual, atol=1e-5)


def test_video_run_and_loss(params):
  vb = SegmentVideoBackend(CFG)
  video = _video(5, t=3)
  targets = np.random.default_rng(6).random((2, 3, 32, 32)) > 0.5
  inputs = vb.preprocess(video, mask=targets[:, 0], target_masks=targets)
  signal = jnp.asarray(np.random.default_rng(7).normal(size=(2, K, C)), jnp.float32)
  out = jax.jit(vb.run)(params, inputs, signal, None)
  assert out["masks"].shape == (2, 3, 32, 32) and out["boxes"].shape == (2, 3, 4)
  assert out["scores"].shape == (2, 3) and out["redetected"].shape == (2, 3)
  loss_fn = jax.jit(jax.value_and_grad(lambda p, b, c: vb.loss(p, b, c, None), has_aux=True))
  (loss, met), grads = loss_fn(params, {k: v for k, v in inputs.items() if k != "image_sizes"},
                               signal)
  assert np.isfinite(float(loss)) and 0.0 <= float(met["mask_iou"]) <= 1.0
  assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grads))


def test_video_loss_weighs_padding_clips_out(params):
  """`row_weights` 0 (a padding row of a VITRON batch) takes a clip out of every frame's loss:
  the weighted loss of [clip a, garbage] equals the loss of clip a alone."""
  vb = SegmentVideoBackend(CFG)
  video = _video(8, t=3)
  targets = np.random.default_rng(9).random((2, 3, 32, 32)) > 0.5
  inputs = vb.preprocess(video, boxes=np.array([[[2, 2, 20, 20]], [[0, 0, 31, 31]]], np.float32),
                         target_masks=targets)
  batch = {k: v for k, v in inputs.items() if k != "image_sizes"}
  signal = jnp.asarray(np.random.default_rng(10).normal(size=(2, K, C)), jnp.float32)
  loss = jax.jit(lambda b, c: vb.loss(params, b, c)[0])
  weighted = loss(dict(batch, row_weights=jnp.array([1.0, 0.0])), signal)
  alone = loss({k: v[:1] for k, v in batch.items()}, signal[:1])
  np.testing.assert_allclose(float(weighted), float(alone), rtol=1e-5)
  assert abs(float(loss(batch, signal)) - float(alone)) > 1e-4  # the second clip counts
