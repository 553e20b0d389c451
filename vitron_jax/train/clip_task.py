"""Task "pixelworld_clip": CLIP-style contrastive pretraining of the vision tower on PixelWorld
captions (no pretrained CLIP exists for PixelWorld; VITRON's phase 1 needs a tower that sees).

The vision tower is VITRON's own (`frontend/vision_tower/...`, config `model.frontend.vision`),
so a VITRON run takes it with `checkpoint.init_from` (or as a stage of the same run, see
`train.stages`). The text side is a small causal CLIP text transformer over the run's
tokenizer (the PixelWorld word-level one by default), pooled at the caption's last token.
Loss: the symmetric InfoNCE of CLIP with a learned temperature, over the global batch, plus
(weight `loss.dense`, 0 = off) a dense term from PixelWorld's exact ground truth for every patch
token of the layer VITRON reads (`model.frontend.select_layer`): which colours and which shapes
overlap that patch (multi-label BCE, balanced between present and absent labels) and the box of
the object covering most of it (L1). Contrastive captions alone teach the pooled embedding; the
dense term puts colour, shape and place into the patch tokens the LLM actually sees.

Data: PixelWorld ``image_caption`` samples (train split, generated on the fly); a caption
longer than `task.text_len` is a bad sample, never cut.

Config: `model.frontend.vision` (CLIP vision fields), `model.text` (hidden_size,
intermediate_size, num_hidden_layers, num_attention_heads), `model.embed_dim`;
`model.frontend.select_layer`; `task.tokenizer`, `task.text_len`; `loss.dense`;
`data.pixelworld` (image_size, max_objects, seed).
Evaluation (held-out samples): image -> caption retrieval accuracy beside chance (1 / n); per
patch, colour and shape label accuracy and F1, and the IoU of the predicted boxes.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vitron_jax.data import pipeline
from vitron_jax.data import pixelworld_tokenizer as PT
from vitron_jax.data.pixelworld import PixelWorld, WorldConfig
from vitron_jax.data.pixelworld import vocab as V
from vitron_jax.data.sources import pixelworld_stage_data
from vitron_jax.data.vitron_examples import clip_pixels
from vitron_jax.models.clip import CLIPTextModel, CLIPVisionModel
from vitron_jax.models.clip_config import CLIPTextConfig, CLIPVisionConfig
from vitron_jax.nn.partitioning import replicate_like
from vitron_jax.nn.layers import Dense
from vitron_jax.train.task import register_task

CAPTION_TASK = "image_caption"


class _Frontend(nn.Module):
  """Holds the tower under VITRON's parameter path (`frontend/vision_tower`)."""
  vision: CLIPVisionConfig
  select_layer: int

  def setup(self):
    self.vision_tower = CLIPVisionModel(self.vision)

  def __call__(self, pixels):
    """-> (pooled `[B, D]`, patch tokens of `select_layer` `[B, N, D]`)."""
    out = self.vision_tower(pixels)
    return out.pooler_output, out.hidden_states[self.select_layer][:, 1:]


class ClipModel(nn.Module):
  vision: CLIPVisionConfig
  text: CLIPTextConfig
  embed_dim: int
  select_layer: int = -2

  @nn.compact
  def __call__(self, pixels: jax.Array, ids: jax.Array, mask: jax.Array):
    """-> (image embeddings `[B, E]`, text embeddings `[B, E]`, both unit norm; log scale;
    dense logits `{"colour": [B, N, colours], "shape": [B, N, shapes], "box": [B, N, 4]}`)."""
    pooled, patches = _Frontend(self.vision, self.select_layer, name="frontend")(pixels)
    dense = {k: Dense(n, axes=("embed", None), name=f"dense_{k}")(patches)
             for k, n in (("colour", len(V.COLOUR_NAMES)), ("shape", len(V.SHAPES)),
                          ("box", 4))}
    img = Dense(self.embed_dim, axes=("embed", None), use_bias=False, name="visual_projection")(
        pooled)
    hid = CLIPTextModel(self.text, name="text_tower")(ids, mask,
                                                      output_hidden_states=False)
    last = jnp.maximum(mask.sum(-1) - 1, 0)  # the caption's last token (right padding)
    txt = Dense(self.embed_dim, axes=("embed", None), use_bias=False, name="text_projection")(
        hid.last_hidden_state[jnp.arange(ids.shape[0]), last])
    scale = self.param("logit_scale", nn.initializers.constant(np.log(1 / 0.07)), ())
    unit = lambda x: x / jnp.linalg.norm(x, axis=-1, keepdims=True).clip(1e-6)
    return unit(img), unit(txt), scale, dense


def patch_labels(objects, image_size: int, patch_size: int) -> dict[str, np.ndarray]:
  """Per patch (row-major, as the ViT), from every visible object's box (first frame, pixels,
  exclusive ends): multi-hot `colour` `[N, colours]` / `shape` `[N, shapes]` of the objects
  overlapping it, and `box` `[N, 4]` (x1, y1, x2, y2 / image size) of the object covering most
  of it, `box_valid` `[N]` (1 where some object overlaps)."""
  g = image_size // patch_size
  n = g * g
  out = {"colour": np.zeros((n, len(V.COLOUR_NAMES)), np.float32),
         "shape": np.zeros((n, len(V.SHAPES)), np.float32),
         "box": np.zeros((n, 4), np.float32), "box_valid": np.zeros((n,), np.float32)}
  best = np.zeros((n,), np.float64)
  edges = np.arange(g) * patch_size
  for o in objects:
    if not bool(np.asarray(o["visible"]).reshape(-1)[0]):
      continue
    x1, y1, x2, y2 = np.asarray(o["boxes"], np.float64).reshape(-1, 4)[0]
    wx = np.clip(np.minimum(edges + patch_size, x2) - np.maximum(edges, x1), 0, None)
    wy = np.clip(np.minimum(edges + patch_size, y2) - np.maximum(edges, y1), 0, None)
    area = (wy[:, None] * wx[None, :]).reshape(-1)
    hit = area > 0
    out["colour"][hit, V.COLOUR_NAMES.index(o["colour"])] = 1.0
    out["shape"][hit, V.SHAPES.index(o["shape"])] = 1.0
    top = area > best
    out["box"][top] = np.array([x1, y1, x2, y2], np.float32) / image_size
    out["box_valid"][top] = 1.0
    best = np.maximum(best, area)
  return out


def dense_loss(dense: dict, batch: dict) -> jax.Array:
  """Multi-label BCE of the dense heads, balanced: the mean over present labels plus the mean
  over absent ones (most (patch, label) pairs are absent; a plain mean is won by "nothing")."""
  total = box_loss(dense, batch)
  for k in ("colour", "shape"):
    y = batch[f"patch_{k}"]
    bce = optax.sigmoid_binary_cross_entropy(dense[k], y)
    pos = jnp.sum(bce * y) / jnp.maximum(jnp.sum(y), 1.0)
    neg = jnp.sum(bce * (1 - y)) / jnp.maximum(jnp.sum(1 - y), 1.0)
    total = total + pos + neg
  return total


def box_loss(dense: dict, batch: dict) -> jax.Array:
  """L1 between each covered patch's predicted box (sigmoid of the `box` head) and the box of
  the object covering most of it; patches no object overlaps weigh 0."""
  valid = batch["patch_box_valid"]
  l1 = jnp.abs(jax.nn.sigmoid(dense["box"]) - batch["patch_box"]).sum(-1)
  return jnp.sum(l1 * valid) / jnp.maximum(jnp.sum(valid), 1.0)


def patch_box_iou(dense: dict, batch: dict) -> jax.Array:
  """Mean IoU of the covered patches' predicted boxes with their objects' boxes."""
  p, t, valid = jax.nn.sigmoid(dense["box"]), batch["patch_box"], batch["patch_box_valid"]
  lo, hi = jnp.maximum(p[..., :2], t[..., :2]), jnp.minimum(p[..., 2:], t[..., 2:])
  inter = jnp.prod(jnp.clip(hi - lo, 0, None), -1)
  area = lambda b: jnp.prod(jnp.clip(b[..., 2:] - b[..., :2], 0, None), -1)
  iou = inter / jnp.maximum(area(p) + area(t) - inter, 1e-9)
  return jnp.sum(iou * valid) / jnp.maximum(jnp.sum(valid), 1.0)


def contrastive_loss(img: jax.Array, txt: jax.Array, log_scale: jax.Array
                     ) -> tuple[jax.Array, jax.Array]:
  """Symmetric InfoNCE (CLIP); returns (loss, image->text top-1 accuracy). Identical captions
  in one batch count as right for each other."""
  logits = jnp.exp(jnp.clip(log_scale, 0.0, np.log(100.0))) * img @ txt.T
  labels = jnp.arange(img.shape[0])
  li = -jnp.mean(jax.nn.log_softmax(logits, -1)[labels, labels])
  lt = -jnp.mean(jax.nn.log_softmax(logits, 0)[labels, labels])
  same = jnp.all(jnp.isclose(txt[:, None], txt[None]), -1)
  acc = jnp.mean(same[labels, jnp.argmax(logits, -1)])
  return (li + lt) / 2, acc


class CaptionEncoder:
  """A PixelWorld sample -> {"pixels", "ids", "mask"} (static shapes)."""

  def __init__(self, tokenizer, text_len: int, image_size: int, patch_size: int):
    self.tok, self.text_len, self.image_size = tokenizer, text_len, image_size
    self.patch_size = patch_size

  def __call__(self, sample):
    sid = pipeline.sample_id_of(sample)
    images = sample.get("images") or []
    if len(images) != 1 or np.shape(images[0]) != (self.image_size, self.image_size, 3):
      raise pipeline.BadSampleError(sid, "wrong image size",
                                    f"need one {self.image_size}px RGB image")
    ids = self.tok(sample["conversations"][1]["value"], add_special_tokens=False)["input_ids"]
    ids = [self.tok.bos_token_id] + list(ids) + [self.tok.eos_token_id]
    if len(ids) > self.text_len:
      raise pipeline.BadSampleError(sid, "longer than the sequence",
                                    f"{len(ids)} caption tokens > text_len {self.text_len}")
    out = np.full((self.text_len,), self.tok.pad_token_id, np.int32)
    out[:len(ids)] = ids
    labels = patch_labels(sample["objects"], self.image_size, self.patch_size)
    return {"pixels": clip_pixels(images[0]), "ids": out,
            "mask": (np.arange(self.text_len) < len(ids)).astype(np.int32),
            **{f"patch_{k}": v for k, v in labels.items()}}


class PixelWorldClipTask:
  """See the module docstring."""

  name = "pixelworld_clip"

  def __init__(self, config: Any):
    self.cfg = config
    m, t = config.model, config.task
    self.tokenizer = PT.load(t.get("tokenizer", "pixelworld"))
    v = dict(m.frontend.vision)
    self.vision = CLIPVisionConfig(**v)
    tx = dict(m.get("text", {}))
    self.text_len = int(t.get("text_len", 40))
    self.text = CLIPTextConfig(
        vocab_size=len(self.tokenizer), hidden_size=int(tx.get("hidden_size", 64)),
        intermediate_size=int(tx.get("intermediate_size", 128)),
        num_hidden_layers=int(tx.get("num_hidden_layers", 2)),
        num_attention_heads=int(tx.get("num_attention_heads", 4)),
        max_position_embeddings=self.text_len, pad_token_id=self.tokenizer.pad_token_id,
        bos_token_id=self.tokenizer.bos_token_id, eos_token_id=self.tokenizer.eos_token_id,
        projection_dim=int(m.get("embed_dim", 64)))
    self.model = ClipModel(self.vision, self.text, int(m.get("embed_dim", 64)),
                           int(m.frontend.get("select_layer", -2)))
    self.dense_weight = float(config.get("loss", {}).get("dense", 1.0))
    pw = config.data.get("pixelworld") or {}
    self.world_config = WorldConfig.from_config(config.data)
    if self.world_config.image_size != self.vision.image_size:
      raise ValueError(f"data.pixelworld.image_size ({self.world_config.image_size}) must match "
                       f"model.frontend.vision.image_size ({self.vision.image_size})")
    self.world_seed = int(pw.get("seed", 0))
    self.encoder = CaptionEncoder(self.tokenizer, self.text_len, self.vision.image_size,
                                  self.vision.patch_size)
    self._eval = None

  def init(self, rng):
    s = self.vision.image_size
    return self.model.init(rng, jnp.zeros((1, s, s, 3)), jnp.zeros((1, self.text_len), jnp.int32),
                           jnp.ones((1, self.text_len), jnp.int32))["params"]

  def batch_spec(self):
    s = self.vision.image_size
    n = (s // self.vision.patch_size) ** 2
    return {"pixels": ((s, s, 3), np.float32), "ids": ((self.text_len,), np.int32),
            "mask": ((self.text_len,), np.int32),
            "patch_colour": ((n, len(V.COLOUR_NAMES)), np.float32),
            "patch_shape": ((n, len(V.SHAPES)), np.float32),
            "patch_box": ((n, 4), np.float32), "patch_box_valid": ((n,), np.float32)}

  def loss(self, params, batch, rng):
    del rng
    img, txt, scale, dense = self.model.apply({"params": params}, batch["pixels"],
                                              batch["ids"], batch["mask"])
    contrastive, acc = contrastive_loss(img, txt, scale)
    dl = dense_loss(dense, batch)
    return contrastive + self.dense_weight * dl, {
        "retrieval_accuracy": acc, "logit_scale": jnp.exp(scale), "loss/contrastive":
        contrastive, "loss/dense": dl, "weight": jnp.float32(img.shape[0])}

  def make_data(self, global_batch, process_index, process_count):
    return pixelworld_stage_data(self.cfg.data, self.world_config, self.world_seed, CAPTION_TASK,
                                 self.encoder, global_batch=global_batch,
                                 process_index=process_index, process_count=process_count)

  def components(self):
    return {"vision": r"^frontend/vision_tower/",
            "text": r"^(text_tower|text_projection|visual_projection|logit_scale|dense_)"}

  def evaluate(self, params, step, workdir=None):
    """Image -> caption top-1 retrieval among `eval.num_samples` held-out samples."""
    del step, workdir
    n = int(self.cfg.get("eval", {}).get("num_samples", 64))
    world = PixelWorld(self.world_config, split="heldout", seed=self.world_seed)
    rows = [self.encoder(world.sample(i, task=CAPTION_TASK)) for i in range(n)]
    batch = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    if self._eval is None:
      def ev(p, b):
        img, txt, scale, dense = self.model.apply({"params": p}, b["pixels"], b["ids"],
                                                  b["mask"])
        acc = {}
        acc["patch_box_iou"] = patch_box_iou(dense, b)
        for k in ("colour", "shape"):  # accuracy is mostly empty patches: F1 of labels present
          pred, true = dense[k] > 0, b[f"patch_{k}"] > 0.5
          tp = jnp.sum(pred & true)
          acc[f"patch_{k}_accuracy"] = jnp.mean(pred == true)
          acc[f"patch_{k}_f1"] = 2 * tp / jnp.maximum(jnp.sum(pred) + jnp.sum(true), 1)
        return contrastive_loss(img, txt, scale)[1], acc
      self._eval = jax.jit(ev)
    retrieval, dense_acc = self._eval(params, replicate_like(params, batch))
    out = {"retrieval_accuracy": float(retrieval), "chance": 1.0 / n}
    out.update({k: float(v) for k, v in dense_acc.items()})
    return out


@register_task("pixelworld_clip")
def build(config: Any) -> PixelWorldClipTask:
  return PixelWorldClipTask(config)
