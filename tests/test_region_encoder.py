"""Region inputs (boxes, masks, scribbles -> binary masks) and the region encoder."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vitron_jax.models.region_encoder import RegionEncoder, grid_weights
from vitron_jax.models.region_inputs import (RegionError, mask_box, prepare_image_regions,
                                             prepare_video_regions, region_mask)

H = W = 32
GRID = 4


def _row_sweep(x1, y1, x2, y2):
  """A zig-zag scribble over every pixel row of the box (radius 0.5): fills it exactly."""
  pts = []
  for i, y in enumerate(np.arange(y1, y2) + 0.5):
    a, b = (x1 + 0.5, x2 - 0.5) if i % 2 == 0 else (x2 - 0.5, x1 + 0.5)
    pts += [(a, y), (b, y)]
  return {"scribble": pts, "radius": 0.5}


def _features(rng, layers=2, b=1, s=1, t=1, c=16):
  return tuple(jnp.asarray(rng.normal(size=(b, s, t, GRID, GRID, c)), jnp.float32)
               for _ in range(layers))


def _encoder_and_params(feats, regions, tokens="fused"):
  enc = RegionEncoder(out_features=24, num_layers=len(feats), tokens=tokens)
  args = (feats, regions["masks"], regions["boxes"], regions["frame_valid"], regions["source"],
          regions["valid"])
  params = nn.meta.unbox(enc.init(jax.random.key(0), *args)["params"])
  return enc, params, args


def test_box_mask_and_scribble_give_identical_masks_and_features(rng):
  box = (4, 8, 20, 24)
  as_box = {"box": box}
  as_mask = {"mask": region_mask(as_box, H, W)}
  as_scribble = _row_sweep(*box)
  masks = [region_mask(r, H, W) for r in (as_box, as_mask, as_scribble)]
  assert masks[0].sum() == 16 * 16
  for m in masks[1:]:
    np.testing.assert_array_equal(m, masks[0])
  np.testing.assert_allclose(mask_box(masks[0]), [4 / W, 8 / H, 20 / W, 24 / H])
  regions = prepare_image_regions([[as_box, as_mask, as_scribble]], H, W, max_regions=4)
  feats = _features(rng)
  enc, params, args = _encoder_and_params(feats, regions)
  out = enc.apply({"params": params}, *args)
  assert out.shape == (1, 4, 1, 24)
  np.testing.assert_allclose(out[0, 1], out[0, 0], rtol=0, atol=0)
  np.testing.assert_allclose(out[0, 2], out[0, 0], rtol=0, atol=0)
  # a different box gives different features
  other = prepare_image_regions([[{"box": (0, 0, 8, 8)}]], H, W, max_regions=4)
  out2 = enc.apply({"params": params}, feats, *[other[k] for k in
                                               ("masks", "boxes", "frame_valid", "source",
                                                "valid")])
  assert not np.allclose(out2[0, 0], out[0, 0])


def test_mask_pooling_is_the_area_weighted_mean(rng):
  feats = _features(rng, layers=1)
  box = (0, 0, 16, 8)  # covers patch rows 0 (fully), grid cells (0,0) and (0,1)
  regions = prepare_image_regions([[{"box": box}]], H, W, max_regions=1)
  w = grid_weights(jnp.asarray(regions["masks"]), (GRID, GRID))
  np.testing.assert_allclose(w[0, 0, 0, 0, :2], [1.0, 1.0])
  assert float(w.sum()) == 2.0
  enc, params, args = _encoder_and_params(feats, regions)
  # replace the projection by the identity to read the pooled feature
  p = jax.tree_util.tree_map(lambda x: x, params)
  pooled = np.asarray(feats[0][0, 0, 0, 0, :2].mean(0))
  mean, var = pooled.mean(), pooled.var()
  normed = (pooled - mean) / np.sqrt(var + 1e-5)
  p["layer_proj_0"]["kernel"] = jnp.eye(16, 24)
  p["layer_proj_0"]["bias"] = jnp.zeros(24)
  p["box_encoder"]["fc2"]["kernel"] = jnp.zeros_like(p["box_encoder"]["fc2"]["kernel"])
  out = enc.apply({"params": p}, *args)
  np.testing.assert_allclose(out[0, 0, 0, :16], normed, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("region, match", [
    ({"box": (-1, 0, 8, 8)}, "outside"),
    ({"box": (0, 0, 40, 8)}, "outside"),
    ({"box": (4, 4, 4, 9)}, "zero area"),
    ({"box": (5, 5, 3, 9)}, "zero area"),
    ({"mask": np.zeros((H, W), bool)}, "zero area"),
    ({"mask": np.ones((H, W - 1), bool)}, "shape"),
    ({"mask": np.full((H, W), 0.5)}, "binary"),
    ({"scribble": [(3, 3), (40, 3)]}, "outside"),
    ({"scribble": []}, "non-empty"),
    ({"box": (0, 0, 4, 4), "mask": np.ones((H, W))}, "exactly one"),
    ({"box": (0, 0, float("nan"), 4)}, "finite"),
])
def test_bad_regions_are_rejected_with_their_name(region, match):
  with pytest.raises(RegionError, match=match) as e:
    prepare_image_regions([[{"box": (0, 0, 8, 8)}], [{"box": (0, 0, 8, 8)}, region]], H, W,
                          max_regions=2)
  assert "sample 1 region 1" in str(e.value)


def test_too_many_regions_and_bad_source_and_video_absent_everywhere():
  with pytest.raises(RegionError, match="max_regions"):
    prepare_image_regions([[{"box": (0, 0, 8, 8)}] * 3], H, W, max_regions=2)
  with pytest.raises(RegionError, match="source"):
    prepare_image_regions([[{"box": (0, 0, 8, 8), "source": 2}]], H, W, 1, num_sources=2)
  with pytest.raises(RegionError, match="video region 0 has zero area"):
    prepare_video_regions([[[None, None]]], 2, H, W, max_regions=1)
  with pytest.raises(RegionError, match="frame 1"):
    prepare_video_regions([[[{"box": (0, 0, 8, 8)}, {"box": (0, 0, 0, 8)}]]], 2, H, W, 1)


def test_encoder_rejects_empty_valid_mask_when_concrete(rng):
  feats = _features(rng)
  regions = prepare_image_regions([[{"box": (0, 0, 8, 8)}]], H, W, max_regions=1)
  enc, params, args = _encoder_and_params(feats, regions)
  bad = dict(regions, masks=np.zeros_like(regions["masks"]))
  with pytest.raises(RegionError, match="sample 0 region 0 has zero area"):
    enc.apply({"params": params}, feats, bad["masks"], bad["boxes"], bad["frame_valid"],
              bad["source"], bad["valid"])


def test_several_regions_sources_and_per_frame_video_regions(rng):
  # two images per sample; a region on image 1 reads image 1's features
  feats = _features(rng, layers=2, b=2, s=2)
  regs = [[{"box": (0, 0, 16, 16), "source": 1}, {"box": (8, 8, 24, 24)}],
          [{"box": (0, 0, 16, 16)}]]
  regions = prepare_image_regions(regs, H, W, max_regions=3, num_sources=2)
  enc, params, args = _encoder_and_params(feats, regions, tokens="per_layer")
  out = jax.jit(lambda p, *a: enc.apply({"params": p}, *a))(params, *args)
  assert out.shape == (2, 3, 2, 24)
  swapped = tuple(f[:, ::-1] for f in feats)  # swap the two images of each sample
  regions_src0 = dict(regions, source=np.zeros_like(regions["source"]))
  out_src0 = enc.apply({"params": params}, swapped, regions_src0["masks"], regions["boxes"],
                       regions["frame_valid"], regions_src0["source"], regions["valid"])
  np.testing.assert_allclose(out_src0[0, 0], out[0, 0], rtol=1e-5, atol=1e-5)
  assert not np.allclose(out_src0[0, 1], out[0, 1])  # region 1 was on image 0, now swapped

  # video: the object is present in frames 0 and 2 only; absent frames do not count
  vfeats = _features(rng, layers=2, b=1, s=1, t=3)
  vid = prepare_video_regions([[[{"box": (0, 0, 16, 16)}, None, {"box": (16, 16, 32, 32)}]]],
                              3, H, W, max_regions=1)
  assert vid["frame_valid"].tolist() == [[[True, False, True]]]
  venc, vparams, vargs = _encoder_and_params(vfeats, vid)
  vout = venc.apply({"params": vparams}, *vargs)
  # changing the features of the absent frame changes nothing
  vfeats2 = tuple(f.at[:, :, 1].set(123.0) for f in vfeats)
  np.testing.assert_allclose(venc.apply({"params": vparams}, vfeats2, *vargs[1:]), vout,
                             rtol=1e-6)
  vfeats3 = tuple(f.at[:, :, 2].set(1.0) for f in vfeats)
  assert not np.allclose(venc.apply({"params": vparams}, vfeats3, *vargs[1:]), vout)
