"""The video backends at PixelWorld size (`train.video_diffusion`, tasks
pixelworld_video_generator / _animator / _editor): examples of every video subtask, their
errors, the UNet3D's conditioning channels, padding rows weighed out of the loss, clips made,
and the scores of generated and edited videos (`eval.generated_video`)."""
import json
import sys

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from train_runs import ROOT

sys.path.insert(0, str(ROOT / "experiments"))
import pixelworld as EP  # noqa: E402

from vitron_jax.data import pipeline  # noqa: E402
from vitron_jax.data.pixelworld import PixelWorld  # noqa: E402
from vitron_jax.data.pixelworld import vocab as V  # noqa: E402
from vitron_jax.eval.generated_video import (DIRECTION_CHANCE, motion_scores,  # noqa: E402
                                             video_edit_scores)
from vitron_jax.train.task import build_task  # noqa: E402
from vitron_jax.backends.diffusion.gligen import GligenInputs  # noqa: E402
from vitron_jax.backends.diffusion.layout import layout_map  # noqa: E402
from vitron_jax.protocol import invocation as I  # noqa: E402
from vitron_jax.train.video_diffusion import (FirstFrameVideoBackend,  # noqa: E402
                                              LayoutVideoBackend, VideoAnimator,
                                              VideoGenerator, video_phrases_of)

ARGS = ("video_generator", "video_animator", "video_editor")


def _config(arg):
  c = EP.get_config(arg)
  c.model[arg].steps = 2  # sampling steps: the tests check shapes and inputs, not quality
  return c


@pytest.fixture(scope="module")
def tasks():
  return {a: build_task(_config(a)) for a in ARGS}


def _samples(task, n=4, split="train"):
  w = PixelWorld(task.world_config, split=split, seed=0)
  return [w.sample(i, task=task.subtask) for i in range(n)]


def test_examples_of_every_video_subtask_and_their_errors(tasks):
  sources = {"video_generator": None, "video_animator": "source_images",
             "video_editor": "source_videos"}
  for arg, task in tasks.items():
    b = task.backend
    s = _samples(task, 1)[0]
    e = task.encoder(s)
    assert {k: v.shape for k, v in e.items()} == {k: sh for k, (sh, _) in task.batch_spec().items()}
    np.testing.assert_allclose(e["videos"], s["targets"]["video"] / 255.0, atol=1e-7)
    assert set(np.unique(e["pixel_weights"])) == {1.0, b.fields["object_weight"]}
    assert b.source == (sources[arg] or "")
    c = 3 * b.fields["pixel_patch"] ** 2
    layout = b.fields["text_width"] + b.fields["pixel_patch"] ** 2 if b.fields.get("layout") else 0
    assert b.models.unet.config.in_channels == (2 * c if b.source else c) + layout
    assert bool(layout) == (arg != "video_editor")
    assert b.backend.condition_shape == tuple(EP.TINY_BACKENDS[b.module]["condition_shape"])
    caption = PixelWorld(task.world_config, split="train", seed=0).sample(0, task="image_caption")
    with pytest.raises(pipeline.BadSampleError, match=f"not {task.what} sample"):
      task.encoder(caption)
  s = _samples(tasks["video_editor"], 1)[0]
  edit = tasks["video_editor"].encoder(s)
  np.testing.assert_array_equal(edit["pixel_weights"] > 1, s["targets"]["masks"])
  a = tasks["video_animator"].backend
  with pytest.raises(ValueError,
                     match="image_to_video's first frame must be uint8 \\(32, 32, 3\\)"):
    a.inputs("the red circle is moving left", np.zeros((16, 16, 3), np.uint8))
  with pytest.raises(ValueError, match="unknown fields.*depth"):
    VideoGenerator({"depth": 3}, 32, a.tokenizer)
  c = _config("video_generator")
  c.model.video_generator.num_frames = 3
  with pytest.raises(ValueError, match="num_frames is 3 but data.pixelworld.num_frames is 2"):
    build_task(c)


def test_loss_padding_rows_and_the_first_frame_conditions_the_clip(tasks):
  task = tasks["video_animator"]
  batch = next(task.make_data(4, 0, 1))
  params = flax.linen.meta.unbox(jax.jit(task.init)(jax.random.key(0)))
  assert list(params["backends"]) == ["image_to_video"]
  loss, metrics = jax.jit(task.loss)(params, batch, jax.random.key(1))
  assert np.isfinite(float(loss)) and float(metrics["weight"]) == 4
  a = VideoAnimator(task.backend.fields, 32, task.backend.tokenizer, training=False)
  p = params["backends"]["image_to_video"]

  @jax.jit
  def weighted(b, w):
    b = dict(b, row_weights=jnp.asarray(w, jnp.float32))
    return a.backend.loss(p, a.backend_batch(b), a.condition(p, b["command_ids"]),
                          jax.random.key(2))[0]
  other = dict(batch, videos=np.asarray(batch["videos"]).copy())
  other["videos"][3] = 1.0 - other["videos"][3]
  w = np.float32([1, 1, 1, 0])
  assert float(weighted(batch, w)) == pytest.approx(float(weighted(other, w)), rel=1e-6)
  ones = np.ones(4, np.float32)
  assert float(weighted(batch, ones)) != pytest.approx(float(weighted(other, ones)))
  # the first frame is an input: another one changes the loss and the clip made
  flipped = dict(batch, source_images=1.0 - np.asarray(batch["source_images"]))
  assert float(weighted(flipped, w)) != pytest.approx(float(weighted(batch, w)))
  samples = _samples(task, 2)
  clips = task.images(params, samples)
  assert clips.shape == (2, 2, 32, 32, 3) and clips.dtype == np.uint8
  dark = [dict(s, targets=dict(s["targets"], source_image=np.zeros_like(
      s["targets"]["source_image"]))) for s in samples]
  assert np.abs(task.images(params, dark).astype(int) - clips).mean() > 1.0
  with pytest.raises(ValueError, match="pixel_weights must be \\[4, 2, 32, 32\\]"):
    weighted(dict(batch, pixel_weights=np.ones((4, 32, 32), np.float32)), w)


def test_the_text_to_video_layout_is_each_frames_boxes_drawn_in_that_frame(tasks):
  """The invocation plans the clip (every object's box in every frame, object-major); frame
  t's input channels are the image layout of frame t's boxes, so a box moved in frame 1 moves
  only frame 1's channels, and the clip made follows it."""
  task = tasks["video_generator"]
  g = task.backend
  s = next(x for x in _samples(task, 12) if len(x["objects"]) >= 2)
  inv = I.find_invocation(s["conversations"][-1]["value"])
  n = len(s["objects"])
  assert len(inv.boxes) == 2 * n
  for j, o in enumerate(s["objects"]):  # object j's boxes, frame by frame, are its true boxes
    np.testing.assert_allclose(np.asarray(inv.boxes[2 * j:2 * j + 2]) * 32,
                               np.asarray(o["boxes"], np.float32).reshape(-1, 4), atol=0.05)
  e = g.inputs(inv.command, None, inv.boxes)
  assert e["phrase_mask"].tolist() == [1.0] * n + [0.0] * (4 - n)
  phrases = video_phrases_of(inv.command, n)
  assert phrases == [f"{V.article(o['size'])} {o['size']} {o['colours'][0]} {o['shape']}"
                     for o in s["objects"]]
  params = flax.linen.meta.unbox(jax.jit(task.init)(jax.random.key(0)))
  p = params["backends"]["generate_video"]
  batch = {k: jnp.asarray(v)[None] for k, v in e.items()}
  shape = (1, 2, g.latent_size, g.latent_size, 3 * g.fields["pixel_patch"] ** 2)
  concat = np.asarray(g.backend._concat(p, batch, shape))
  emb = g.backend.models.text_encoder.apply({"params": p["text_encoder"]},
                                            jnp.asarray(e["phrase_ids"])).pooler_output[None]
  for t in range(2):
    want = layout_map(GligenInputs(jnp.asarray(e["boxes"][None, :, t]), emb,
                                   jnp.asarray(e["phrase_mask"][None])), 32, 32, 4)
    np.testing.assert_allclose(concat[:, t], np.asarray(want), atol=1e-5)
  moved = dict(batch, boxes=batch["boxes"].at[0, 0, 1].set(jnp.asarray([0.0, 0.0, 0.25, 0.25])))
  other = np.asarray(g.backend._concat(p, moved, shape))
  np.testing.assert_array_equal(other[:, 0], concat[:, 0])
  assert np.abs(other[:, 1] - concat[:, 1]).max() > 0.1
  clips = task.images(params, [s])
  still = dict(s, conversations=s["conversations"][:-1] + [dict(s["conversations"][-1], value=(
      I.render(I.Invocation(inv.module, inv.command, tuple(
          inv.boxes[2 * j] for j in range(n) for _ in range(2))))))])
  assert np.abs(task.images(params, [still]).astype(int) - clips).mean() > 0.5
  # what the layout cannot take is refused with the reason
  with pytest.raises(ValueError, match="2 boxes per object"):
    g.inputs(inv.command, None, inv.boxes[:3])
  with pytest.raises(ValueError, match="names 2 objects but the invocation's layout has 1"):
    g.inputs("a red circle moving left and a blue square staying still on a gray background",
             None, inv.boxes[:2])
  with pytest.raises(ValueError, match="at most max_phrases=4"):
    g.inputs(inv.command, None, inv.boxes[:2] * 5)
  plain = VideoGenerator(dict(g.fields, layout=False), 32, g.tokenizer)
  assert plain.models.unet.config.in_channels == 3 * g.fields["pixel_patch"] ** 2
  with pytest.raises(ValueError, match="takes no boxes \\(model.video_generator.layout is"):
    plain.inputs(inv.command, None, inv.boxes)
  with pytest.raises(ValueError, match="edit_video takes no boxes \\(its invocation names no"):
    tasks["video_editor"].backend.inputs("make the red circle blue",
                                         np.zeros((2, 32, 32, 3), np.uint8), inv.boxes[:2])
  assert video_phrases_of("a small red circle moving up along a curve, an orange star staying "
                          "still and a blue ring entering from the left on a white background",
                          3) == ["a small red circle", "an orange star", "a blue ring"]


def test_the_image_to_video_layout_follows_the_first_frame(tasks):
  """An image -> video invocation plans where each object of the image goes (every object's
  box in every frame, as text -> video's); the UNet's extra channels are the first frame's,
  then the layout's, and the clip made follows the plan."""
  task = tasks["video_animator"]
  a = task.backend
  s = next(x for x in _samples(task, 12) if len(x["objects"]) >= 2)
  inv = I.find_invocation(s["conversations"][-1]["value"])
  n = len(s["objects"])
  assert inv.module == "image_to_video" and len(inv.boxes) == 2 * n
  for j, o in enumerate(s["objects"]):
    np.testing.assert_allclose(np.asarray(inv.boxes[2 * j:2 * j + 2]) * 32,
                               np.asarray(o["boxes"], np.float32).reshape(-1, 4), atol=0.05)
  assert [p.split()[0] for p in video_phrases_of(inv.command, n)] == ["the"] * n
  e = a.inputs(inv.command, s["images"][0], inv.boxes)
  assert e["phrase_mask"].tolist() == [1.0] * n + [0.0] * (4 - n)
  params = flax.linen.meta.unbox(jax.jit(task.init)(jax.random.key(0)))
  p = params["backends"]["image_to_video"]
  batch = {k: jnp.asarray(v)[None] for k, v in e.items()}
  c = 3 * a.fields["pixel_patch"] ** 2
  shape = (1, 2, a.latent_size, a.latent_size, c)
  concat = np.asarray(a.backend._concat(p, batch, shape))
  first = np.asarray(FirstFrameVideoBackend._concat(a.backend, p, batch, shape))
  layout = np.asarray(LayoutVideoBackend._concat(a.backend, p, batch, shape))
  assert concat.shape[-1] == a.models.unet.config.in_channels - c
  np.testing.assert_array_equal(concat[..., :c], first)
  np.testing.assert_array_equal(concat[..., c:], layout)
  assert "then the clip's layout" in a.concat_description
  clips = task.images(params, [s])
  still = dict(s, conversations=s["conversations"][:-1] + [dict(s["conversations"][-1], value=(
      I.render(I.Invocation(inv.module, inv.command, tuple(
          inv.boxes[2 * j] for j in range(n) for _ in range(2))))))])
  assert np.abs(task.images(params, [still]).astype(int) - clips).mean() > 0.5
  plain = VideoAnimator(dict(a.fields, layout=False), 32, a.tokenizer)
  assert plain.models.unet.config.in_channels == 2 * c
  with pytest.raises(ValueError, match="takes no boxes \\(model.video_animator.layout is"):
    plain.inputs(inv.command, s["images"][0], inv.boxes)
  assert video_phrases_of("the red circle is moving left, the small blue square is staying "
                          "still and the green ring is entering from the top", 3) == [
                              "the red circle", "the small blue square", "the green ring"]


def test_motion_scores_of_the_true_clip_a_frozen_clip_and_noise(tasks):
  task = tasks["video_generator"]
  samples = _samples(task, 24, split="heldout")
  true, frozen = [], []
  for s in samples:
    v = s["targets"]["video"]
    scores, chance = motion_scores(v, s)
    assert chance == {"direction_right": DIRECTION_CHANCE} and DIRECTION_CHANCE == 0.2
    true.append(scores["direction_right"])
    moving = [o for o in s["objects"] if len(set(o["colours"])) == 1]
    still, _ = motion_scores(np.repeat(v[:1], len(v), axis=0), s)
    static = np.mean([o["motion"] == "static" for o in moving]) if moving else 0.0
    assert still["direction_right"] == pytest.approx(static)  # only static objects pass
    frozen.append(still["direction_right"])
    assert scores["direction_left_out"] == len(s["objects"]) - len(moving)
  # occlusion can hide an object's motion, so the true clip is near, not always at, 1
  assert np.mean(true) >= 0.9 and np.mean(frozen) < 0.5
  noise = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype(np.uint8)
  assert motion_scores(noise, samples[0])[0]["direction_right"] <= 0.5
  with pytest.raises(ValueError, match="generated video has shape \\(3, 32, 32, 3\\)"):
    motion_scores(np.zeros((3, 32, 32, 3), np.uint8), samples[0])
  with pytest.raises(ValueError, match="not a video generation sample"):
    motion_scores(noise, {"id": "x", "targets": {}})


def test_video_edit_scores_of_the_exact_edit_the_source_and_noise(tasks):
  rng = np.random.default_rng(0)
  for s in _samples(tasks["video_editor"], 6, split="heldout"):
    t = s["targets"]
    scores, chance = video_edit_scores(t["video"], s)
    assert scores == {"edit_right": 1.0, "l1_outside": 0.0}, (s["id"], scores)
    unchanged, _ = video_edit_scores(t["source_video"], s)
    assert unchanged["edit_right"] == chance["edit_right"] == 0.0
    noise = rng.integers(0, 256, t["video"].shape).astype(np.uint8)
    noisy, _ = video_edit_scores(noise, s)
    assert noisy["edit_right"] == 0.0
    assert noisy["l1_outside"] == pytest.approx(chance["l1_outside"], abs=0.05)
  with pytest.raises(ValueError, match="not a video edit: targets lack"):
    video_edit_scores(t["video"], {"id": "x", "targets": {"video": t["video"]}})


def test_export_reloads_in_diffusers_and_transformers(tasks, tmp_path):
  """The video editor's export (`convert.vitron_run`): a diffusers UNet3D whose input carries
  the source video after the noisy pixels, and a transformers CLIP text encoder, both giving
  our numbers."""
  torch = pytest.importorskip("torch")
  import diffusers
  import transformers
  from vitron_jax.convert.vitron_run import _save_pixel_diffusion
  task = tasks["video_editor"]
  b = task.backend
  p = flax.linen.meta.unbox(jax.jit(task.init)(jax.random.key(0)))["backends"]["edit_video"]
  p = jax.tree.map(lambda x: x + 0.02 * jax.random.normal(jax.random.key(1), x.shape), p)
  _save_pixel_diffusion(b, p, tmp_path)
  meta = json.loads((tmp_path / "video_editor.json").read_text())
  assert meta["num_frames"] == 2 and "source video" in meta["concat"]
  ids = b.command_ids("make the red circle blue")[None]
  text = b.models.text_encoder.apply({"params": p["text_encoder"]}, jnp.asarray(ids))
  clip = transformers.CLIPTextModel.from_pretrained(tmp_path / "text_encoder").eval()
  with torch.no_grad():
    ht = clip(torch.from_numpy(ids.astype(np.int64))).last_hidden_state
  np.testing.assert_allclose(np.asarray(text.last_hidden_state), ht.numpy(), atol=2e-4,
                             rtol=1e-4)
  c_in = b.models.unet.config.in_channels
  x = np.random.default_rng(0).normal(size=(1, 2, b.latent_size, b.latent_size, c_in))
  ours = b.models.unet.apply({"params": p["unet"]}, jnp.asarray(x, jnp.float32),
                             jnp.asarray([500.0]), text.last_hidden_state)
  unet = diffusers.UNet3DConditionModel.from_pretrained(tmp_path / "unet").eval()
  assert unet.config.in_channels == c_in == 2 * b.models.latent_channels
  with torch.no_grad():  # diffusers' video layout: [B, C, T, H, W]
    theirs = unet(torch.from_numpy(x.transpose(0, 4, 1, 2, 3)).float(), 500,
                  encoder_hidden_states=ht).sample
  np.testing.assert_allclose(np.asarray(ours), theirs.numpy().transpose(0, 2, 3, 4, 1),
                             atol=2e-4, rtol=1e-4)
