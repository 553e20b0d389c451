"""PixelWorld samples -> static-shape VITRON examples (`data.vitron_examples`)."""
import copy
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import pixelworld as EP  # noqa: E402

from vitron_jax.data import pixelworld_tokenizer as PT  # noqa: E402
from vitron_jax.data import vitron_examples as VE  # noqa: E402
from vitron_jax.data.pipeline import BadSampleError  # noqa: E402
from vitron_jax.data.pixelworld import (IMAGE_TASKS, VIDEO_TASKS, PixelWorld,  # noqa: E402
                                        WorldConfig)
from vitron_jax.models.vitron import check_batch  # noqa: E402
from vitron_jax.models.vitron_config import vitron_config_from  # noqa: E402
from vitron_jax.protocol import invocation as inv_lib  # noqa: E402
from vitron_jax.protocol import tokens as T  # noqa: E402
from vitron_jax.protocol.tokenizer import (decode_text, encode_user_text,  # noqa: E402
                                           protocol_ids)

WORLD = WorldConfig(image_size=32, num_frames=2, max_objects=3)


@pytest.fixture(scope="module")
def tok():
  return PT.build_tokenizer()


def _vcfg(tok, arg):
  return vitron_config_from(EP.get_config(arg).model, protocol_ids(tok), len(tok))


@pytest.fixture(scope="module")
def quick(tok):
  """(vcfg, encoder) as the "quick" PixelWorld run builds them (image-only)."""
  vcfg = _vcfg(tok, "quick")
  layout = VE.Layout.from_config(vcfg, seq_len=96, videos=False, max_regions=3, system="")
  return vcfg, VE.VitronEncoder(tok, layout)


@pytest.fixture(scope="module")
def full(tok):
  """(vcfg, encoder) with every backend and videos."""
  vcfg = _vcfg(tok, "")
  layout = VE.Layout.from_config(vcfg, seq_len=128, videos=True, max_regions=3, system="")
  return vcfg, VE.VitronEncoder(tok, layout)


def _image_samples(n=4):
  out = []
  for split in ("train", "heldout"):
    world = PixelWorld(WORLD, split=split)
    out += [world.sample(i, task=t) for t in IMAGE_TASKS for i in range(n)]
  return out


def _squash(text):
  return "".join(text.split())


def _check_example(tok, vcfg, enc, s):
  ex = enc(s)
  L = enc.layout
  assert ex["input_ids"].shape == (L.seq_len,) and ex["input_ids"].dtype == np.int32
  check_batch(vcfg, VE.nest(VE.stack([ex])))  # slot counts agree with the inputs
  ids, att = ex["input_ids"], ex["attention_mask"]
  loss, query = ex["loss_mask"], ex["query_mask"]
  n = int(att.sum())
  assert att[:n].all() and not att[n:].any(), "right padding"
  assert not (loss & ~att).any() and not (query & ~att).any() and not (loss & query).any()
  assert ids[0] == tok.bos_token_id and ids[n - 1] == tok.eos_token_id and loss[n - 1]
  # the loss covers exactly the answer and its EOS (query slots excepted)
  first = int(np.flatnonzero(loss)[0])
  assert np.array_equal(np.flatnonzero(loss | query), np.arange(first, n))
  gpt = s["conversations"][1]["value"]
  assert _squash(decode_text(tok, ids[loss])) == _squash(gpt + tok.eos_token)
  # query slots: K of the invoked module right after </inv>, module id = its head index
  pids = protocol_ids(tok)
  inv = inv_lib.find_invocation(gpt)
  modules = tuple(vcfg.head.modules)
  if inv is None:
    assert ex["module_ids"] == -1 and not query.any()
  elif inv.module in modules:
    k = dict(vcfg.head.query_counts)[inv.module]
    assert k > 0
    assert ex["module_ids"] == modules.index(inv.module)
    q = np.flatnonzero(query)
    assert len(q) == k and np.array_equal(q, np.arange(q[0], q[0] + k))
    assert ids[q[0] - 1] == pids.inv_close
    assert (ids[q] == tok.pad_token_id).all()
  else:  # a module without a bank in this head
    assert ex["module_ids"] == -1 and not query.any()
  # pixels and regions
  images = s.get("images") or []
  assert ex["image_valid"].sum() == len(images)
  for i, im in enumerate(images):
    np.testing.assert_allclose(ex["images"][i], VE.clip_pixels(im), rtol=0, atol=1e-6)
  if not images:
    assert not ex["images"].any()
  img_regs = [r for r in s["regions"] if np.ndim(r["mask"]) == 2]
  assert ex["image_regions/valid"].sum() == len(img_regs)
  assert (ids == pids.roi).sum() == len(s["regions"]) * vcfg.frontend.region_token_count
  return ex


def test_image_task_examples(tok, quick):
  vcfg, enc = quick
  seen_mods, seen_regions = set(), 0
  for s in _image_samples():
    ex = _check_example(tok, vcfg, enc, s)
    seen_mods.add(int(ex["module_ids"]))
    seen_regions += int(ex["image_regions/valid"].sum())
  assert seen_mods == {-1, 0, 1, 2}  # plain answers and every head module
  assert seen_regions > 0


def test_example_of_a_module_outside_the_head(tok, quick):
  """A video_seg answer in an image-only head: no query slots, module id -1."""
  vcfg, _ = quick
  layout = VE.Layout.from_config(vcfg, seq_len=96, videos=True, max_regions=3, system="")
  s = PixelWorld(WORLD).sample(0, task="video_seg")
  assert "segment_video" not in vcfg.head.modules
  _check_example(tok, vcfg, VE.VitronEncoder(tok, layout), s)


def test_video_examples(tok, full):
  vcfg, enc = full
  world = PixelWorld(WORLD)
  with_regions = 0
  for t in VIDEO_TASKS:
    for i in range(3):
      s = world.sample(i, task=t)
      ex = _check_example(tok, vcfg, enc, s)
      has_video = "video" in s
      assert bool(ex["video_valid"][0]) == has_video
      if has_video:
        np.testing.assert_allclose(ex["videos"][0], VE.clip_pixels(s["video"]), rtol=0,
                                   atol=1e-6)
        assert (ex["input_ids"] == protocol_ids(tok).video).sum() == (
            vcfg.frontend.video_token_count)
      else:
        assert not ex["videos"].any()
      vregs = [r for r in s["regions"] if np.ndim(r["mask"]) == 3]
      assert ex["video_regions/valid"].sum() == len(vregs)
      for j, r in enumerate(vregs):
        with_regions += 1
        want = np.asarray(r["mask"]).reshape(2, -1).any(1)
        np.testing.assert_array_equal(ex["video_regions/frame_valid"][j], want)
        assert ex["video_regions/masks"][j].sum() > 0
  assert with_regions > 0


def test_video_sample_rejected_by_an_image_only_layout(quick):
  _, enc = quick
  s = PixelWorld(WORLD).sample(0, task="video_caption")
  with pytest.raises(BadSampleError, match="video"):
    enc(s)


def test_prompt_is_left_padded_user_turn(tok, quick):
  vcfg, enc = quick
  tail = encode_user_text(tok, "ASSISTANT:")
  assert tok.convert_ids_to_tokens(tail) == ["ASSISTANT", ":"]
  for s in _image_samples(1):
    p = enc.prompt(s)
    ex = enc(s)
    ids, att = p["input_ids"], p["attention_mask"]
    assert ids.shape == (enc.layout.seq_len,)
    n = int(att.sum())
    L = enc.layout.seq_len
    assert not att[:L - n].any() and att[L - n:].all(), "left padding"
    assert (ids[:L - n] == tok.pad_token_id).all()
    prompt = ids[L - n:]
    assert prompt[0] == tok.bos_token_id
    assert list(prompt[-len(tail):]) == tail
    # exactly the training example up to the answer: no answer token in the prompt
    first = int(np.flatnonzero(ex["loss_mask"])[0])
    np.testing.assert_array_equal(prompt, ex["input_ids"][:first])
    assert not {tok.eos_token_id, protocol_ids(tok).inv_open}.intersection(prompt.tolist())
    assert set(p) >= {"images", "image_valid", "image_regions/masks"}
    assert "loss_mask" not in p
    np.testing.assert_array_equal(p["images"], ex["images"])
    check_batch(vcfg, VE.nest(VE.stack([p])))
  # a custom length
  s = _image_samples(1)[0]
  assert enc.prompt(s, length=64)["input_ids"].shape == (64,)


def _bad(enc, s, match):
  with pytest.raises(BadSampleError, match=match) as e:
    enc(s)
  assert e.value.sample_id == s["id"] and s["id"] in str(e.value)
  return e.value


def test_bad_samples_name_their_id(tok, quick):
  vcfg, enc = quick
  world = PixelWorld(WORLD)
  cap = world.sample(0, task="image_caption")
  short = VE.VitronEncoder(tok, VE.Layout.from_config(vcfg, seq_len=24, videos=False,
                                                       max_regions=3, system=""))
  err = _bad(short, cap, "longer than the sequence")
  assert "seq_len 24" in str(err)
  with pytest.raises(BadSampleError, match="longer than the sequence"):
    short.prompt(cap)

  reg = world.sample(0, task="region_caption")
  assert len(reg["regions"]) == 1
  many = copy.deepcopy(reg)
  many["regions"] = reg["regions"] * 4
  many["conversations"][0]["value"] += " <roi> <roi> <roi>"
  _bad(enc, many, "too many regions")

  small = dict(cap, images=[cap["images"][0][:16, :16]])
  _bad(enc, small, "wrong image size")
  two = dict(cap, images=[cap["images"][0]] * 2)
  _bad(enc, two, "too many images")

  for conv in ([], None):
    empty = dict(cap, conversations=conv)
    _bad(enc, empty, "empty conversation")
    with pytest.raises(BadSampleError, match="empty conversation"):
      enc.prompt(empty)
  swapped = dict(cap, conversations=list(reversed(cap["conversations"])))
  _bad(enc, swapped, "malformed conversation")
  blank = dict(cap, conversations=[cap["conversations"][0], {"from": "gpt", "value": "  "}])
  _bad(enc, blank, "malformed conversation")


def test_stack_and_nest():
  a = {"x": np.zeros(3), "g/m": np.ones(2)}
  b = VE.nest(VE.stack([a, a]))
  assert b["x"].shape == (2, 3) and b["g"]["m"].shape == (2, 2)
  with pytest.raises(ValueError, match="no examples"):
    VE.stack([])
  with pytest.raises(ValueError, match="uint8"):
    VE.clip_pixels(np.zeros((4, 4, 3), np.float32))


def test_region_boxes_write_each_roi_as_its_box(tok, full):
  """`layout.region_boxes`: every <roi> is preceded by its mask's box as 4 location tokens
  (Ferret's hybrid region); where the answer's invocation repeats a drawn box (a generated
  object in <roi>, an edit to <roi>), those are the very tokens it must write."""
  vcfg, plain = full
  enc = VE.VitronEncoder(tok, VE.Layout.from_config(vcfg, seq_len=144, videos=True,
                                                   max_regions=3, system="",
                                                   region_boxes=True))
  pids = protocol_ids(tok)
  loc_of = {i: q for q, i in enumerate(pids.locs)}
  world = PixelWorld(WORLD, split="heldout")
  seen, copies = {}, 0
  for task in ("text_to_image", "image_edit", "ref_seg", "region_caption", "video_seg"):
    for i in range(40):
      s = world.sample(i, task=task)
      if not s["regions"]:
        continue
      ex = _check_example(tok, vcfg, enc, s)
      ids = ex["input_ids"]
      n_user = int(np.flatnonzero(ex["loss_mask"])[0])
      roi = np.flatnonzero(ids[:n_user] == pids.roi)[::vcfg.frontend.region_token_count]
      assert len(roi) == len(s["regions"])
      boxes = []
      for k, j in enumerate(roi):
        q = [loc_of.get(int(t)) for t in ids[j - 4:j]]
        assert None not in q, f"{s['id']}: no box before <roi> {k}"
        m = np.asarray(s["regions"][k]["mask"]).reshape((-1, 32, 32)).any(0)
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        want = (cols[0] / 32, rows[0] / 32, (cols[-1] + 1) / 32, (rows[-1] + 1) / 32)
        np.testing.assert_allclose([T.dequantize(v) for v in q], want, atol=1e-3)
        boxes.append(tuple(q))
      seen[task] = seen.get(task, 0) + 1
      inv = inv_lib.find_invocation(s["conversations"][1]["value"])
      if task in ("text_to_image", "image_edit") and inv is not None and inv.boxes:
        asked = {tuple(T.quantize(v) for v in b) for b in inv.boxes}
        assert set(boxes) <= asked, s["id"]  # the drawn boxes are boxes the answer writes
        copies += 1
      # without region_boxes the same prompt holds no location token before its answer
      ex0 = plain(s)
      assert not np.isin(ex0["input_ids"][:int(np.flatnonzero(ex0["loss_mask"])[0])],
                         pids.locs).any()
  assert set(seen) == {"text_to_image", "image_edit", "ref_seg", "region_caption",
                       "video_seg"}, seen
  assert copies > 5
  # the prompt (chat / evaluation) writes the same boxes
  s = next(world.sample(i, task="text_to_image") for i in range(40)
           if world.sample(i, task="text_to_image")["regions"])
  p = enc.prompt(s)["input_ids"]
  assert np.isin(p, pids.locs).sum() == 4 * len(s["regions"])
  bad = copy.deepcopy(s)
  bad["regions"][0]["mask"] = np.zeros_like(bad["regions"][0]["mask"])
  err = _bad(enc, bad, "bad region")
  assert "region 0" in str(err) and "empty mask" in str(err)
