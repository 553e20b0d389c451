"""Flax SAM vs transformers `SamModel`: image embeddings, masks and IoU scores for point, box
and mask prompts (multimask on and off) within 1e-4 on two configs; weights round trip through
`save_sam` -> `SamModel.from_pretrained` and `save_pretrained` -> `load_sam`."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import SamModel as HFSamModel

from sam_reference import hf_outputs, state_dict_numpy, tiny_hf_sam
from vitron_jax.backends.segmentation import SamConfig, SamModel
from vitron_jax.convert import WeightsError, WeightsMismatchError
from vitron_jax.convert.sam import load_sam, params_from_hf, save_sam

ATOL = 1e-4


def _prompts(config: SamConfig, batch: int, seed: int):
  r = np.random.default_rng(seed)
  s, lr = config.image_size, config.low_res_size
  points = r.uniform(0, s, (batch, 1, 3, 2)).astype(np.float32)
  labels = np.array([[[1, 0, -1]], [[1, 1, -10]]], np.int64)[:batch]
  x1y1 = r.uniform(0, s / 2, (batch, 1, 2))
  boxes = np.concatenate([x1y1, x1y1 + r.uniform(4, s / 2, (batch, 1, 2))], -1).astype(np.float32)
  masks = r.normal(0, 3, (batch, 1, lr, lr)).astype(np.float32)
  return points, labels, boxes, masks


CASES = {
    "points": dict(input_points=0, input_labels=1),
    "boxes": dict(input_boxes=2),
    "points+boxes": dict(input_points=0, input_labels=1, input_boxes=2),
    "mask": dict(input_masks=3),
    "points+mask": dict(input_points=0, input_labels=1, input_masks=3),
}


def _flax_kwargs(case, prompts):
  a = {k: prompts[i] for k, i in CASES[case].items()}
  return dict(points=a.get("input_points"), labels=a.get("input_labels"),
              boxes=a.get("input_boxes"),
              mask_prompt=None if "input_masks" not in a else a["input_masks"][:, 0])


@pytest.fixture(scope="module",
                params=["A", pytest.param("B", marks=pytest.mark.slow)])
def reference(request):
  hf = tiny_hf_sam(request.param, seed=1 if request.param == "A" else 2)
  config = SamConfig.from_hf_dict(hf.config.to_dict())
  params = params_from_hf(state_dict_numpy(hf), config)
  return hf, config, params


def _flax_all(config, params, pixels, prompts):
  """One jitted function for every prompt case and both multimask settings."""
  model = SamModel(config)

  @jax.jit
  def run(params, pixels, prompts):
    emb = model.apply({"params": params}, pixels, method=SamModel.embed_image)
    out = {"image_embeddings": emb}
    for case in CASES:
      kw = _flax_kwargs(case, prompts)
      for mm in (True, False):
        out[f"{case}|{mm}"] = model.apply({"params": params}, emb, multimask_output=mm,
                                      method=SamModel.decode, **kw)
    return out

  return run(params, pixels, prompts)


def test_parity_with_transformers(reference):
  hf, config, params = reference
  b, s = 2, config.image_size
  pixels = np.random.default_rng(0).normal(size=(b, s, s, 3)).astype(np.float32)
  prompts = _prompts(config, b, seed=3)
  ours = _flax_all(config, params, jnp.asarray(pixels),
                   tuple(jnp.asarray(p) for p in prompts))
  nchw = np.ascontiguousarray(pixels.transpose(0, 3, 1, 2))
  for case, idx in CASES.items():
    kw = {k: prompts[i] for k, i in idx.items()}
    for mm in (True, False):
      ref = hf_outputs(hf, nchw, multimask_output=mm, **kw)
      masks, iou = ours[f"{case}|{mm}"]
      np.testing.assert_allclose(ours["image_embeddings"], ref["image_embeddings"], atol=ATOL,
                                 rtol=0)
      assert masks.shape == ref["pred_masks"].shape, (case, mm)
      assert np.abs(ref["pred_masks"]).max() > 0.1  # not trivially small
      np.testing.assert_allclose(masks, ref["pred_masks"], atol=ATOL, rtol=0,
                                 err_msg=f"{case} multimask={mm}")
      np.testing.assert_allclose(iou, ref["iou_scores"], atol=ATOL, rtol=0,
                                 err_msg=f"{case} multimask={mm}")


def test_export_to_transformers_and_back(reference, tmp_path):
  hf, config, params = reference
  save_sam(SamModel(config), params, tmp_path / "ours")
  reloaded = HFSamModel.from_pretrained(tmp_path / "ours").eval()
  s = config.image_size
  nchw = np.random.default_rng(5).normal(size=(2, 3, s, s)).astype(np.float32)
  points, labels, boxes, masks = _prompts(config, 2, seed=6)
  for kw in (dict(input_points=points, input_labels=labels), dict(input_boxes=boxes),
             dict(input_masks=masks, input_points=points, input_labels=labels)):
    a, b = hf_outputs(hf, nchw, **kw), hf_outputs(reloaded, nchw, **kw)
    for k in a:
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  # And transformers' own save_pretrained folder loads back to the same Flax parameters.
  hf.save_pretrained(tmp_path / "theirs")
  module, loaded = load_sam(tmp_path / "theirs")
  assert module.config == config
  flat_a = jax.tree_util.tree_leaves_with_path(params)
  flat_b = dict(jax.tree_util.tree_leaves_with_path(loaded))
  assert len(flat_a) == len(flat_b)
  for path, leaf in flat_a:
    np.testing.assert_array_equal(np.asarray(leaf), np.asarray(flat_b[path]), err_msg=str(path))
  saved = json.loads((tmp_path / "ours" / "config.json").read_text())
  assert saved["model_type"] == "sam" and saved["vision_config"]["window_size"] == \
      config.vision.window_size


def test_load_reports_every_mismatch(reference, tmp_path):
  hf, config, params = reference
  sd = state_dict_numpy(hf)
  sd.pop("mask_decoder.iou_token.weight")
  sd["vision_encoder.pos_embed"] = sd["vision_encoder.pos_embed"][:, :-1]
  sd["extra.weight"] = np.zeros(3, np.float32)
  with pytest.raises(WeightsMismatchError) as err:
    params_from_hf(sd, config, where="bad checkpoint")
  msg = str(err.value)
  assert "mask_decoder.iou_token.weight" in msg and "extra.weight" in msg
  assert "vision_encoder.pos_embed" in msg and "bad checkpoint" in msg
  # A tied copy that disagrees with the shared Fourier matrix is refused, not ignored.
  sd = state_dict_numpy(hf)
  sd["prompt_encoder.shared_embedding.positional_embedding"] = sd[
      "shared_image_embedding.positional_embedding"] + 1.0
  with pytest.raises(WeightsError, match="shared_embedding"):
    params_from_hf(sd, config)
  # Pickle weights are never loaded.
  (tmp_path / "config.json").write_text(json.dumps(config.to_hf_dict()))
  torch.save({"a": torch.zeros(1)}, tmp_path / "pytorch_model.bin")
  with pytest.raises(WeightsError, match="pickle"):
    load_sam(tmp_path)
