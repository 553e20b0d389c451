"""Split rule: held-out attribute combinations never reach train/val, always reach heldout."""
from vitron_jax.data.pixelworld import PixelWorld, WorldConfig
from vitron_jax.data.pixelworld import splits as S
from vitron_jax.data.pixelworld import vocab as V
from vitron_jax.eval import text as TX

CFG = WorldConfig(image_size=32, num_frames=4)


def _combinations(sample) -> set:
  """Every combination a sample carries: in its objects, edit results and all its text."""
  out = set()
  for o in sample["objects"] + sample["targets"].get("objects_after", []):
    out |= S.object_combinations(o)
  texts = [c["value"] for c in sample["conversations"]] + list(sample["targets"].get("phrases",
                                                                                     []))
  for t in texts:
    out |= {("colour_shape", c, s) for c, s in TX.colour_shape_pairs(t)}
  return out


def test_heldout_sets_leave_every_attribute_in_training():
  assert len(S.HELDOUT_COLOUR_SHAPE) == 8 and len(S.HELDOUT_MOTION_SHAPE) == 7
  for shape in V.SHAPES:
    assert len(S.allowed_colours(shape)) >= 6 and len(S.allowed_directions(shape)) >= 3
  for colour in V.COLOUR_NAMES:
    assert sum(S.colour_shape_allowed(colour, s) for s in V.SHAPES) >= 5


def test_no_heldout_combination_in_train_or_val():
  seen = set()
  for split, n in (("train", 1500), ("val", 300)):
    world = PixelWorld(CFG, split=split, seed=3)
    for i in range(n):
      combos = _combinations(world[i])
      bad = [c for c in combos if S.is_heldout_combination(c)]
      assert not bad, (split, i, bad, world[i]["conversations"])
      seen |= combos
  # training still covers every colour, shape and direction
  assert {c for k, c, _ in seen if k == "colour_shape"} == set(V.COLOUR_NAMES)
  assert {s for _, _, s in seen} == set(V.SHAPES)
  assert {m for k, m, _ in seen if k == "motion_shape"} == set(V.DIRECTIONS)


def test_every_heldout_sample_carries_a_heldout_combination():
  world = PixelWorld(CFG, split="heldout", seed=3)
  found = set()
  for i in range(400):
    s = world[i]
    held = {c for c in _combinations(s) if S.is_heldout_combination(c)}
    assert held, (i, s["subtask"], s["conversations"])
    found |= held
  expected = ({("colour_shape", c, s) for c, s in S.HELDOUT_COLOUR_SHAPE}
              | {("motion_shape", m, s) for m, s in S.HELDOUT_MOTION_SHAPE})
  assert found == expected


def _pixels(sample) -> bytes:
  t = sample["targets"]
  arr = (sample["images"][0] if sample["images"] else sample.get("video", t.get("image",
                                                                                t.get("video"))))
  return arr.tobytes()


def test_split_streams_are_disjoint():
  a = PixelWorld(CFG, split="train", seed=0)
  b = PixelWorld(CFG, split="val", seed=0)
  assert sum(_pixels(a[i]) != _pixels(b[i]) for i in range(20)) == 20
