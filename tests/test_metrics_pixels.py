"""Checkers of generated pixels, and the pictures (PNG / GIF) of samples and of the videos
backends make (`Animation`)."""
import io

import numpy as np
import PIL.Image
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from vitron_jax.data.pixelworld import PixelWorld, WorldConfig
from vitron_jax.data.pixelworld import vocab as V
from vitron_jax.eval import pictures as P
from vitron_jax.eval import pixels as PX


def _canvas(size=32, grey=20):
  return np.full((size, size, 3), grey, np.uint8)


def test_dominant_colour_and_box():
  img = _canvas()
  img[4:12, 4:12] = V.COLOURS["red"]
  img[20:30, 20:30] = V.COLOURS["blue"]
  assert PX.dominant_colour(img, [4, 4, 12, 12]) == "red"
  assert PX.dominant_colour(img, [18, 18, 32, 32]) == "blue"
  assert PX.dominant_colour(img) == "blue"  # 100 blue vs 64 red pixels
  assert PX.dominant_colour(img, [0, 20, 10, 32]) is None  # background only
  mask = np.zeros((32, 32), bool)
  mask[5:7, 5:7] = True
  assert PX.dominant_colour(img, mask) == "red"
  # noisy generations still read as the right colour
  rng = np.random.default_rng(0)
  noisy = np.clip(img.astype(int) + rng.integers(-25, 26, img.shape), 0, 255).astype(np.uint8)
  assert PX.dominant_colour(noisy, [4, 4, 12, 12]) == "red"
  assert PX.PIXEL_CHANCE["dominant_colour"] == 1 / 8


def test_inside_box():
  img = _canvas()
  img[4:12, 4:12] = V.COLOURS["green"]
  assert PX.inside_fraction(img, "green", [4, 4, 12, 12]) == 1.0
  assert PX.object_inside_box(img, "green", [4, 4, 12, 12])
  assert PX.inside_fraction(img, "green", [8, 4, 12, 12], tolerance=0) == 0.5
  assert not PX.object_inside_box(img, "green", [20, 20, 30, 30])
  assert PX.inside_fraction(img, "pink", [0, 0, 32, 32]) == 0.0  # nothing drawn
  assert PX.inside_chance([0, 0, 16, 16], 32, 32) == 0.25
  with pytest.raises(ValueError, match="unknown colour"):
    PX.inside_fraction(img, "mauve", [0, 0, 1, 1])


@pytest.mark.parametrize("direction", ["left", "right", "up", "down", "static"])
def test_motion_direction(direction):
  video = np.stack([_canvas(32, 110)] * 5)
  dx, dy = {"left": (-4, 0), "right": (4, 0), "up": (0, -4), "down": (0, 4),
            "static": (0, 0)}[direction]
  for t in range(5):
    x, y = 12 + dx * t // 2, 12 + dy * t // 2
    video[t, y:y + 6, x:x + 6] = V.COLOURS["yellow"]
  assert PX.motion_direction(video, "yellow") == direction
  assert PX.motion_direction(video, "red") is None
  assert PX.PIXEL_CHANCE["motion_direction"] == 1 / 5


def test_l1_outside():
  a = _canvas()
  b = a.copy()
  m = np.zeros((32, 32), bool)
  m[:8] = True
  b[:8] = 200
  assert PX.l1_outside(a, b, m) == 0.0
  b[31, 31] = a[31, 31] + 255 - 20
  assert PX.l1_outside(a, b, m) == pytest.approx((255 - 20) / 255 / (32 * 32 - 8 * 32))
  assert PX.l1_outside(a, b, np.ones_like(m)) == 0.0
  assert PX.l1_chance(a, m) == pytest.approx((20 ** 2 + 235 ** 2) / (2 * 255) / 255)
  with pytest.raises(ValueError, match="must be equal"):
    PX.l1_outside(a, b[:10], m)


def test_checkers_on_pixelworld_renders():
  world = PixelWorld(WorldConfig(image_size=64), seed=4, tasks=["text_to_image"])
  for i in range(10):
    s = world[i]
    for o in s["objects"]:
      assert PX.dominant_colour(s["targets"]["image"], o["boxes"][0]) is not None
    # exactly the objects' pixels classify as object colours; every background is grey
    labels = PX.classify(s["targets"]["image"])
    assert (labels >= 0).sum() == sum(o["pixels"][0] for o in s["objects"])


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.uint8, (2, 8, 8, 3)), st.sampled_from(list(V.COLOUR_NAMES)),
       hnp.arrays(np.float64, (4,), elements=st.floats(-20, 40)),
       hnp.arrays(np.bool_, (8, 8)))
def test_fuzz_pixel_checkers(video, colour, box, mask):
  img = video[0]
  d = PX.dominant_colour(img, box)
  assert d is None or d in V.COLOURS
  assert 0.0 <= PX.inside_fraction(img, colour, box) <= 1.0
  assert PX.motion_direction(video, colour) in (None, "static", *V.DIRECTIONS)
  assert 0.0 <= PX.l1_outside(img, video[1], mask) <= 1.0
  assert PX.dominant_colour(img, mask) in (None, *V.COLOURS)


def test_pictures(tmp_path):
  world = PixelWorld(WorldConfig(image_size=32, num_frames=4), seed=0)
  for task in ("image_edit", "ref_seg", "video_seg", "text_to_video", "region_caption"):
    s = world.sample(1, task=task)
    path = tmp_path / f"{task}.png"
    P.save_sample_png(s, str(path), scale=2)
    with PIL.Image.open(path) as im:
      assert im.format == "PNG" and im.width >= 64 and im.height > 64
  s = world.sample(1, task="video_seg")
  P.sample_gif(s, str(tmp_path / "v.gif"), scale=2)
  with PIL.Image.open(tmp_path / "v.gif") as im:
    assert im.format == "GIF" and im.size == (64, 64)
  moving = np.zeros((5, 16, 16, 3), np.uint8)
  for t in range(5):
    moving[t, 4:8, 2 * t:2 * t + 4] = V.COLOURS["red"]
  boxes = np.array([[[2 * t, 4, 2 * t + 4, 8]] for t in range(5)])
  P.save_gif(moving, str(tmp_path / "m.gif"), boxes=boxes, masks=moving[..., 0] > 0, scale=2)
  with PIL.Image.open(tmp_path / "m.gif") as im:
    assert im.n_frames == 5
  with pytest.raises(ValueError, match="no video"):
    P.sample_gif(world.sample(1, task="ref_box"), str(tmp_path / "x.gif"))
  seg = world.sample(1, task="ref_seg")
  mask = P.overlay(seg["images"][0], masks=[seg["targets"]["mask"]], scale=2)
  made = np.asarray(P.answer_picture(seg, "a caption", made=[mask], scale=2))
  top = P.sample_picture(seg, scale=2).height + 6  # the answer's row: its box, then `made`
  x = seg["images"][0].shape[1] * 2 + 4
  assert (made[top:top + mask.height, x:x + mask.width] == np.asarray(mask)).all()
  pic = P.overlay(s["video"][0], masks=[s["targets"]["masks"][0]],
                  boxes=[[0, 0, 4, 4], [np.nan, 0, 1, 1], [5, 5, 2, 2]], labels=["a"], scale=3)
  assert pic.size == (96, 96)


def _moving(t=5, size=16):
  video = np.zeros((t, size, size, 3), np.uint8)
  for i in range(t):
    video[i, 4:8, 2 * i:2 * i + 4] = V.COLOURS["red"]
  return video, np.array([[[2 * i, 4, 2 * i + 4, 8]] for i in range(t)]), video[..., 0] > 0


def test_animation_is_the_video_drawn_and_round_trips_as_a_gif(tmp_path):
  video, boxes, masks = _moving()
  anim = P.animation(video, masks=masks, boxes=boxes, scale=2)
  assert len(anim.frames) == 5 and anim.size == (32, 32)
  for t, f in enumerate(anim.frames):  # frame t: the video's frame t with its mask and box
    want = P.overlay(video[t], masks=[masks[t]], boxes=boxes[t], scale=2)
    np.testing.assert_array_equal(np.asarray(f), np.asarray(want))
  still = anim.png()
  assert still.size == (5 * 32 + 4 * 4, 32)
  np.testing.assert_array_equal(np.asarray(still), np.asarray(P.side_by_side(anim.frames)))
  gif = anim.gif_bytes(fps=5.0)
  assert gif[:6] == b"GIF89a"
  with PIL.Image.open(io.BytesIO(gif)) as im:
    assert im.format == "GIF" and im.n_frames == 5 and im.size == (32, 32)
    assert im.info["duration"] == 200 and im.info["loop"] == 0
    for t in range(5):  # few colours: the palette keeps every frame exactly
      im.seek(t)
      np.testing.assert_array_equal(np.asarray(im.convert("RGB")), np.asarray(anim.frames[t]))
  P.save_gif(video, str(tmp_path / "m.gif"), boxes=boxes, masks=masks, fps=5.0, scale=2)
  assert (tmp_path / "m.gif").read_bytes() == gif  # save_gif writes the same frames the same way
  ragged = P.animation(video[:2], boxes=[[], [[0, 0, 4, 4], [8, 8, 12, 12]]], scale=1)
  assert ragged.size == (16, 16)  # a frame may have no boxes, another two
  seg = PixelWorld(WorldConfig(image_size=32, num_frames=4), seed=0).sample(1, task="ref_seg")
  with_anim = P.answer_picture(seg, "a caption", made=[anim], scale=2)
  with_still = P.answer_picture(seg, "a caption", made=[still], scale=2)
  np.testing.assert_array_equal(np.asarray(with_anim), np.asarray(with_still))


def test_animation_input_errors_name_the_input():
  video, boxes, masks = _moving()
  with pytest.raises(ValueError, match=r"video must be uint8 \[T, H, W, 3\]"):
    P.animation(video.astype(np.float32))
  with pytest.raises(ValueError, match=r"video must be uint8 \[T, H, W, 3\]"):
    P.animation(video[0])
  with pytest.raises(ValueError, match="video has no frames"):
    P.animation(video[:0])
  with pytest.raises(ValueError, match=r"masks must be \[T, H, W\] = \[5, 16, 16\].*\[4, 16, 16\]"):
    P.animation(video, masks=masks[:4])
  with pytest.raises(ValueError, match=r"boxes must have one entry per frame \(T = 5\), got 4"):
    P.animation(video, boxes=boxes[:4])
  bad = list(boxes)
  bad[2] = boxes[2, :, :3]
  with pytest.raises(ValueError, match=r"boxes\[2\] must be \[N, 4\].*\(1, 3\)"):
    P.animation(video, boxes=bad)
  with pytest.raises(ValueError, match="fps must be positive"):
    P.animation(video).gif_bytes(fps=0)
  with pytest.raises(ValueError, match="Animation frames must be one or more PIL images"):
    P.Animation(())
  with pytest.raises(ValueError, match="Animation frames must be one or more PIL images"):
    P.Animation((video[0],))
  with pytest.raises(ValueError, match="share one size"):
    P.Animation((PIL.Image.new("RGB", (4, 4)), PIL.Image.new("RGB", (4, 5))))
