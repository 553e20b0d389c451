"""SAM-style segmentation backend (VITRON's SEEM replacement): image encoder, prompt encoder,
two-way mask decoder, signal prompts, losses, video tracking; registers `segment_image` and
`segment_video` (aliases `seg_image`, `seg_video`) in `vitron_jax.backends.base.REGISTRY` on
import."""
from vitron_jax.backends.segmentation.config import (SamConfig, SamMaskDecoderConfig,
                                                     SamPromptEncoderConfig, SamVisionConfig,
                                                     SegmentationConfig)
from vitron_jax.backends.segmentation.sam import SamModel, init_sam_params
from vitron_jax.backends.segmentation.backend import SegmentImageBackend, SegmentVideoBackend
