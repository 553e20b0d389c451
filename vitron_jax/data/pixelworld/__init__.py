"""PixelWorld: a procedural world of shapes with exact ground truth for every VITRON task.

Modules, in data-flow order: `vocab` (attributes), `splits` (held-out combinations and the
split rule), `render` (rasterisation), `scene` (objects, image scenes, rendering), `video`
(trajectories), `templates` (wording), `sample` (the sample format, documented there),
`tasks_*` (one function per subtask), `world` (`PixelWorld`: index -> sample).
"""
from vitron_jax.data.pixelworld.context import WorldConfig
from vitron_jax.data.pixelworld.sample import TASK_CLUSTERS
from vitron_jax.data.pixelworld.splits import (HELDOUT_COLOUR_SHAPE, HELDOUT_MOTION_SHAPE,
                                               SPLITS)
from vitron_jax.data.pixelworld.world import (IMAGE_TASKS, TASKS, VIDEO_TASKS, PixelWorld,
                                              task_weights)

__all__ = ["WorldConfig", "PixelWorld", "TASKS", "IMAGE_TASKS", "VIDEO_TASKS", "TASK_CLUSTERS",
           "SPLITS", "HELDOUT_COLOUR_SHAPE", "HELDOUT_MOTION_SHAPE", "task_weights"]
