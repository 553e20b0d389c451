"""Metrics, each a pure function over predictions and ground truth, with its chance level.

=================  ======================================  =================================
what               function                                chance
=================  ======================================  =================================
QA (free text)     attributes.qa_correct / qa_accuracy     attributes.QA_CHANCE[qtype]
captions           attributes.caption_scores (pair F1)     attributes.caption_chance(objs)
regional captions  attributes.region_caption_scores        attributes.REGION_CHANCE
boxes              boxes.box_iou, grounding_scores         boxes.box_chance(gt, W, H)
grounded answers   boxes.grounded_answer_scores (box F1)   (as boxes)
masks              masks.mask_iou, cumulative_iou          masks.mask_chance(gts)
tracking           masks.tracking_iou (J mean)             masks.mask_chance(frames)
time spans         temporal.temporal_iou                   temporal.temporal_chance(spans, T)
routing            routing.routing_scores / accuracy       routing.ROUTING_CHANCE
generated pixels   pixels.dominant_colour,                 pixels.PIXEL_CHANCE,
                   inside_fraction, motion_direction,      inside_chance(box, H, W),
                   l1_outside                              l1_chance(before, mask)
=================  ======================================  =================================

`pictures` draws samples (PNG) and videos (GIF) for docs and reports.
"""
from vitron_jax.eval.attributes import (QA_CHANCE, REGION_CHANCE, caption_chance,
                                        caption_scores, qa_accuracy, qa_correct,
                                        region_caption_scores)
from vitron_jax.eval.boxes import (box_chance, box_iou, grounded_answer_scores,
                                   grounding_scores, match_f1)
from vitron_jax.eval.masks import cumulative_iou, mask_chance, mask_iou, tracking_iou
from vitron_jax.eval.pixels import (PIXEL_CHANCE, dominant_colour, inside_chance,
                                    inside_fraction, l1_chance, l1_outside, motion_direction,
                                    object_inside_box)
from vitron_jax.eval.routing import ROUTING_CHANCE, routing_accuracy, routing_scores
from vitron_jax.eval.temporal import temporal_chance, temporal_iou
