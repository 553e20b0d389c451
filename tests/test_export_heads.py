"""VITRON's heads -> safetensors + heads.json -> PyTorch reference modules: parity and roundtrip."""
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

import vitron_testlib as vt
from vitron_jax.convert import torch_heads as th
from vitron_jax.convert.heads import TREE_PATHS, head_layout, load_heads, save_heads
from vitron_jax.convert.safetensors_io import WeightsError
from vitron_jax.convert.tree import WeightsMismatchError, flatten, unflatten
from vitron_jax.models.invocation import HybridHead
from vitron_jax.models.projector import Projector
from vitron_jax.models.region_encoder import RegionEncoder
from vitron_jax.models.synergy import TaskDiscriminator

ATOL = RTOL = 1e-5
VARIANTS = {"gated_sum": ("hybrid", {}), "concat": ("hybrid", {"hybrid_combine": "concat"}),
            "embedding": ("embedding", {}), "text": ("text", {})}


def random_heads(cfg, seed=0):
  """Random (non-trivial: biases, norms and gates too) params of every exported head."""
  rng = np.random.default_rng(seed)
  flat = {}
  for head, layout in head_layout(cfg).items():
    for sub, (_, _, shape, dtype) in layout.items():
      flat["/".join(TREE_PATHS[head] + (sub,))] = (0.3 * rng.standard_normal(shape)).astype(dtype)
  return unflatten(flat)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  """variant -> (config, params, folder); exported once per variant on first use."""
  cache = {}

  def get(name):
    if name not in cache:
      routing, over = VARIANTS[name]
      cfg = vt.config(routing, **over)
      params = random_heads(cfg)
      folder = tmp_path_factory.mktemp(f"heads_{name}")
      save_heads(params, cfg, folder)
      cache[name] = (cfg, params, folder)
    return cache[name]
  return get


def _t(x):
  return torch.from_numpy(np.asarray(x))


def _close(jax_out, torch_out):
  np.testing.assert_allclose(np.asarray(jax_out), torch_out.detach().numpy(), atol=ATOL,
                             rtol=RTOL)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_roundtrip_is_bitwise(exported, name):
  cfg, params, folder = exported(name)
  got, want = flatten(load_heads(folder, cfg)), flatten(params)
  assert sorted(got) == sorted(want)
  for k in want:
    assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, k
    assert got[k].tobytes() == want[k].tobytes(), k
  index = th.read_index(folder)
  assert set(index["files"]) == {f"{h}.safetensors" for h in head_layout(cfg)}
  for fname, doc in index["files"].items():
    tensors = load_file(str(folder / fname))
    assert {n: list(a.shape) for n, a in tensors.items()} == {
        n: d["shape"] for n, d in doc["tensors"].items()}


def test_mm_projector_parity(exported):
  cfg, params, folder = exported("gated_sum")
  x = np.random.default_rng(1).standard_normal((2, 5, cfg.frontend.vision.hidden_size),
                                               np.float32)
  want = Projector(cfg.frontend.projector, cfg.llm.hidden_size).apply(
      {"params": params["frontend"]["mm_projector"]}, x)
  with torch.no_grad():
    _close(want, th.MMProjector.from_folder(folder)(_t(x)))


def test_region_encoder_parity(exported):
  cfg, params, folder = exported("gated_sum")
  fe, rng = cfg.frontend, np.random.default_rng(2)
  b, s, t, r, g, px = 2, 2, 2, 3, fe.grid, fe.vision.image_size
  feats = [rng.standard_normal((b, s, t, g, g, fe.vision.hidden_size), np.float32)
           for _ in fe.region_layers]
  masks = (rng.random((b, r, t, px, px)) > 0.6).astype(np.float32)
  boxes = rng.random((b, r, t, 4)).astype(np.float32)
  frame_valid = np.array([[[1, 1], [1, 0], [0, 1]], [[1, 0], [1, 1], [1, 1]]], bool)
  source = rng.integers(0, s, (b, r)).astype(np.int32)
  module = RegionEncoder(cfg.llm.hidden_size, len(fe.region_layers), fe.region_tokens,
                         fe.box_freqs)
  want = module.apply({"params": params["frontend"]["region_encoder"]}, feats, masks, boxes,
                      frame_valid, source)
  ref = th.RegionEncoder.from_folder(folder)
  assert ref.region_layers == tuple(fe.region_layers)
  with torch.no_grad():
    got = ref([_t(f) for f in feats], _t(masks), _t(boxes), _t(frame_valid), _t(source))
  assert got.shape == want.shape
  _close(want, got)


@pytest.mark.parametrize("name", ["gated_sum", "concat", "embedding"])
def test_hybrid_head_parity(exported, name):
  cfg, params, folder = exported(name)
  hd, d = cfg.head, cfg.llm.hidden_size
  rng = np.random.default_rng(3)
  h = rng.standard_normal((4, hd.k_max, d), np.float32)
  module_ids = np.array([0, 1, -1, 1], np.int32)
  natives = {m: rng.standard_normal((4, n, w), np.float32)
             for m, (n, w) in zip(hd.modules, hd.condition_shapes)}
  module, variables = HybridHead(hd, d), {"params": params["head"]}
  ref = th.HybridHead.from_folder(folder)
  bank, valid = module.apply(variables, jnp.asarray(module_ids), method="bank")
  sig = module.apply(variables, h, jnp.asarray(module_ids), valid, method="signals")
  want = module.apply(variables, h, module_ids, natives)
  with torch.no_grad():
    tbank, tvalid = ref.bank(_t(module_ids))
    tsig = ref.signals(_t(h), _t(module_ids), tvalid)
    got = ref(_t(h), _t(module_ids), {m: _t(v) for m, v in natives.items()})
  _close(bank, tbank)
  np.testing.assert_array_equal(np.asarray(valid), tvalid.numpy())
  _close(sig.v_p, tsig.v_p)
  _close(sig.v_s, tsig.v_s)
  for m in hd.modules:
    assert got[m].shape == want[m].shape == (4,) + hd.condition_shape(m)
    _close(want[m], got[m])


def test_discriminator_parity(exported):
  cfg, params, folder = exported("gated_sum")
  s = cfg.synergy
  rng = np.random.default_rng(4)
  v_s = rng.standard_normal((3, cfg.head.k_max, cfg.head.shared_dim), np.float32)
  valid = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]], bool)[:, :cfg.head.k_max]
  want = TaskDiscriminator(len(cfg.head.modules), s.d_model, s.depth, s.num_heads,
                           s.mlp_ratio).apply({"params": params["discriminator"]}, v_s, valid)
  with torch.no_grad():
    _close(want, th.TaskDiscriminator.from_folder(folder)(_t(v_s), _t(valid)))


def test_text_routing_has_no_head_params(exported):
  cfg, _, folder = exported("text")
  assert "discriminator" not in th.read_index(folder)["config"]
  ref = th.HybridHead.from_folder(folder)
  assert not list(ref.parameters())
  native = torch.ones(1, 4, 16)
  assert ref(torch.zeros(1, 0, 64), torch.tensor([0]), {"segment_image": native})[
      "segment_image"] is native


def _copy(exported, tmp_path, name="gated_sum"):
  cfg, _, folder = exported(name)
  dst = tmp_path / "heads"
  shutil.copytree(folder, dst)
  return cfg, dst


def test_missing_file_is_refused(exported, tmp_path):
  cfg, dst = _copy(exported, tmp_path)
  (dst / "region_encoder.safetensors").unlink()
  with pytest.raises(WeightsError, match="missing region_encoder.safetensors"):
    load_heads(dst, cfg)
  (dst / "heads.json").unlink()
  with pytest.raises(WeightsError, match="has no heads.json"):
    load_heads(dst, cfg)


def test_truncated_file_is_refused(exported, tmp_path):
  cfg, dst = _copy(exported, tmp_path)
  path = dst / "hybrid_head.safetensors"
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])
  with pytest.raises(WeightsError, match="hybrid_head.safetensors"):
    load_heads(dst, cfg)


def test_mismatched_shape_is_refused(exported, tmp_path):
  cfg, dst = _copy(exported, tmp_path)
  path = dst / "mm_projector.safetensors"
  tensors = load_file(str(path))
  tensors["2.weight"] = tensors["2.weight"][:, :-1].copy()
  save_file(tensors, str(path))
  with pytest.raises(WeightsMismatchError, match=r"mm_projector\.safetensors(.|\n)*'2\.weight'"):
    load_heads(dst, cfg)


def test_other_config_is_refused(exported):
  _, _, folder = exported("gated_sum")
  with pytest.raises(WeightsError, match=r"hybrid_head\.hybrid_combine: folder 'gated_sum'"):
    load_heads(folder, vt.config("hybrid", hybrid_combine="concat"))


def test_params_that_do_not_fit_are_refused(exported, tmp_path):
  cfg, params, _ = exported("gated_sum")
  bad = jax.tree_util.tree_map(lambda x: x, params)
  del bad["head"]["gate_segment_image"]
  with pytest.raises(WeightsMismatchError, match="gate_segment_image"):
    save_heads(bad, cfg, tmp_path / "out")
