"""VITRON on PixelWorld: every task cluster of the built-in world, trained and evaluated.

    vitron-train --config=experiments/pixelworld.py:quick --workdir=/tmp/pw_quick
    vitron-train --config=experiments/pixelworld.py --workdir=/tmp/pw          # all tasks, longer
    vitron-train --config=experiments/pixelworld.py:segmenter --workdir=/tmp/pw_seg
    vitron-train --config=experiments/pixelworld.py:generator --workdir=/tmp/pw_gen
    vitron-train --config=experiments/pixelworld.py:editor --workdir=/tmp/pw_edit

"quick": the tiny model (`vitron_tiny.py`), 32 px images, the image tasks but grounded QA
(`QUICK_UNDERSTAND` weighted 3:1 against `QUICK_INVOKE`); stages `s0_segmenter` (300 steps of
the segmentation backend: box / command text -> mask) and `s1_vision` (500 contrastive + dense
steps of the vision tower), then 800 VITRON steps of 64 rows with the frozen segmenter in the
step (`model.segmenter`: its mask loss on up to `task.backend_rows.segment_image` rows a step).
Evaluated on the `val` split (unseen samples: did it learn the tasks?) and then on `heldout`
(unseen colour-shape combinations on the object each sample is about: does it generalise?);
row `ref_seg_masks` scores the masks the segmenter makes from the free-running answers.
"quick_gen": quick plus the image generator (`model.generator`, stage `s0_generator`: 3000
steps of the GLIGEN pixel-space UNet, task `pixelworld_generator`) frozen in the step, its
denoising loss on up to `task.backend_rows.generate_image` rows; row `t2i_images` scores the
images it makes from the answers (colour right, object inside the requested box); and the image
editor (`model.editor`, stage `s0_editor`: 3000 steps of the pixel-space inpainting UNet, task
`pixelworld_editor`), its denoising loss on up to `task.backend_rows.edit_image` rows; row
`edit_images` scores the images it edits from the answers (the named object changed as asked,
the rest kept). Not in quick: the two 3000-step stages would take quick past its few minutes
(BUILD_NOTES.md).
"" (default): all tasks including videos (2 frames), 32 px, longer, the image segmenter,
generator and editor and the three video backends in the step; before the main run, stage
`s2_grounding` (`grounding_stage`: the LLM on `ref_box` and `video_grounding` alone, from
stage `s1_vision`'s tower); a fifth of the main run's rows are repeat drills
(`data.repeat_drill`: the LLM copies lists of objects back, so that its commands copy the
prompt), a fifth text -> video and image -> video (so that its plans move the objects) and a
fifth box drills (drawn regions copied back as location tokens: every <roi> of a prompt is
written as its box's tokens too, `task.region_boxes`, so that a generation "in <roi>" or an
edit "to <roi>" copies the box); evaluated on `heldout`.
"segmenter" / "generator" / "editor": stage s0_segmenter / s0_generator / s0_editor alone.
"llm" / "llm_plain": the full job's main run with no backend and no stage, 1000 steps, with its
data mix or the PixelWorld tasks alone (`llm_config`).
Everything trains, the vision tower included (PixelWorld has no pretrained weights). Every
trained subtask is scored from free-running greedy answers with its primary metric beside that
metric's chance level (`eval.answers`).
Sweep (`get_sweep`): routing modes text / embedding / hybrid / superlink and synergy off, the
DESIGN.md §3 ablations.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import phase_data  # noqa: E402

import ml_collections  # noqa: E402

from vitron_jax.train.defaults import base_config  # noqa: E402
from vitron_jax.train.vitron_backends import ATTACHMENTS, VIDEO_ATTACHMENTS  # noqa: E402

#: the segmentation backend at PixelWorld size (TINY_BACKENDS takes its condition shape from it);
#: its own command encoder (64 wide, commands up to 16 tokens) gives the native condition;
#: 4-px patches: 2-px ones segment better (held-out IoU 0.55 vs 0.38 after 300 steps) but the
#: quick run's captions then fell below chance (BUILD_NOTES.md)
TINY_SEGMENTER = dict(patch_size=4, hidden=32, width=16, layers=2, window=4, num_signal_tokens=4,
                      text_dim=64, text_len=16)
_SEG_CONDITION = (TINY_SEGMENTER["num_signal_tokens"], TINY_SEGMENTER["width"])
#: the full job's segmenter is 64 wide: SAM's masks are the dot product of a hypernetwork
#: vector with the upscaled embedding in width / 8 channels, and 2 channels (width 16) held
#: held-out mask IoU near 0.5; at 64 the stage reaches the 0.7 bar (BUILD_NOTES.md). `:quick`
#: keeps 16: its captions fell below chance with the wider condition
FULL_SEG_WIDTH = 64

#: the image generation backend at PixelWorld size (`train.generator`): 4-px pixel patches (an
#: 8 x 8 grid), a 64/64 GLIGEN UNet predicting the clean image, a 2-layer 32-wide CLIP text
#: encoder (commands up to 30 words), object pixels weighted 5x in the loss, the boxes and
#: their phrases drawn as input channels (`layout`) and sampled without classifier-free
#: guidance (1.0: with the layout, guidance 1.5 drew fewer objects in their boxes; BUILD_NOTES)
TINY_GENERATOR = dict(pixel_patch=4, channels=(64, 64), conv_blocks=1, layers_per_block=1,
                      heads=4, text_width=32, text_layers=2, text_len=32, phrase_len=6,
                      max_phrases=4, steps=25, guidance=1.0, gligen_beta=1.0,
                      condition_dropout=0.1, object_weight=5.0, prediction="sample",
                      min_snr_gamma=0.0, gate_init=1.0, layout=True)

#: the image editing backend at PixelWorld size (`train.editor`): the generator's UNet and text
#: encoder sizes, as an inpainting UNet (the source outside the invocation's boxes is an input)
TINY_EDITOR = dict(pixel_patch=4, channels=(64, 64), conv_blocks=1, layers_per_block=1,
                   heads=4, text_width=32, text_layers=2, text_len=32, steps=25, guidance=1.5,
                   condition_dropout=0.1, object_weight=5.0, prediction="sample",
                   min_snr_gamma=0.0)

#: the video backends at PixelWorld size (`train.video_diffusion`): the image generator's sizes
#: as a pixel-space UNet3D (temporal convolutions and attention mix the frames); commands up to
#: 34 tokens (three moving objects on a curve: 33)
TINY_VIDEO = dict(pixel_patch=4, channels=(64, 64), conv_blocks=1, layers_per_block=1, heads=4,
                  text_width=32, text_len=36, steps=25, guidance=1.0, condition_dropout=0.1,
                  object_weight=5.0, prediction="sample", min_snr_gamma=0.0)


#: ... and the text -> video and image -> video ones also take the clip's layout from their
#: invocation: each object's box in every frame, drawn frame by frame as input channels
#: (`LayoutVideoBackend`, `FirstFrameLayoutVideoBackend`)
TINY_VIDEO_GENERATOR = dict(TINY_VIDEO, layout=True, max_phrases=4, phrase_len=6)


def _text_condition(fields: dict) -> tuple[int, int]:
  """A diffusion backend's native condition shape: its text encoder's `[text_len, width]`."""
  return (fields["text_len"], fields["text_width"])


# K query slots and condition shapes of the tiny backends (vitron_jax.backends at tiny size)
TINY_BACKENDS = {
    "segment_image": {"num_queries": 2, "condition_shape": _SEG_CONDITION},  # TINY_SEGMENTER's
    "segment_video": {"num_queries": 2, "condition_shape": _SEG_CONDITION},
    "generate_image": {"num_queries": 4, "condition_shape": _text_condition(TINY_GENERATOR)},
    "edit_image": {"num_queries": 4, "condition_shape": _text_condition(TINY_EDITOR)},
    "generate_video": {"num_queries": 4, "condition_shape": _text_condition(TINY_VIDEO)},
    "image_to_video": {"num_queries": 4, "condition_shape": _text_condition(TINY_VIDEO)},
    "edit_video": {"num_queries": 4, "condition_shape": _text_condition(TINY_VIDEO)},
}
IMAGE_MODULES = ("segment_image", "generate_image", "edit_image")
#: the full job's repeat drills against 1.0 for all PixelWorld tasks (a quarter of the rows;
#: at 0.2 the held-out commands came out right less often: text -> image 0.41, text -> video
#: 0.59, against 0.75 / 0.81 at 0.5 without PLAN_WEIGHT; BUILD_NOTES.md)
DRILL_WEIGHT = 0.5
#: the tasks whose answers plan a clip's layout, and the weight of their second source in the
#: full job (another quarter of the rows; at 0.25 the held-out plans moved 0.41 / 0.51 of the
#: objects as asked, at 0.5 0.67 / 0.69; BUILD_NOTES.md)
PLAN_TASKS = ("text_to_video", "image_to_video")
PLAN_WEIGHT = 0.5
#: the full job's box drills (`data.repeat_drill` "boxes": copy drawn regions back as location
#: tokens; needs `task.region_boxes`). LLM-only, 3000 steps, held-out text -> image answers with
#: drawn regions whose boxes match: 0.94 / 0.38 / 0.34 at 0.5 (three seeds), 0.33 at 1.0 (one);
#: 0 of 9 without drills at 1000 steps (BUILD_NOTES.md)
BOX_DRILL_WEIGHT = 0.5
QUICK_UNDERSTAND = ("image_caption", "image_qa", "region_caption", "ref_box")
QUICK_INVOKE = ("ref_seg", "text_to_image", "image_edit")


ARGS = ("", "quick", "quick_gen", "segmenter", "generator", "editor", "video_generator",
        "video_animator", "video_editor", "llm", "llm_plain")
#: the video backends' config fields under `model` -> (their module, their stage)
VIDEO_BACKENDS = {"video_generator": ("generate_video", "s0_video_generator"),
                  "video_animator": ("image_to_video", "s0_video_animator"),
                  "video_editor": ("edit_video", "s0_video_editor")}


def get_config(arg: str = ""):
  if arg not in ARGS:
    raise ValueError(f"pixelworld: argument must be one of {ARGS}, got {arg!r}")
  if arg == "segmenter":  # the segmentation backend's pretraining alone (stage s0 of quick)
    return get_config("quick").stages.s0_segmenter
  if arg == "generator":  # the image generation backend's pretraining alone (stage s0)
    return get_config("quick_gen").stages.s0_generator
  if arg == "editor":  # the image editing backend's pretraining alone (stage s0)
    return get_config("quick_gen").stages.s0_editor
  if arg in VIDEO_BACKENDS:  # a video backend's pretraining alone (stage s0 of the full job)
    return get_config("").stages[VIDEO_BACKENDS[arg][1]]
  if arg in ("llm", "llm_plain"):  # the full job's main run without backends or stages
    return llm_config(get_config(""), plain=arg == "llm_plain")
  quick = arg in ("quick", "quick_gen")
  # the image generator and editor join the step in the full job and in quick_gen, not in
  # quick: their 3000-step stages would take it past its few minutes (BUILD_NOTES.md)
  with_diffusion = arg != "quick"
  c = phase_data.phase_config("3", "tiny")
  # quick: the image tasks but grounded QA (boxes of 4-8 px objects at IoU >= 0.5 and "there
  # is none" answers are not learned in minutes on 2 cores; BUILD_NOTES.md), understanding
  # three times the weight of the invocation tasks, which are learned first
  # the full job: every task; repeat drills (`data.repeat_drill`: copy a random list of
  # PixelWorld objects back), so that the LLM copies the prompt's words into its commands; and
  # the two tasks whose answers plan a clip's layout once more, so that it learns to move the
  # boxes as asked (LLM-only, 1000 steps, held-out: commands right, text -> image 0.34 -> 0.91,
  # text -> video 0.19 -> 0.94; plans moving the objects as asked, text -> video 0.20 -> 0.67,
  # image -> video 0.18 -> 0.69, chance 0.2; BUILD_NOTES.md); and box drills, so that it copies
  # a drawn region's box (written as location tokens, `task.region_boxes` below) into its
  # invocation
  c.data.sources = ((("pixelworld", ",".join(QUICK_UNDERSTAND), 3.0),
                     ("pixelworld", ",".join(QUICK_INVOKE), 1.0)) if quick
                    else (("pixelworld", None, 1.0), ("repeat", "phrases", DRILL_WEIGHT),
                          ("pixelworld", ",".join(PLAN_TASKS), PLAN_WEIGHT),
                          ("repeat", "boxes", BOX_DRILL_WEIGHT)))
  c.data.pixelworld = ml_collections.ConfigDict(dict(
      image_size=32, num_frames=2, max_objects=3, seed=0))
  modules = IMAGE_MODULES if quick else tuple(TINY_BACKENDS)
  c.model.head.backends = {m: TINY_BACKENDS[m] for m in modules}
  c.model.llm.num_hidden_layers = 2 if quick else 4
  c.task.tokenizer = "pixelworld"
  c.task.seq_len = 96 if quick else 144
  c.task.system = ""                     # PixelWorld chats carry no system prompt
  c.task.max_regions = 3
  # answers decode under the invocation grammar (`protocol.grammar`, on by default); a region
  # holds at most one box per object and frame (a clip's layout: 3 objects x 2 frames)
  c.task.max_invocation_boxes = c.data.pixelworld.max_objects * c.data.pixelworld.num_frames
  # the full job writes each drawn region as its box's location tokens before its slots
  # (Ferret's hybrid region, `data.vitron_examples`), so that a generated object "in <roi>" or
  # an edit "to <roi>" copies the box into the invocation instead of reading it off the
  # region's pooled features (BUILD_NOTES.md)
  c.task.region_boxes = not quick
  c.task.videos = not quick
  c.optim.trainable = ()                 # everything trains (no pretrained vision tower)
  c.model.frontend.freeze_vision = False  # ... the ViT too (frozen it stays at its random init)
  c.optim.freeze = ()
  c.optim.lr = 3e-3
  c.optim.warmup_steps = 20
  c.optim.weight_decay = 0.0
  c.data.global_batch = 64    # ~200 answer tokens per 16 rows: too little signal per step
  c.train.steps = 800 if quick else 3000
  c.train.log_every = 10
  c.train.eval_every = 0                 # at the end only: evaluations cost minutes here
  c.train.eval_at_end = True
  # quick scores unseen samples of the training distribution first ("val": did it learn the
  # tasks?), then unseen attribute combinations ("heldout": does it generalise?)
  c.eval = ml_collections.ConfigDict(dict(split="val,heldout" if quick else "heldout",
                                          num_samples=448 if quick else 300,
                                          pictures=1, batch_size=16,
                                          # a text -> video answer plans its clip: up to 67
                                          # tokens with three objects' boxes in two frames
                                          max_new_tokens=48 if quick else 72))
  c.checkpoint.every_steps = 100 if quick else 500
  # stages train two at a time, each pinned to one of the 2 cores: ~1.2-1.4x the throughput of
  # one stage alone (a stage's small steps keep ~1.4 cores busy). Quick's two short stages
  # train in turn: a stage on one core computes in another float order, and the quick run's
  # ref_box row (near-constant boxes, at chance +- noise) fell below chance with them (0.042
  # vs 0.048; BUILD_NOTES.md)
  c.train.parallel_stages = 1 if arg == "quick" else 2
  # the image segmenter joins the VITRON step (frozen; pretrained by stage s0), 8 rows a step
  c.model.segmenter = ml_collections.ConfigDict(dict(TINY_SEGMENTER))
  if not quick:
    c.model.segmenter.width = FULL_SEG_WIDTH
    for m in ("segment_image", "segment_video"):  # the condition the head makes follows it
      c.model.head.backends[m].condition_shape = (TINY_SEGMENTER["num_signal_tokens"],
                                                  FULL_SEG_WIDTH)
  # its mask loss at 1/4 (quick, val: QA 0.52 vs 0.42 at 1.0, other rows within noise;
  # BUILD_NOTES.md)
  c.loss.backend = 0.25
  c.task.backend_rows = ml_collections.ConfigDict(dict(segment_image=8))
  if "segment_video" in modules:  # the same SAM tracks the video_seg rows (~2 of 64 a batch)
    c.task.backend_rows.segment_video = 4
  # the segmenter finds the objects that edits and image -> video plans name before their
  # backends run (Grounded-SAM's composition; `train.phrase_grounding`): the full job's finds
  # them at held-out box IoU 0.68-0.75, the LLM's own boxes 0.15-0.3 (BUILD_NOTES.md). Quick
  # attaches no backend whose invocations name objects of the image.
  c.task.ground_with_segmenter = with_diffusion
  c.stages = ml_collections.ConfigDict({"s0_segmenter": segmenter_stage(c, quick),
                                        "s1_vision": vision_stage(c, quick)})
  if with_diffusion:  # the image generator and editor (frozen; pretrained by their s0 stages)
    c.model.generator = ml_collections.ConfigDict(dict(TINY_GENERATOR))
    c.task.backend_rows.generate_image = 8
    c.stages.s0_generator = generator_stage(c, quick)
    c.model.editor = ml_collections.ConfigDict(dict(TINY_EDITOR))
    c.task.backend_rows.edit_image = 8
    c.stages.s0_editor = editor_stage(c, quick)
  if not quick:  # the video backends (frozen; pretrained by their s0 stages)
    for field, (module, stage) in VIDEO_BACKENDS.items():
      c.model[field] = ml_collections.ConfigDict(
          dict(TINY_VIDEO if field == "video_editor" else TINY_VIDEO_GENERATOR))
      c.model[field].num_frames = c.data.pixelworld.num_frames
      c.task.backend_rows[module] = 4
      c.stages[stage] = video_stage(c, field)
    # the LLM learns to place boxes on grounding rows alone before the main run (design phase 2)
    c.stages.s2_grounding = grounding_stage(c)
  return c


def _stage_base(c, task: str, *, steps: int, batch: int, lr: float, warmup: int
                ) -> ml_collections.ConfigDict:
  """What every PixelWorld stage shares: its task, the main run's world, tokenizer and mesh,
  Adam without decay, one checkpoint at the end and an evaluation there."""
  s = base_config()
  s.task.name = task
  s.task.tokenizer = c.task.tokenizer
  s.data.pixelworld = ml_collections.ConfigDict(c.data.pixelworld.to_dict())
  s.data.global_batch = batch
  s.optim.lr = lr
  s.optim.warmup_steps = warmup
  s.optim.weight_decay = 0.0
  s.train.steps = steps
  s.train.log_every = 50
  s.train.eval_at_end = True
  s.eval = ml_collections.ConfigDict(dict(num_samples=64))
  s.checkpoint.every_steps = steps
  s.mesh = ml_collections.ConfigDict(c.mesh.to_dict())
  return s


def vision_stage(c, quick: bool) -> ml_collections.ConfigDict:
  """Stage s1: CLIP-style contrastive pretraining of VITRON's vision tower on PixelWorld
  captions plus dense patch labels (task `pixelworld_clip`); the main run starts from its
  tower. Its fields are its own (`--config.stages.s1_vision.train.steps=...`); the tower's
  shape must match the main run's `model.frontend.vision` (a mismatch is refused by name when
  the main run loads it)."""
  s = _stage_base(c, "pixelworld_clip", steps=500 if quick else 2000, batch=128, lr=2e-3,
                  warmup=30)
  s.task.text_len = 48
  s.model = ml_collections.ConfigDict(dict(
      frontend=dict(vision=c.model.frontend.vision.to_dict()),
      text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4),
      embed_dim=64))
  s.model.frontend.select_layer = c.model.frontend.select_layer  # the layer VITRON reads
  s.loss = ml_collections.ConfigDict(dict(dense=1.0))  # patch colours / shapes (ground truth)
  return s


#: what the grounding stage trains on: the answers that place a box on something seen
GROUNDING_TASKS = ("ref_box", "video_grounding")


def grounding_stage(c) -> ml_collections.ConfigDict:
  """Stage s2: the design's phase 2, grounding before the main run. The main run's LLM and
  frontend, started from stage s1's tower (`checkpoint.init_from_stages`), learn to answer
  boxes on the grounding tasks alone (LM loss; no backends in its step); the main run starts
  from its LLM, frontend and tower. Within the main run's task mix the boxes stay at chance
  (BUILD_NOTES.md, "Where the LLM's boxes fail"): alone, ~2000 steps of 64 rows make them."""
  s = c.copy_and_resolve_references()
  del s["stages"]
  for field in (*ATTACHMENTS, *VIDEO_ATTACHMENTS):  # every backend's config field
    if field in s.model:
      del s.model[field]
  s.task.backend_rows = ml_collections.ConfigDict()
  s.task.ground_with_segmenter = False  # (no segmenter here)
  s.loss.backend = 0.0
  tasks = [t for t in GROUNDING_TASKS if s.task.videos or t != "video_grounding"]
  s.data.sources = (("pixelworld", ",".join(tasks), 1.0),)
  s.train.steps = 4000
  s.train.log_every = 50
  s.checkpoint.every_steps = 1000
  s.checkpoint.init_from_stages = "s1_vision"
  s.eval = ml_collections.ConfigDict(dict(s.eval.to_dict(), split="heldout", num_samples=64))
  return s


def llm_config(c, plain: bool = False) -> ml_collections.ConfigDict:
  """`:llm`: the full job's main run, its data mix included, with no backend and no stage
  (random tower), 1000 steps, evaluated on `val` and `heldout` (32 samples per subtask): what
  the LLM writes (commands, plans, boxes; rows `<subtask>/command`) in ~25 minutes on 2 cores.
  `:llm_plain`: the same on the PixelWorld tasks alone at their default weights (no repeat
  drills, no second plan source: the full job's mix before session 19)."""
  s = grounding_stage(c)
  del s.checkpoint["init_from_stages"]
  s.data.sources = (("pixelworld", None, 1.0),) if plain else c.data.sources
  s.train.steps = 1000
  s.checkpoint.every_steps = 1000
  s.eval = ml_collections.ConfigDict(dict(split="val,heldout", num_samples=32 * 15, pictures=0,
                                          batch_size=16, max_new_tokens=72))
  return s


def segmenter_stage(c, quick: bool) -> ml_collections.ConfigDict:
  """Stage s0: the segmentation backend learns PixelWorld referring segmentation from a box
  and the command's text (task `pixelworld_segmenter`), under the parameter path the VITRON
  run keeps it (`backends/segment_image/`), where it stays frozen."""
  s = _stage_base(c, "pixelworld_segmenter", steps=300 if quick else 1500, batch=32, lr=1e-3,
                  warmup=20)
  s.model = ml_collections.ConfigDict(dict(segmenter=dict(c.model.segmenter.to_dict())))
  s.task.track = bool(c.task.videos)  # ... and tracking when the main run segments videos
  return s




def generator_stage(c, quick: bool) -> ml_collections.ConfigDict:
  """Stage s0: the image generation backend learns PixelWorld text -> image (GLIGEN boxes
  where the prompt drew regions; task `pixelworld_generator`), under the parameter path the
  VITRON run keeps it (`backends/generate_image/`), where it stays frozen."""
  s = _stage_base(c, "pixelworld_generator", steps=3000 if quick else 8000, batch=16,
                  lr=1e-3, warmup=50)
  s.model = ml_collections.ConfigDict(dict(generator=dict(c.model.generator.to_dict())))
  return s




def editor_stage(c, quick: bool) -> ml_collections.ConfigDict:
  """Stage s0: the image editing backend learns PixelWorld edits (recolour, remove, add, move:
  the source, the invocation's boxes and the command -> the edited image; task
  `pixelworld_editor`), under the parameter path the VITRON run keeps it
  (`backends/edit_image/`), where it stays frozen."""
  s = _stage_base(c, "pixelworld_editor", steps=3000 if quick else 8000, batch=16,
                  lr=1e-3, warmup=50)
  s.model = ml_collections.ConfigDict(dict(editor=dict(c.model.editor.to_dict())))
  return s


VIDEO_TASKS = {"video_generator": "pixelworld_video_generator",
               "video_animator": "pixelworld_video_animator",
               "video_editor": "pixelworld_video_editor"}


def video_stage(c, field: str) -> ml_collections.ConfigDict:
  """Stage s0 of a video backend (`field`: video_generator: text -> video, task
  `pixelworld_video_generator`; video_animator: first frame + text -> video; video_editor:
  source video + text -> the recoloured video), under the parameter path the VITRON run keeps
  it (`backends/<module>/`), where it stays frozen."""
  s = _stage_base(c, VIDEO_TASKS[field], steps=3000, batch=16, lr=1e-3, warmup=50)
  s.model = ml_collections.ConfigDict({field: dict(c.model[field].to_dict())})
  return s


def get_sweep(arg: str = ""):
  runs = [{"model.head.routing": r} for r in ("text", "embedding", "hybrid", "superlink")]
  return runs + [{"model.synergy.mode": "off"}]
