"""Task pixelworld_segmenter: the segmentation backend pretrained on PixelWorld (box prompt ->
the object's exact mask) under VITRON's parameter path; trained by `vitron-train` as the
pixelworld config's stage it must segment held-out objects better than their boxes do."""
import json
import sys

import flax
import jax
import numpy as np
import pytest

from train_runs import ROOT, run_train

sys.path.insert(0, str(ROOT / "experiments"))
import pixelworld as EP  # noqa: E402

from vitron_jax.data import pipeline  # noqa: E402
from vitron_jax.data.pixelworld import PixelWorld  # noqa: E402
from vitron_jax.train.segmenter_task import mask_iou_np, segmentation_config  # noqa: E402
from vitron_jax.train.task import build_task  # noqa: E402

CONFIG = str(ROOT / "experiments" / "pixelworld.py") + ":segmenter"


def _task():
  return build_task(EP.segmenter_stage(EP.get_config("quick"), True))


def test_batches_loss_components_and_condition_shape():
  task = _task()
  assert task.backend.condition_shape == tuple(EP.TINY_BACKENDS["segment_image"][
      "condition_shape"])
  batch = next(task.make_data(4, 0, 1))
  spec = task.batch_spec()
  assert {k: v.shape[1:] for k, v in batch.items()} == {k: s for k, (s, _) in spec.items()}
  assert set(np.unique(batch["masks"])) <= {0.0, 1.0} and batch["masks"].sum() > 0
  params = flax.linen.meta.unbox(task.init(jax.random.key(0)))
  assert list(params) == ["backends"] and list(params["backends"]) == ["segment_image"]
  loss, metrics = jax.jit(task.loss)(params, batch, jax.random.key(1))
  assert np.isfinite(float(loss)) and float(metrics["weight"]) == 4
  for p in ("box", "text"):
    assert 0.0 <= float(metrics[f"{p}/mask_iou"]) <= 1.0
  assert task.components() == {"backend_segment_image": r"^backends/segment_image/"}


def test_sample_without_a_mask_is_a_bad_sample_and_bad_fields_are_refused():
  task = _task()
  s = PixelWorld(task.world_config, split="train", seed=0).sample(0, task="image_caption")
  with pytest.raises(pipeline.BadSampleError, match="segmentation target"):
    task.encoder(s)
  with pytest.raises(ValueError, match="unknown fields.*depth"):
    segmentation_config({"depth": 3}, 32)
  with pytest.raises(ValueError, match="image_size 64 must match.*32"):
    segmentation_config({"image_size": 64}, 32)


def test_tracking_rows_come_from_an_independent_stream_and_train_the_same_sam():
  task = build_task(EP.segmenter_stage(EP.get_config(""), False))  # the full job tracks
  assert task.track and task.world_config.num_frames == 2
  data = task.make_data(4, 0, 1)
  batch = next(data)
  spec = task.batch_spec()
  assert {k: v.shape[1:] for k, v in batch.items()} == {k: s for k, (s, _) in spec.items()}
  assert batch["track/pixel_values"].shape[1] == 2 and batch["track/masks"][:, 1].sum() > 0
  # the clip is not the ref_seg image's scene, and the same index gives the same pair again
  assert not np.array_equal(batch["track/pixel_values"][:, 0], batch["pixel_values"])
  again = next(task.make_data(4, 0, 1))
  np.testing.assert_array_equal(again["track/pixel_values"], batch["track/pixel_values"])
  params = flax.linen.meta.unbox(task.init(jax.random.key(0)))
  assert list(params["backends"]) == ["segment_image"]  # one SAM segments and tracks
  loss, metrics = jax.jit(task.loss)(params, batch, jax.random.key(1))
  stage = EP.segmenter_stage(EP.get_config(""), False)
  stage.task.track = False  # the same SAM (the full job's width) without the tracking rows
  image_only = build_task(stage)
  image_loss, _ = jax.jit(image_only.loss)(params, {k: v for k, v in batch.items()
                                                    if not k.startswith("track/")}, None)
  np.testing.assert_allclose(float(loss) - float(image_loss),
                             float(metrics["track/loss"]), rtol=1e-4, atol=1e-5)
  assert 0.0 <= float(metrics["track/mask_iou"]) <= 1.0


def test_a_clip_tracking_cannot_start_from_frame_0_is_a_bad_sample():
  task = build_task(EP.segmenter_stage(EP.get_config(""), False))
  s = PixelWorld(task.world_config, split="train", seed=0).sample(3, task="video_seg")
  assert set(task.track_encoder(s)) == {"pixel_values", "boxes", "masks", "command_ids"}
  late = dict(s, targets=dict(s["targets"], time_span=np.array([1, 1], np.int32)))
  with pytest.raises(pipeline.BadSampleError, match="absent from frame 0"):
    task.track_encoder(late)
  image = PixelWorld(task.world_config, split="train", seed=0).sample(0, task="ref_seg")
  with pytest.raises(pipeline.BadSampleError, match="no tracking target"):
    task.track_encoder(image)


def test_mask_iou_np():
  a = np.zeros((2, 4, 4), bool)
  b = a.copy()
  a[0, :2], b[0, :1] = True, True
  np.testing.assert_allclose(mask_iou_np(a, b), [0.5, 1.0])


@pytest.mark.slow
def test_segmenter_run_learns_box_prompted_segmentation(tmp_path):
  run_train(tmp_path, devices=1, config=CONFIG, timeout=900)
  ev = json.loads((tmp_path / "summary.json").read_text())["eval"]
  task = _task()
  untrained = task.evaluate(flax.linen.meta.unbox(task.init(jax.random.key(0))), 0)
  print("\nheld-out mask IoU: trained", ev, "untrained", untrained)
  assert ev["mask_iou"] > untrained["mask_iou"] + 0.15, (ev, untrained)
  assert ev["box_as_mask_iou"] == pytest.approx(untrained["box_as_mask_iou"])
