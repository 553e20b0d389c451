"""Video segmentation inside the VITRON step (`train/video_segmentation_attachment.py`): the image
segmenter's SAM tracks the `video_seg` rows with the image segmenter's parameters (none of its
own), its loss reaches the head through the routing condition, and the clips it tracks from
free-running answers are scored, pictured (an `Animation`: a GIF in the report) and written by
chat."""
import io
import os
import sys

import flax
import jax
import jax.numpy as jnp
import numpy as np
import PIL.Image
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import pixelworld as EP  # noqa: E402

from vitron_jax.data.pixelworld import PixelWorld  # noqa: E402
from vitron_jax.eval import answers as EA  # noqa: E402
from vitron_jax.eval.answers import primary_metric  # noqa: E402
from vitron_jax.eval.pictures import Animation  # noqa: E402
from vitron_jax.eval.report import write_report  # noqa: E402
from vitron_jax.protocol import invocation as I  # noqa: E402
from vitron_jax.train.task import build_task  # noqa: E402
from vitron_jax.train.video_segmentation_attachment import EVAL_ROW, MODULE  # noqa: E402
from vitron_jax.train.vitron_task import _pictures  # noqa: E402

IMAGE = "segment_image"


def _config():
  c = EP.get_config("quick")
  c.task.videos = True
  c.model.head.backends[MODULE] = dict(EP.TINY_BACKENDS[MODULE])
  c.data.sources = (("pixelworld", "ref_seg,video_seg", 1.0),)
  c.task.backend_rows.segment_video = 2
  return c


@pytest.fixture(scope="module")
def task():
  return build_task(_config())


@pytest.fixture(scope="module")
def params(task):
  return flax.linen.meta.unbox(jax.jit(task.init)(jax.random.PRNGKey(0)))


def _samples(task, split="train", n=2):
  w = PixelWorld(task.world_config, split=split, seed=0)
  return [w.sample(i, task="video_seg") for i in range(n)], w.sample(0, task="ref_seg")


def test_video_rows_carry_clip_fields_and_share_the_image_segmenters_parameters(task, params):
  (clip, _), image = _samples(task)
  e, z = task.example(clip), task.example(image)
  spec = task.batch_spec()
  assert {k: np.shape(v) for k, v in e.items()} == {k: s for k, (s, _) in spec.items()}
  assert e[f"{MODULE}/valid"] == 1 and e[f"{MODULE}/pixel_values"].shape[0] == 2
  assert e[f"{MODULE}/masks"].sum() == clip["targets"]["masks"].sum()
  assert z[f"{MODULE}/valid"] == 0 and z[f"{IMAGE}/valid"] == 1
  att = task.backends[MODULE]
  assert att.params_of == IMAGE and att.segmenter is task.backends[IMAGE].segmenter
  assert list(params["backends"]) == [IMAGE]  # one SAM; nothing to load for the video module
  assert f"backend_{MODULE}" not in task.components()
  with pytest.raises(TypeError, match="parameters of segment_image"):
    att.init_boxed(jax.random.PRNGKey(0))


def test_tracking_loss_reaches_the_head_and_the_shared_sam(task, params):
  (c0, c1), image = _samples(task)
  ex = [task.example(s) for s in (c0, image, c1)]
  batch = {k: np.stack([e[k] for e in ex]) for k in ex[0]}

  def f(p):
    return task.loss(p, batch, jax.random.PRNGKey(1))
  (_, m), g = jax.jit(jax.value_and_grad(f, has_aux=True))(params)
  assert float(m[f"backend_rows/{MODULE}/used"]) == 2.0
  assert float(m[f"backend_rows/{IMAGE}/used"]) == 1.0
  assert float(m[f"loss/backend/{MODULE}"]) > 0 and float(m[f"loss/align/{MODULE}"]) > 0
  norm = lambda t: float(sum(jnp.abs(x).sum() for x in jax.tree.leaves(t)))
  assert norm(g["head"][f"projector_{MODULE}"]) > 0
  assert norm(g["backends"][IMAGE]["sam"]) > 0  # the shared SAM is in the step (and frozen)
  only_image = {k: np.stack([task.example(image)[k]] * 2) for k in ex[0]}
  _, m0 = jax.jit(task.loss)(params, only_image, jax.random.PRNGKey(1))
  assert float(m0[f"loss/backend/{MODULE}"]) == 0.0


def test_tracked_clips_are_scored_from_free_running_answers(task, params, tmp_path):
  (c0, c1), image = _samples(task, "val")
  samples = [c0, c1, image]
  _, signals = task.answer(params, samples, batch_size=4, max_new_tokens=4, with_signals=True)
  att = task.backends[MODULE]
  expected = c0["conversations"][1]["value"]
  inv = I.find_invocation(expected)
  late = expected.replace(I.render(inv), I.render(I.Invocation(
      inv.module, inv.command, inv.boxes, (1, 1))))  # frame 0 outside the answer's span
  answers = [expected, "I cannot do that.", image["conversations"][1]["value"]]
  sig = [(np.ones_like(signals[0][0]), np.ones_like(signals[0][1]),
          task.vcfg.head.index(MODULE))] * 3
  mp, bp = task.model_params(params), params["backends"][IMAGE]
  rows, made = att.score(task.model, mp, bp, samples, answers, sig)
  assert [r[0] for r in rows] == [EVAL_ROW, EVAL_ROW]  # the ref_seg sample is not a clip
  assert primary_metric(EVAL_ROW) == "tracking_iou"
  (_, s0, ch0), (_, s1, _) = rows
  assert 0.0 <= s0["tracking_iou"] <= 1.0 and 0.0 < ch0["tracking_iou"] < 1.0
  assert s1 == {"tracking_iou": 0.0, "text_tracking_iou": 0.0}  # no invocation: no masks
  assert sorted(made) == [0] and isinstance(made[0], Animation)  # the tracked clip, drawn
  clip = made[0]
  assert len(clip.frames) == 2 and clip.size == (128, 128)  # T frames of 32 px at scale 4
  assert clip.png().width > clip.png().height  # the still: the frames side by side
  pics = _pictures(samples, answers, 1, "heldout/", {i: [m] for i, m in made.items()})
  assert sorted(pics) == ["answers/heldout/ref_seg/0", "answers/heldout/video_seg/0",
                          "answers/heldout/video_seg/0/video0"]  # c1 is video_seg's second
  gif, h, w = pics["answers/heldout/video_seg/0/video0"]
  assert gif[:4] == b"GIF8" and (h, w) == (128, 128)
  with PIL.Image.open(io.BytesIO(gif)) as im:
    assert im.format == "GIF" and 1 <= im.n_frames <= 2 and im.size == (128, 128)
    np.testing.assert_array_equal(np.asarray(im.convert("RGB")), np.asarray(clip.frames[0]))
  png, h, w = pics["answers/heldout/video_seg/0"]
  assert png[:4] == b"\x89PNG" and w > clip.png().width  # the answer picture holds the still
  write_report(str(tmp_path), 0, {"val": EA.summarize(rows)}, pictures=pics)
  report = (tmp_path / "report.md").read_text()
  gif_file = "report/answers_heldout_video_seg_0_video0.gif"
  assert f"({gif_file})" in report and (tmp_path / gif_file).read_bytes() == gif
  with_box, _, _, _ = att.masks(task.model, mp, bp, [c0, c0], [expected, late], sig[:2])
  assert with_box.shape == (2, 2, 32, 32)
  np.testing.assert_array_equal(with_box[1, 1], with_box[0, 1])
  assert not with_box[1, 0].any()
  files, note = att.chat_files(task.model, mp, bp, c0, expected, sig[0], str(tmp_path / "t1"))
  assert [os.path.basename(f) for f in files] == ["t1_masks.npy", "t1_track.gif"], note
  np.testing.assert_array_equal(np.load(files[0]), with_box[0])
  files, note = att.chat_files(task.model, mp, bp, image, expected, sig[0], str(tmp_path / "t2"))
  assert not files and "needs exactly one video" in note
