"""Box, mask, tracking and temporal metrics: perfect, known wrong, chance, malformed inputs."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from vitron_jax.eval import boxes as B
from vitron_jax.eval import masks as M
from vitron_jax.eval import temporal as TM
from vitron_jax.protocol import invocation as I


def test_box_iou_known_values():
  a = np.array([0, 0, 10, 10])
  assert B.box_iou(a, a) == 1.0
  assert B.box_iou(a, [5, 0, 15, 10]) == pytest.approx(50 / 150)
  assert B.box_iou(a, [10, 10, 20, 20]) == 0.0  # touching corners
  assert B.box_iou(a, [0, 0, 5, 5]) == pytest.approx(0.25)
  # degenerate, inverted and non-finite predictions score 0
  assert B.box_iou(a, [3, 3, 3, 8]) == 0.0
  assert B.box_iou(a, [8, 8, 2, 2]) == 0.0
  assert B.box_iou(a, [np.nan, 0, 10, 10]) == 0.0
  assert B.box_iou([0, 0, 0, 0], [0, 0, 0, 0]) == 0.0
  out = B.box_iou(np.zeros((3, 1, 4)) + a, np.zeros((1, 2, 4)) + a)
  assert out.shape == (3, 2) and (out == 1).all()
  with pytest.raises(ValueError, match="last axis of 4"):
    B.box_iou([1, 2, 3], a)


def test_grounding_scores_from_text():
  gt = np.array([[8, 16, 40, 48], [0, 0, 64, 64]], np.float32)
  perfect = [f"It is at {I.box_to_loc_tokens(I.normalize_box(b, 64, 64))}." for b in gt]
  sc = B.grounding_scores(perfect, gt, 64, 64)
  assert sc["iou"] > 0.99 and sc["acc@0.5"] == 1.0
  wrong = [perfect[1], "I do not know."]
  sc = B.grounding_scores(wrong, gt, 64, 64)
  assert sc["acc@0.5"] == 0.0 and sc["iou"] == pytest.approx(32 * 32 / 4096 / 2, rel=1e-2)
  with pytest.raises(ValueError, match="predictions"):
    B.grounding_scores(perfect[:1], gt, 64, 64)


def test_match_f1_and_grounded_answers():
  gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30]])
  assert B.match_f1(gt, gt)["f1"] == 1.0
  assert B.match_f1(gt[:1], gt) == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3)}
  assert B.match_f1(np.zeros((0, 4)), np.zeros((0, 4)))["f1"] == 1.0
  assert B.match_f1(np.zeros((0, 4)), gt)["f1"] == 0.0
  # one prediction cannot match two ground-truth boxes
  assert B.match_f1(gt[:1], np.stack([gt[0], gt[0]]))["recall"] == 0.5
  text = " and ".join(f"a box {I.box_to_loc_tokens(I.normalize_box(b, 64, 64))}" for b in gt)
  assert B.grounded_answer_scores(text, gt, 64, 64)["f1"] == 1.0
  assert B.grounded_answer_scores("none", gt, 64, 64)["f1"] == 0.0


def test_box_chance_is_low_and_deterministic():
  gt = np.array([[10, 10, 30, 30]])
  c = B.box_chance(gt, 64, 64)
  assert c == B.box_chance(gt, 64, 64)
  assert 0.0 < c["iou"] < 0.2 and c["acc@0.5"] < 0.1
  assert B.box_chance([[0, 0, 64, 64]], 64, 64)["iou"] > c["iou"]


def test_mask_metrics_known_values():
  g = np.zeros((4, 4), bool)
  g[:2, :2] = True
  assert M.mask_iou(g, g) == 1.0
  p = np.zeros((4, 4), bool)
  p[:2, :] = True
  assert M.mask_iou(p, g) == 0.5
  assert M.mask_iou(np.zeros_like(g), g) == 0.0
  assert M.mask_iou(np.zeros_like(g), np.zeros_like(g)) == 1.0
  assert M.mask_iou(p.astype(np.uint8), g) == 0.5
  assert M.mask_iou(p.astype(np.float32) * 0.9, g, threshold=0.5) == 0.5
  with pytest.raises(ValueError, match="threshold"):
    M.mask_iou(p.astype(np.float32), g)
  with pytest.raises(ValueError, match="binary"):
    M.mask_iou(p.astype(np.int32) * 2, g)
  with pytest.raises(ValueError, match="differs"):
    M.mask_iou(p[:3], g)
  assert M.cumulative_iou([p, g], [g, g]) == pytest.approx((4 + 4) / (8 + 4))
  assert M.mask_chance([g]) == 0.25


def test_tracking_iou():
  g = np.zeros((3, 4, 4), bool)
  g[0, :2, :2] = True
  g[1, :2, :2] = True  # frame 2: object absent
  assert M.tracking_iou(g, g) == 1.0
  p = g.copy()
  p[2, 0, 0] = True  # a false positive on the empty frame
  assert M.tracking_iou(p, g) == pytest.approx(2 / 3)
  assert M.tracking_iou(np.zeros_like(g), g) == pytest.approx(1 / 3)
  with pytest.raises(ValueError, match=r"\[T, H, W\]"):
    M.tracking_iou(g[0], g[0])


def test_temporal_iou():
  assert TM.temporal_iou((2, 5), (2, 5)) == 1.0
  assert TM.temporal_iou((0, 3), (2, 5)) == pytest.approx(2 / 6)
  assert TM.temporal_iou((6, 7), (2, 5)) == 0.0
  assert TM.temporal_iou(None, (2, 5)) == 0.0
  assert TM.temporal_iou((5, 2), (2, 5)) == 0.0
  assert TM.temporal_iou(("a", None), (2, 5)) == 0.0
  with pytest.raises(ValueError, match="ground-truth span"):
    TM.temporal_iou((1, 2), (3, 1))
  # exact chance: all 36 spans of an 8-frame clip against the full clip
  spans = [(a, b) for a in range(8) for b in range(a, 8)]
  assert TM.temporal_chance([(0, 7)], 8) == pytest.approx(np.mean([(b - a + 1) / 8
                                                                   for a, b in spans]))


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.float64, (4,), elements=st.floats(allow_nan=True, allow_infinity=True,
                                                        width=32)),
       hnp.arrays(np.float64, (4,), elements=st.floats(-100, 100)))
def test_fuzz_boxes(pred, gt):
  v = float(B.box_iou(pred, gt))
  assert 0.0 <= v <= 1.0
  assert 0.0 <= B.match_f1(pred, gt)["f1"] <= 1.0


@settings(max_examples=100, deadline=None)
@given(hnp.arrays(np.bool_, (2, 5, 5)), hnp.arrays(np.bool_, (2, 5, 5)))
def test_fuzz_masks(pred, gt):
  for v in (M.mask_iou(pred, gt), M.tracking_iou(pred, gt), M.cumulative_iou([pred], [gt])):
    assert 0.0 <= v <= 1.0
  assert M.mask_iou(pred, pred) == 1.0


@settings(max_examples=100, deadline=None)
@given(st.one_of(st.none(), st.tuples(st.integers(-5, 70), st.integers(-5, 70)),
                 st.text(max_size=3), st.lists(st.integers(), max_size=4)))
def test_fuzz_spans(pred):
  assert 0.0 <= TM.temporal_iou(pred, (1, 4)) <= 1.0
