"""The video backends inside the VITRON step (`train/video_generation_attachment.py`: text ->
video, image -> video, video editing): per-example fields, their losses reaching the head
through the routing condition while the backends stay frozen, and the clips they make of
free-running answers scored, pictured and written by chat."""
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
from vitron_jax.eval.answers import primary_metric  # noqa: E402
from vitron_jax.train import optim as O  # noqa: E402
from vitron_jax.train.task import build_task  # noqa: E402

SUBTASKS = {"generate_video": "text_to_video", "image_to_video": "image_to_video",
            "edit_video": "video_edit"}
ROWS = {"generate_video": "t2v_videos", "image_to_video": "i2v_videos",
        "edit_video": "video_edit_videos"}


def _config():
  c = EP.get_config("quick")
  c.task.videos = True
  c.task.seq_len = EP.get_config("").task.seq_len  # the full job's: planned clips are long
  c.data.sources = (("pixelworld", ",".join(SUBTASKS.values()), 1.0),)
  c.model.segmenter = None  # no segmentation rows here: its SAM would only add compile time
  c.task.backend_rows = {}
  for field, (module, _) in EP.VIDEO_BACKENDS.items():
    c.model.head.backends[module] = dict(EP.TINY_BACKENDS[module])
    fields = EP.TINY_VIDEO if field == "video_editor" else EP.TINY_VIDEO_GENERATOR
    c.model[field] = dict(fields, num_frames=2, steps=2)
    c.task.backend_rows[module] = 2
  return c


@pytest.fixture(scope="module")
def task():
  return build_task(_config())


@pytest.fixture(scope="module")
def params(task):
  return flax.linen.meta.unbox(jax.jit(task.init)(jax.random.PRNGKey(0)))


def _sample(task, module, i=0, split="train"):
  return PixelWorld(task.world_config, split=split, seed=0).sample(i, task=SUBTASKS[module])


def _batch(task, samples):
  ex = [task.example(s) for s in samples]
  return {k: np.stack([e[k] for e in ex]) for k in ex[0]}


def test_video_rows_carry_their_backends_fields_and_losses_reach_the_head(task, params):
  spec = task.batch_spec()
  t2v, i2v, edit = (_sample(task, m) for m in SUBTASKS)
  e = task.example(i2v)
  assert {k: np.shape(v) for k, v in e.items()} == {k: s for k, (s, _) in spec.items()}
  assert e["image_to_video/valid"] == 1 and e["generate_video/valid"] == 0
  np.testing.assert_allclose(e["image_to_video/source_images"], i2v["images"][0] / 255.0)
  e = task.example(t2v)  # the text -> video row carries the clip's layout: boxes per frame
  n = len(t2v["objects"])
  assert e["generate_video/valid"] == 1 and e["generate_video/boxes"].shape == (4, 2, 4)
  assert e["generate_video/phrase_mask"].tolist() == [1.0] * n + [0.0] * (4 - n)
  np.testing.assert_allclose(e["generate_video/boxes"][:n] * 32,
                             [o["boxes"] for o in t2v["objects"]], atol=0.05)
  assert task.example(edit)["edit_video/source_videos"].shape == (2, 32, 32, 3)
  assert {"generate_video", "image_to_video", "edit_video"} <= set(params["backends"])
  batch = _batch(task, [t2v, i2v, edit, t2v])

  def f(p):
    return task.loss(p, batch, jax.random.PRNGKey(1))
  (_, m), g = jax.jit(jax.value_and_grad(f, has_aux=True))(params)
  norm = lambda t: float(sum(jnp.abs(x).sum() for x in jax.tree.leaves(t)))  # noqa: E731
  for module, used in (("generate_video", 2.0), ("image_to_video", 1.0), ("edit_video", 1.0)):
    assert float(m[f"backend_rows/{module}/used"]) == used
    assert float(m[f"loss/backend/{module}"]) > 0 and float(m[f"loss/align/{module}"]) > 0
    assert norm(g["head"][f"projector_{module}"]) > 0
    assert norm(g["backends"][module]["unet"]) > 0  # in the step ...
  labels = flax.traverse_util.flatten_dict(O.Labeler(freeze=task.frozen()).labels(params),
                                           sep="/")
  assert {v for k, v in labels.items() if k.startswith("backends/")} == {"frozen"}  # ... frozen


def test_clips_are_scored_pictured_and_written_from_free_running_answers(task, params,
                                                                          tmp_path):
  caption = PixelWorld(task.world_config, split="val", seed=0).sample(0, task="video_caption")
  for module, sub in SUBTASKS.items():
    att = task.backends[module]
    samples = [_sample(task, module, i, "val") for i in range(2)] + [caption]
    _, signals = task.answer(params, samples, batch_size=4, max_new_tokens=4,
                             with_signals=True)
    answers = [samples[0]["conversations"][1]["value"], "I cannot do that.", "a caption"]
    sig = [(np.ones_like(signals[0][0]), np.ones_like(signals[0][1]),
            task.vcfg.head.index(module))] * 3
    mp, bp = task.model_params(params), params["backends"][module]
    clips, ok = att.images(task.model, mp, bp, samples, answers, sig)
    assert clips.shape == (3, 2, 32, 32, 3) and clips.dtype == np.uint8
    assert ok.tolist() == [True, False, False], module
    rows, made = att.score(task.model, mp, bp, samples, answers, sig)
    row = ROWS[module]
    assert [r[0] for r in rows] == [row, row], module  # the caption makes no clip
    metric = primary_metric(row)
    (_, s0, c0), (_, s1, c1) = rows
    assert 0.0 <= s0[metric] <= 1.0 and s1[metric] == 0.0  # no invocation: nothing right
    if module == "edit_video":
      assert s1["l1_outside"] == c1["l1_outside"]  # ... and no better than a random clip
    assert sorted(made) == [0] and len(made[0].frames) == 2  # an animation of the clip
    files, note = att.chat_files(task.model, mp, bp, samples[0], answers[0], sig[0],
                                 str(tmp_path / f"turn1_{module}"))
    assert [os.path.basename(f) for f in files] == [f"turn1_{module}.gif"], note
    with PIL.Image.open(files[0]) as gif:
      assert gif.n_frames == 2 and gif.size == (128, 128)
    files, note = att.chat_files(task.model, mp, bp, samples[0], "no", sig[0],
                                 str(tmp_path / "t2"))
    assert not files and f"{module} not run" in note
  # the first frame conditions the clip: another image, another clip
  att = task.backends["image_to_video"]
  s = _sample(task, "image_to_video", 0, "val")
  dark = dict(s, images=[np.zeros_like(s["images"][0])])
  a = [s["conversations"][1]["value"]] * 2
  sig = [(np.ones_like(signals[0][0]), np.ones_like(signals[0][1]),
          task.vcfg.head.index("image_to_video"))] * 2
  clips, _ = att.images(task.model, task.model_params(params), params["backends"]
                        ["image_to_video"], [s, dark], a, sig)
  assert np.abs(clips[0].astype(int) - clips[1]).mean() > 1.0


def test_mismatched_video_backend_configs_are_refused():
  c = _config()
  c.model.video_editor.num_frames = 3
  with pytest.raises(ValueError, match="video_editor.num_frames is 3 but data.pixelworld"):
    build_task(c)
  c = _config()
  c.model.video_generator.text_len = 16
  with pytest.raises(ValueError, match="video_generator gives condition tokens \\(16, 32\\)"):
    build_task(c)
