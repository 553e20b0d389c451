"""Chat with a VITRON trained in the test (`vitron_jax.serve`, `vitron-chat`), and its export to
PyTorch (`vitron-convert export vitron`): the LLM, the vision tower and the heads reload with
the PyTorch classes and give our numbers."""
import json
import os
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest

from train_runs import ROOT, child_env, run_train
from vitron_jax.data.pixelworld import PixelWorld
from vitron_jax.protocol import invocation as I

CONFIG = str(ROOT / "experiments" / "pixelworld.py") + ":quick_gen"
TURNS = ("Describe this image.", "Segment the red circle.", "Generate an image of a blue square.",
         "Make the red circle green.")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  wd = tmp_path_factory.mktemp("chat_run")
  run_train(wd, "--config.train.steps=3", "--config.optim.warmup_steps=1",
            "--config.data.global_batch=4",
            "--config.stages.s1_vision.train.steps=2", "--config.stages.s1_vision.data.global_batch=4",
            "--config.stages.s1_vision.optim.warmup_steps=1",
            "--config.stages.s0_segmenter.train.steps=2",
            "--config.stages.s0_segmenter.data.global_batch=4",
            "--config.stages.s0_segmenter.optim.warmup_steps=1",
            "--config.stages.s0_generator.train.steps=2",
            "--config.stages.s0_generator.data.global_batch=4",
            "--config.stages.s0_generator.optim.warmup_steps=1",
            "--config.stages.s0_generator.model.generator.steps=2",
            "--config.stages.s0_editor.train.steps=2",
            "--config.stages.s0_editor.data.global_batch=4",
            "--config.stages.s0_editor.optim.warmup_steps=1",
            "--config.stages.s0_editor.model.editor.steps=2",
            "--config.checkpoint.every_steps=3", "--config.train.eval_at_end=False",
            "--config.log.tensorboard=False", "--config.log.png=False", devices=1,
            config=CONFIG, timeout=1200)
  return wd


@pytest.fixture(scope="module")
def bot(workdir):
  from vitron_jax.serve import Vitron
  return Vitron.load(str(workdir))


def _image(bot):
  world = PixelWorld(bot.task.world_config, split="heldout")
  return world.sample(0, task="image_caption")["images"][0]


def test_multi_turn_chat(bot):
  img = _image(bot)
  messages = []
  for text in TURNS:
    messages.append({"role": "user", "content": text})
    reply = bot.chat(messages, images=[img], max_new_tokens=12)
    assert isinstance(reply.text, str)
    # the reply is consistent with the parser, whatever the (barely trained) model said
    assert reply.invocation == I.find_invocation(reply.text.split("\n[")[0]) or isinstance(
        reply.invocation, I.InvocationError)
    messages.append({"role": "assistant", "content": reply.text or "."})
  assert bot.turn == len(TURNS)


def test_long_history_is_trimmed_with_a_note(bot):
  img = _image(bot)
  long_answer = " ".join(["the red circle is left of the blue square ."] * 3)
  msgs = [{"role": "user", "content": "Describe this image."}]
  for _ in range(4):
    msgs += [{"role": "assistant", "content": long_answer},
             {"role": "user", "content": "Describe this image."}]
  sample, dropped = bot.fitted_sample(msgs, images=[img])
  assert dropped > 0 and dropped % 2 == 0
  assert len(sample["conversations"]) == len(msgs) - dropped
  assert sample["conversations"][0]["value"].startswith("<image>")   # media stay with message 0
  reply = bot.chat(msgs, images=[img], max_new_tokens=4)
  assert f"dropped the {dropped} oldest turns" in reply.note


def test_invocation_runs_backend_and_malformed_is_text(bot, tmp_path, monkeypatch):
  calls = []

  def fake_backend(inv, ctx):
    calls.append((inv, ctx["sample"]["images"][0].shape))
    path = os.path.join(ctx["out_dir"], f"turn{ctx['turn']}.png")
    PIL.Image.fromarray(ctx["sample"]["images"][0]).save(path)
    return [path]

  bot.backends["segment_image"] = fake_backend
  bot.out_dir = str(tmp_path)
  img = _image(bot)
  msgs = [{"role": "user", "content": "Segment the red circle."}]
  answers = iter(["Sure. <inv><seg_image><cmd>the red circle</cmd></inv>",
                  "Sure. <inv><seg_image><cmd>the red circle</cmd><region><loc0001></region></inv>",
                  "Sure. <inv><seg_video><cmd>the red circle</cmd></inv>"])
  real_answer = bot.task.answer
  signal = real_answer(bot.params, [bot.sample_of(msgs, [img])], batch_size=1,
                       max_new_tokens=2, with_signals=True)[1][0]
  monkeypatch.setattr(bot.task, "answer", lambda *a, **k: ([next(answers)], [signal]))
  ok = bot.chat(msgs, images=[img])
  assert ok.invocation.module == "segment_image" and ok.note == "ran segment_image"
  assert ok.files and os.path.isfile(ok.files[0]) and calls[0][1] == img.shape
  bad = bot.chat(msgs, images=[img])
  assert isinstance(bad.invocation, I.InvocationError)
  assert "could not be parsed" in bad.text and bad.invocation.kind in bad.text
  missing = bot.chat(msgs, images=[img])
  assert "no backend loaded for module 'segment_video'" in missing.note
  del bot.backends["segment_image"]


def test_the_runs_segmenter_is_built_in(bot, tmp_path, monkeypatch):
  bot.out_dir = str(tmp_path)
  img = _image(bot)
  msgs = [{"role": "user", "content": "Segment the red circle."}]
  box = I.normalize_box((4, 4, 20, 20), 32, 32)
  answer = ("Sure. <inv><seg_image><cmd>the red circle</cmd><region>"
            f"{I.box_to_loc_tokens(box)}</region></inv>")
  k = bot.task.vcfg.head.num_queries[bot.task.vcfg.head.index("segment_image")]
  signal = (np.ones((bot.task.vcfg.head.k_max, bot.task.vcfg.llm.hidden_size), np.float32),
            np.arange(bot.task.vcfg.head.k_max) < k, bot.task.vcfg.head.index("segment_image"))
  monkeypatch.setattr(bot.task, "answer", lambda *a, **k: ([answer], [signal]))
  reply = bot.chat(msgs, images=[img])
  assert reply.note == "ran segment_image (built in; box and signals)", reply.note
  mask_png, overlay_png = reply.files
  mask = np.asarray(PIL.Image.open(mask_png))
  assert mask.shape == img.shape[:2] and set(np.unique(mask)) <= {0, 255}
  assert PIL.Image.open(overlay_png).size == (4 * 32, 4 * 32)
  no_image = bot.chat([{"role": "user", "content": "Segment the red circle."}])
  assert "needs exactly one image" in no_image.note and not no_image.files


def test_the_runs_generator_is_built_in(bot, tmp_path, monkeypatch):
  bot.out_dir = str(tmp_path)
  box = I.normalize_box((4, 4, 20, 20), 32, 32)
  answers = iter([
      "Here it is. <inv><gen_image><cmd>a blue square on a white background</cmd></inv>",
      ("Here it is. <inv><gen_image><cmd>a blue square on a white background</cmd><region>"
       f"{I.box_to_loc_tokens(box)}</region></inv>"),
      ("Here it is. <inv><gen_image><cmd>a blue square and a ring on a white background</cmd>"
       f"<region>{I.box_to_loc_tokens(box)}</region></inv>")])
  head = bot.task.vcfg.head
  k = head.num_queries[head.index("generate_image")]
  signal = (np.ones((head.k_max, bot.task.vcfg.llm.hidden_size), np.float32),
            np.arange(head.k_max) < k, head.index("generate_image"))
  monkeypatch.setattr(bot.task, "answer", lambda *a, **kw: ([next(answers)], [signal]))
  for grounded in (False, True):
    reply = bot.chat([{"role": "user", "content": "Draw a blue square."}])
    assert reply.note == "ran generate_image (built in; command, boxes and signals)", reply.note
    (png,) = reply.files
    assert png.endswith(f"turn{bot.turn}_generate_image.png")
    assert np.asarray(PIL.Image.open(png)).shape == (32, 32, 3), grounded
  # two phrases for one box: the generator cannot ground it, and says so
  bad = bot.chat([{"role": "user", "content": "Draw a blue square."}])
  assert "generate_image not run" in bad.note and not bad.files


def _edit_signal(bot):
  head = bot.task.vcfg.head
  k = head.num_queries[head.index("edit_image")]
  return (np.ones((head.k_max, bot.task.vcfg.llm.hidden_size), np.float32),
          np.arange(head.k_max) < k, head.index("edit_image"))


def test_the_runs_editor_is_built_in(bot, tmp_path, monkeypatch):
  bot.out_dir = str(tmp_path)
  monkeypatch.setattr(bot.task, "grounder", None)  # the boxes as the LLM wrote them
  img = _image(bot)
  box = I.normalize_box((4, 4, 20, 20), 32, 32)
  answers = iter([
      ("Done. <inv><edit_image><cmd>make the red circle green</cmd><region>"
       f"{I.box_to_loc_tokens(box)}</region></inv>"),
      "Done. <inv><edit_image><cmd>make the red circle green</cmd></inv>"])
  signal = _edit_signal(bot)
  monkeypatch.setattr(bot.task, "answer", lambda *a, **kw: ([next(answers)], [signal]))
  msgs = [{"role": "user", "content": "Make the red circle green."}]
  reply = bot.chat(msgs, images=[img])
  assert reply.note == ("ran edit_image (built in; command, boxes, the conversation's image "
                        "and signals)"), reply.note
  (png,) = reply.files
  assert png.endswith(f"turn{bot.turn}_edit_image.png")
  edited = np.asarray(PIL.Image.open(png))
  from vitron_jax.train.editor import edit_region
  keep = ~edit_region([box], 32)
  np.testing.assert_array_equal(edited[keep], img[keep])  # only the box is repainted
  # no box: nothing says where to edit, and the reply says the editor did not run
  bad = bot.chat(msgs, images=[img])
  assert "edit_image not run" in bad.note and not bad.files


def test_the_segmenter_finds_what_an_edit_names(bot, tmp_path, monkeypatch):
  """With `task.ground_with_segmenter` the editor repaints where the segmenter finds the
  object the command names, not where the LLM's box points; the reply keeps the LLM's text."""
  from vitron_jax.train.editor import edit_region
  from vitron_jax.train.phrase_grounding import PhraseGrounder
  bot.out_dir = str(tmp_path)
  img = _image(bot)
  llm_box, found = I.normalize_box((0, 0, 8, 8), 32, 32), I.normalize_box((16, 16, 30, 30), 32, 32)
  grounder = PhraseGrounder(bot.task.backends["segment_image"])
  phrases = []
  monkeypatch.setattr(grounder, "find", lambda p, ims, ps: phrases.extend(ps) or [found])
  monkeypatch.setattr(bot.task, "grounder", grounder)
  text = ("Done. <inv><edit_image><cmd>make the red circle green</cmd><region>"
          f"{I.box_to_loc_tokens(llm_box)}</region></inv>")
  monkeypatch.setattr(bot.task, "answer", lambda *a, **kw: ([text], [_edit_signal(bot)]))
  reply = bot.chat([{"role": "user", "content": "Make the red circle green."}], images=[img])
  assert phrases == ["the red circle"] and reply.text == text
  assert reply.note.endswith("the boxes of what it names found by segment_image"), reply.note
  edited = np.asarray(PIL.Image.open(reply.files[0]))
  keep = ~edit_region([found], 32)
  np.testing.assert_array_equal(edited[keep], img[keep])  # repainted in the found box only
  assert not np.array_equal(edited, img)


def test_bad_chat_input(bot):
  img = _image(bot)
  with pytest.raises(ValueError, match="ending with a user message"):
    bot.chat([{"role": "assistant", "content": "hi"}], images=[img])
  with pytest.raises(ValueError, match="alternate"):
    bot.chat([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
  with pytest.raises(ValueError, match=r"images\[0\] must be a uint8"):
    bot.chat([{"role": "user", "content": "hi"}], images=[np.zeros((5, 5, 3), np.uint8)])


def test_load_needs_a_run(tmp_path):
  from vitron_jax.serve import Vitron
  with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
    Vitron.load(str(tmp_path))


def test_vitron_chat_cli(workdir, bot, tmp_path):
  img_path = tmp_path / "scene.png"
  PIL.Image.fromarray(_image(bot)).save(img_path)
  args = [sys.executable, "-m", "vitron_jax.serve.chat_cli", f"--workdir={workdir}",
          f"--image={img_path}", "--max_new_tokens=8", f"--out_dir={tmp_path / 'out'}"]
  args += [f"--say={t}" for t in TURNS]
  proc = subprocess.run(args, cwd=ROOT, env=child_env(1), capture_output=True, text=True,
                        timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  for t in TURNS:
    assert f"USER: {t}" in proc.stdout
  assert proc.stdout.count("VITRON:") == len(TURNS)


def test_export_reloads_in_pytorch(workdir, bot, tmp_path):
  torch = pytest.importorskip("torch")
  import transformers
  import jax.numpy as jnp
  from vitron_jax.convert import torch_heads
  from vitron_jax.convert.cli import main as convert_main
  dst = tmp_path / "export"
  assert convert_main(["export", "vitron", str(workdir), str(dst)]) == 0
  vcfg, params = bot.task.vcfg, bot.params
  # LLM
  ids = np.array([[1, 5, 9, 40, 300, 7]], np.int64)
  ours = np.asarray(bot.task.model.apply({"params": params}, {"input_ids": jnp.asarray(ids)},
                                         method=lambda m, b: m.llm(b["input_ids"])))
  hf = transformers.LlamaForCausalLM.from_pretrained(dst / "llm").eval()
  with torch.no_grad():
    theirs = hf(torch.from_numpy(ids)).logits.numpy()
  np.testing.assert_allclose(ours, theirs, atol=2e-4, rtol=1e-4)
  # vision tower
  from vitron_jax.models.clip import CLIPVisionModel
  s = vcfg.frontend.vision.image_size
  pix = np.random.default_rng(0).normal(size=(1, s, s, 3)).astype(np.float32)
  ours = np.asarray(CLIPVisionModel(vcfg.frontend.vision).apply(
      {"params": params["frontend"]["vision_tower"]}, jnp.asarray(pix)).last_hidden_state)
  clip = transformers.CLIPVisionModel.from_pretrained(dst / "vision").eval()
  with torch.no_grad():
    theirs = clip(pixel_values=torch.from_numpy(pix.transpose(0, 3, 1, 2))).last_hidden_state
  np.testing.assert_allclose(ours, theirs.numpy(), atol=2e-4, rtol=1e-4)
  # heads and tokenizer
  head = torch_heads.HybridHead.from_folder(dst / "heads")
  assert sum(p.numel() for p in head.parameters()) > 0
  tok = transformers.AutoTokenizer.from_pretrained(dst / "tokenizer")
  assert len(tok) == len(bot.task.tokenizer)
  meta = json.loads((dst / "vitron.json").read_text())
  assert tuple(meta["head"]["modules"]) == vcfg.head.modules
  # the attached segmenter: SAM as a transformers folder, box-prompted masks as ours
  seg_dir = dst / "backends" / "segment_image"
  att = bot.task.backends["segment_image"]
  bp = params["backends"]["segment_image"]
  inp = att.segmenter.backend.preprocess(_image(bot)[None], boxes=np.float32([[[4, 6, 20, 24]]]))
  ours = att.segmenter.backend.run(bp, inp, None)
  sam = transformers.SamModel.from_pretrained(seg_dir / "sam").eval()
  with torch.no_grad():
    theirs = sam(pixel_values=torch.from_numpy(np.array(inp["pixel_values"]).transpose(
        0, 3, 1, 2)), input_boxes=torch.from_numpy(np.array(inp["boxes"])),
        multimask_output=False)
  np.testing.assert_allclose(np.asarray(ours["low_res_masks"]), theirs.pred_masks[:, :, 0].numpy(),
                             atol=2e-4, rtol=1e-4)
  np.testing.assert_allclose(np.asarray(ours["scores"]), theirs.iou_scores[:, :, 0].numpy(),
                             atol=2e-4, rtol=1e-4)
  from safetensors.numpy import load_file
  own = load_file(seg_dir / "own.safetensors")
  assert own["text_encoder/token_embedding/embedding"].shape[0] == len(bot.task.tokenizer)
  np.testing.assert_array_equal(own["prompts/text_projection/queries"],
                                np.asarray(bp["prompts"]["text_projection"]["queries"]))
  assert json.loads((seg_dir / "segmenter.json").read_text())["text_len"] == att.segmenter.text_len
  # the attached generator: diffusers UNet and transformers CLIP text encoder give our numbers
  import diffusers
  gen_dir = dst / "backends" / "generate_image"
  g = bot.task.backends["generate_image"].generator
  gp = params["backends"]["generate_image"]
  x = g.inputs("a blue square and a red ring on a white background",
               ((0.1, 0.1, 0.5, 0.5), (0.5, 0.4, 0.9, 0.9)))
  ids = x["command_ids"][None]
  text = g.models.text_encoder.apply({"params": gp["text_encoder"]}, jnp.asarray(ids))
  clip = transformers.CLIPTextModel.from_pretrained(gen_dir / "text_encoder").eval()
  with torch.no_grad():
    ht = clip(torch.from_numpy(ids.astype(np.int64)))
  np.testing.assert_allclose(np.asarray(text.last_hidden_state), ht.last_hidden_state.numpy(),
                             atol=2e-4, rtol=1e-4)
  phrases = g.models.text_encoder.apply({"params": gp["text_encoder"]},
                                        jnp.asarray(x["phrase_ids"][:2])).pooler_output
  with torch.no_grad():
    hp = clip(torch.from_numpy(x["phrase_ids"][:2].astype(np.int64))).pooler_output
  np.testing.assert_allclose(np.asarray(phrases), hp.numpy(), atol=2e-4, rtol=1e-4)
  from vitron_jax.backends.diffusion.gligen import GligenInputs
  n, c = g.max_phrases, g.models.latent_channels
  noisy = np.random.default_rng(1).normal(size=(1, g.latent_size, g.latent_size, c))
  boxes = np.zeros((1, n, 4), np.float32)
  boxes[0, :2] = x["boxes"][:2]
  emb = np.zeros((1, n, phrases.shape[-1]), np.float32)
  emb[0, :2] = np.asarray(phrases)
  mask = np.float32([[1, 1] + [0] * (n - 2)])
  # the UNet's input: the noisy pixels, then the grounding drawn as channels
  layout = g.models.layout(GligenInputs(jnp.asarray(boxes), jnp.asarray(emb), jnp.asarray(mask)),
                           jnp.asarray(noisy))
  assert layout.shape[-1] == g.models.layout_channels > 0
  sample = np.concatenate([noisy, np.asarray(layout)], axis=-1)
  ours = g.models.unet.apply({"params": gp["unet"]}, jnp.asarray(sample, jnp.float32),
                             jnp.asarray([500.0]), text.last_hidden_state,
                             gligen=GligenInputs(jnp.asarray(boxes), jnp.asarray(emb),
                                                 jnp.asarray(mask)))
  unet = diffusers.UNet2DConditionModel.from_pretrained(gen_dir / "unet").eval()
  with torch.no_grad():
    theirs = unet(torch.from_numpy(sample.transpose(0, 3, 1, 2)).float(), 500,
                  encoder_hidden_states=ht.last_hidden_state,
                  cross_attention_kwargs={"gligen": {
                      "boxes": torch.from_numpy(boxes), "positive_embeddings":
                      torch.from_numpy(emb), "masks": torch.from_numpy(mask)}}).sample
  np.testing.assert_allclose(np.asarray(ours), theirs.numpy().transpose(0, 2, 3, 1),
                             atol=2e-4, rtol=1e-4)
  meta = json.loads((gen_dir / "generator.json").read_text())
  assert meta["pixel_patch"] == g.models.pixel_patch and meta["eot_token_id"] == g.eot
  assert meta["grounding_layout"] and "phrase" in meta["layout"]
  sched = diffusers.DDIMScheduler.from_pretrained(gen_dir / "scheduler")
  assert sched.config.num_train_timesteps == 1000
  # the attached editor: a diffusers inpainting UNet (noisy pixels, mask, masked source, whole
  # source)
  edit_dir = dst / "backends" / "edit_image"
  e = bot.task.backends["edit_image"].backend
  ep = params["backends"]["edit_image"]
  c_in = e.models.unet.config.in_channels
  sample = np.random.default_rng(2).normal(size=(1, e.latent_size, e.latent_size, c_in))
  ids = e.command_ids("make the red circle green")[None]
  text = e.models.text_encoder.apply({"params": ep["text_encoder"]}, jnp.asarray(ids))
  ours = e.models.unet.apply({"params": ep["unet"]}, jnp.asarray(sample, jnp.float32),
                             jnp.asarray([300.0]), text.last_hidden_state)
  unet = diffusers.UNet2DConditionModel.from_pretrained(edit_dir / "unet").eval()
  assert unet.config.in_channels == c_in == 3 * e.models.latent_channels + 1 + \
      e.models.layout_channels
  clip = transformers.CLIPTextModel.from_pretrained(edit_dir / "text_encoder").eval()
  with torch.no_grad():
    ht = clip(torch.from_numpy(ids.astype(np.int64))).last_hidden_state
    theirs = unet(torch.from_numpy(sample.transpose(0, 3, 1, 2)).float(), 300,
                  encoder_hidden_states=ht).sample
  np.testing.assert_allclose(np.asarray(text.last_hidden_state), ht.numpy(), atol=2e-4,
                             rtol=1e-4)
  np.testing.assert_allclose(np.asarray(ours), theirs.numpy().transpose(0, 2, 3, 1),
                             atol=2e-4, rtol=1e-4)
  edit_meta = json.loads((edit_dir / "editor.json").read_text())
  assert "max_phrases" not in edit_meta and "command" in edit_meta["layout"]
  assert edit_meta["concat"].startswith(e.concat_description) and "whole source" in \
      edit_meta["concat"]
