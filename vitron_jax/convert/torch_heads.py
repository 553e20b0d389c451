"""PyTorch reference modules of VITRON's heads, loaded from a `convert.heads.save_heads` folder.

Each module mirrors the Flax forward exactly (same gelu variants, LayerNorm eps 1e-5, masked
keys at -0.7 * finfo.max as in `jax.nn.dot_product_attention`) and its `state_dict` keys are
the keys of its safetensors file:

    proj = MMProjector.from_folder("out/heads")        # [.., C_vision] -> [.., D]
    head = HybridHead.from_folder("out/heads")         # bank / signals / project / combine

This module imports torch; training code never imports it.
"""
from __future__ import annotations

import json
import math
import pathlib
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn


def read_index(path) -> dict:
  """The folder's `heads.json`."""
  with open(pathlib.Path(path) / "heads.json") as f:
    return json.load(f)


class _FromFolder:
  FILE = ""

  @classmethod
  def from_folder(cls, path):
    """Build from `heads.json`'s config and load `<FILE>.safetensors` (strict)."""
    config = read_index(path)["config"]
    if cls.FILE not in config:
      raise ValueError(f"heads folder {str(path)!r} has no {cls.FILE!r} head")
    module = cls(**config[cls.FILE])
    module.load_state_dict(load_file(str(pathlib.Path(path) / f"{cls.FILE}.safetensors")),
                           strict=True)
    return module.eval()


def _gelu_tanh(x):  # jax.nn.gelu's default
  return F.gelu(x, approximate="tanh")


# ---- shared blocks (vitron_jax.nn.transformer_block) -----------------------------------------
class MLP(nn.Module):
  def __init__(self, d: int, hidden: int):
    super().__init__()
    self.fc1, self.fc2 = nn.Linear(d, hidden), nn.Linear(hidden, d)

  def forward(self, x):
    return self.fc2(F.gelu(self.fc1(x)))


class MultiHeadAttention(nn.Module):
  def __init__(self, d: int, num_heads: int):
    super().__init__()
    self.num_heads = num_heads
    self.q_proj, self.k_proj = nn.Linear(d, d), nn.Linear(d, d)
    self.v_proj, self.out_proj = nn.Linear(d, d), nn.Linear(d, d)

  def forward(self, x, context, key_valid=None):
    b, lq, d = x.shape
    lk, h = context.shape[1], self.num_heads
    q = self.q_proj(x).view(b, lq, h, d // h).transpose(1, 2)
    k = self.k_proj(context).view(b, lk, h, d // h).transpose(1, 2)
    v = self.v_proj(context).view(b, lk, h, d // h).transpose(1, 2)
    logits = q @ k.transpose(-1, -2) / math.sqrt(d // h)
    if key_valid is not None:
      logits = logits.masked_fill(~key_valid.bool()[:, None, None, :],
                                  -0.7 * torch.finfo(logits.dtype).max)
    o = (logits.softmax(-1) @ v).transpose(1, 2).reshape(b, lq, d)
    return self.out_proj(o)


class TransformerBlock(nn.Module):
  """Pre-norm: self-attention, optional cross-attention, MLP."""

  def __init__(self, d: int, num_heads: int, mlp_ratio: float = 4.0, cross: bool = False):
    super().__init__()
    self.norm1, self.self_attn = nn.LayerNorm(d), MultiHeadAttention(d, num_heads)
    if cross:
      self.norm2, self.cross_attn = nn.LayerNorm(d), MultiHeadAttention(d, num_heads)
    self.cross = cross
    self.norm3, self.mlp = nn.LayerNorm(d), MLP(d, int(d * mlp_ratio))

  def forward(self, x, valid=None, context=None, context_valid=None):
    h = self.norm1(x)
    x = x + self.self_attn(h, h, valid)
    if self.cross:
      x = x + self.cross_attn(self.norm2(x), context, context_valid)
    return x + self.mlp(self.norm3(x))


# ---- frontend heads -------------------------------------------------------------------------
class MMProjector(_FromFolder, nn.Sequential):
  """LLaVA's projector: Linear (GELU Linear)*; keys `{i}.weight` as LLaVA's `mm_projector`
  (for "linear" LLaVA's bare Linear has no `0.`)."""
  FILE = "mm_projector"

  def __init__(self, kind: str, in_features: int, out_features: int):
    depth = 1 if kind == "linear" else int(kind[len("mlp"):-len("x_gelu")])
    layers = [nn.Linear(in_features, out_features)]
    for _ in range(1, depth):
      layers += [nn.GELU(), nn.Linear(out_features, out_features)]
    super().__init__(*layers)


class BoxEncoder(nn.Module):
  def __init__(self, in_features: int, out_features: int):
    super().__init__()
    self.fc1, self.fc2 = nn.Linear(in_features, out_features), nn.Linear(out_features,
                                                                        out_features)

  def forward(self, x):
    return self.fc2(_gelu_tanh(self.fc1(x)))


class RegionEncoder(_FromFolder, nn.Module):
  """Mask-pooled ViT layers + box encoding -> `[B, R, n_tokens, out_features]`.

  features: one `[B, S, T, gh, gw, C]` map per layer of `region_layers`; masks
  `[B, R, T, H, W]`, boxes `[B, R, T, 4]`, frame_valid `[B, R, T]`, source `[B, R]` long.
  (The Flax module's input checks are not repeated.)"""
  FILE = "region_encoder"

  def __init__(self, in_features: int, out_features: int, num_layers: int,
               tokens: str = "fused", box_freqs: int = 8, region_layers: Sequence[int] = ()):
    super().__init__()
    self.tokens, self.box_freqs, self.region_layers = tokens, box_freqs, tuple(region_layers)
    self.layer_norm = nn.ModuleList(nn.LayerNorm(in_features) for _ in range(num_layers))
    self.layer_proj = nn.ModuleList(nn.Linear(in_features, out_features)
                                    for _ in range(num_layers))
    self.box_encoder = BoxEncoder(4 + 8 * box_freqs, out_features)

  def box_features(self, boxes):
    freqs = math.pi * 2.0 ** torch.arange(self.box_freqs, dtype=torch.float32)
    ang = boxes[..., None].float() * freqs
    feats = torch.cat([ang.sin(), ang.cos()], -1).flatten(-2)
    return torch.cat([boxes.float(), feats], -1)

  def forward(self, features, masks, boxes, frame_valid, source, valid=None):
    b, r, t, h, w = masks.shape
    f0 = features[0]
    gh, gw = f0.shape[3:5]
    fv = frame_valid.float()
    grid = masks.float().reshape(b, r, t, gh, h // gh, gw, w // gw).mean((-3, -1))
    wts = grid * fv[..., None, None]
    onehot = F.one_hot(source.long(), f0.shape[1]).float()
    total = wts.sum((2, 3, 4)).clamp_min(1e-6)
    per_layer = []
    for norm, proj, f in zip(self.layer_norm, self.layer_proj, features):
      pooled = torch.einsum("brs,brtij,bstijc->brc", onehot, wts, f.float()) / total[..., None]
      per_layer.append(proj(norm(pooled)))
    nframes = fv.sum(-1, keepdim=True).clamp_min(1.0)
    box = (boxes.float() * fv[..., None]).sum(2) / nframes
    box_enc = self.box_encoder(self.box_features(box))
    if self.tokens == "fused":
      return (sum(per_layer) + box_enc)[:, :, None]
    return torch.stack(per_layer, 2) + box_enc[:, :, None]


# ---- the hybrid head ------------------------------------------------------------------------
class Signals(NamedTuple):
  v: torch.Tensor
  v_p: torch.Tensor
  v_s: torch.Tensor
  valid: torch.Tensor


class ProjMLP(nn.Module):
  def __init__(self, in_features: int, features: int):
    super().__init__()
    self.fc1, self.fc2 = nn.Linear(in_features, features), nn.Linear(features, features)

  def forward(self, x):
    return self.fc2(_gelu_tanh(self.fc1(x)))


class ConditionProjector(nn.Module):
  """Learned output queries over the signal tokens -> `[B, num_tokens, width]`."""

  def __init__(self, in_features: int, num_tokens: int, width: int, d_model: int, depth: int,
               num_heads: int, mlp_ratio: float = 4.0):
    super().__init__()
    self.input_proj = nn.Linear(in_features, d_model)
    self.queries = nn.Parameter(torch.zeros(num_tokens, d_model))
    self.layers = nn.ModuleList(TransformerBlock(d_model, num_heads, mlp_ratio, cross=True)
                                for _ in range(depth))
    self.final_norm = nn.LayerNorm(d_model)
    self.output_proj = nn.Linear(d_model, width)

  def forward(self, v, valid=None):
    ctx = self.input_proj(v)
    x = self.queries.expand(v.shape[0], -1, -1)
    for layer in self.layers:
      x = layer(x, None, ctx, valid)
    return self.output_proj(self.final_norm(x))


class HybridHead(_FromFolder, nn.Module):
  """Query banks, `v_p`/`v_s` signals, per-module projectors and the routing combination
  (`vitron_jax.models.invocation.HybridHead`). "text" routing has no parameters."""
  FILE = "hybrid_head"

  def __init__(self, llm_hidden: int, modules: Sequence[str], num_queries: Sequence[int],
               condition_shapes: Sequence[Sequence[int]], routing: str = "hybrid",
               hybrid_combine: str = "gated_sum", task_dim: int = 256, shared_dim: int = 256,
               projector_dim: int = 256, projector_depth: int = 2, projector_heads: int = 8,
               projector_mlp_ratio: float = 4.0):
    super().__init__()
    self.names, self.num_queries = tuple(modules), tuple(num_queries)
    self.routing, self.hybrid_combine = routing, hybrid_combine
    if routing == "text":
      return
    self.queries = nn.ParameterDict({m: nn.Parameter(torch.zeros(k, llm_hidden))
                                     for m, k in zip(modules, num_queries)})
    self.task_proj = nn.ModuleDict({m: ProjMLP(llm_hidden, task_dim) for m in modules})
    self.shared_proj = ProjMLP(llm_hidden, shared_dim)
    self.projector = nn.ModuleDict({
        m: ConditionProjector(task_dim + shared_dim, n, w, projector_dim, projector_depth,
                              projector_heads, projector_mlp_ratio)
        for m, (n, w) in zip(modules, condition_shapes)})
    if routing == "hybrid" and hybrid_combine == "gated_sum":
      self.gate = nn.ParameterDict({m: nn.Parameter(torch.zeros(())) for m in modules})

  def bank(self, module_ids):
    """`[B]` module indices (-1 = none) -> (`[B, K_max, D]` queries, `[B, K_max]` valid)."""
    k_max = max(self.num_queries)
    table = torch.stack([F.pad(self.queries[m], (0, 0, 0, k_max - k))
                         for m, k in zip(self.names, self.num_queries)])
    safe = module_ids.long().clamp(0, len(self.names) - 1)
    counts = torch.tensor(self.num_queries)[safe]
    valid = (torch.arange(k_max)[None] < counts[:, None]) & (module_ids >= 0)[:, None]
    return table[safe], valid

  def signals(self, h, module_ids, valid) -> Signals:
    """Hidden states at the query slots `[B, K, D]` -> v_p of the row's module, v_s."""
    onehot = F.one_hot(module_ids.long().clamp_min(0), len(self.names)).to(h.dtype)
    onehot = onehot * (module_ids >= 0)[:, None].to(h.dtype)
    v_p = sum(onehot[:, i, None, None] * self.task_proj[m](h) for i, m in enumerate(self.names))
    v_s = self.shared_proj(h)
    return Signals(torch.cat([v_p, v_s], -1), v_p, v_s, valid)

  def project(self, module: str, v, valid):
    return self.projector[module](v, valid)

  def combine(self, module: str, projected, native):
    if self.routing == "text":
      return native
    if self.routing != "hybrid":
      return projected
    if self.hybrid_combine == "concat":
      return torch.cat([native.to(projected.dtype), projected], 1)
    return native.to(projected.dtype) + torch.tanh(self.gate[module]) * projected

  def forward(self, h, module_ids, natives=None) -> dict:
    """`h` `[B, K_max, D]` hidden states at the query slots -> condition per module."""
    natives = dict(natives or {})
    if self.routing == "text":
      return {m: natives.get(m) for m in self.names}
    _, valid = self.bank(module_ids)
    sig = self.signals(h, module_ids, valid)
    return {m: self.combine(m, self.project(m, sig.v, sig.valid), natives.get(m))
            for m in self.names}


# ---- synergy --------------------------------------------------------------------------------
class TaskDiscriminator(_FromFolder, nn.Module):
  """`v_s` `[B, K, d_s]` (+ valid `[B, K]`) -> task logits `[B, num_tasks]`."""
  FILE = "discriminator"

  def __init__(self, num_tasks: int, in_features: int, d_model: int = 64, depth: int = 2,
               num_heads: int = 4, mlp_ratio: float = 4.0):
    super().__init__()
    self.input_proj = nn.Linear(in_features, d_model)
    self.cls_token = nn.Parameter(torch.zeros(d_model))
    self.layers = nn.ModuleList(TransformerBlock(d_model, num_heads, mlp_ratio)
                                for _ in range(depth))
    self.final_norm = nn.LayerNorm(d_model)
    self.classifier = nn.Linear(d_model, num_tasks)

  def forward(self, v_s, valid=None):
    b, k, _ = v_s.shape
    x = self.input_proj(v_s)
    x = torch.cat([self.cls_token.expand(b, 1, -1), x], 1)
    valid = torch.ones(b, k, dtype=torch.bool) if valid is None else valid.bool()
    mask = torch.cat([torch.ones(b, 1, dtype=torch.bool), valid], 1)
    for layer in self.layers:
      x = layer(x, mask)
    return self.classifier(self.final_norm(x[:, 0]))
