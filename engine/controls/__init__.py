"""Control preprocessors for Transform renders: depth, pose, soft edge, depth+pose and normal control videos.

`ControlVideo` computes the control frames of a source on demand, in batches,
and caches them on disk; `load_control_catalog` reads the models from the
catalog's `[controls]` table; `make_tiny_controls` builds random test models;
`count_people` runs the person detector alone. Importing this package does not
import torch: models load on first use.
"""

from engine.controls.catalog import (
    ControlCatalog,
    DetectorWeights,
    PoseWeights,
    SoftEdgeWeights,
    TransformersWeights,
    load_control_catalog,
)
from engine.controls.depth import normal_image
from engine.controls.loading import unload_models
from engine.controls.pose import count_people
from engine.controls.softedge import OPENCV_METHOD
from engine.controls.tiny import make_tiny_controls
from engine.controls.video import ControlVideo

__all__ = [
    "OPENCV_METHOD",
    "ControlCatalog",
    "ControlVideo",
    "DetectorWeights",
    "PoseWeights",
    "SoftEdgeWeights",
    "TransformersWeights",
    "count_people",
    "load_control_catalog",
    "make_tiny_controls",
    "normal_image",
    "unload_models",
]
