"""The catalog's `[controls]` table: which models the control preprocessors run.

Each key of the table is one role: `depth` (a transformers depth-estimation
model), `pose_detector` (an RT-DETR object detector that knows COCO's
"person"), `pose` (a VitPose keypoint model) and `softedge` (an ONNX edge
network run by OpenCV; without it a weight-free OpenCV soft edge is used).
Catalog files are read in order and a key in a later file replaces the same key
of an earlier one. Reading the table never imports torch.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from engine.errors import validation_problems
from engine.weights import CatalogError, TransformersFolder, read_catalog_file

HED_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)


class TransformersWeights(TransformersFolder, BaseModel):
    """A transformers model and its image processor: a local folder (`path`) or a hub repository (`hub`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str | None = Field(default=None, description="local folder written by save_pretrained")
    hub: str | None = Field(default=None, description="hub repository id, fetched on first use")
    revision: str | None = None
    tiny: bool = Field(default=False, description="a random-initialised test model hotshot may build itself")

    @model_validator(mode="after")
    def _one_location(self) -> TransformersWeights:
        if (self.path is None) == (self.hub is None):
            raise ValueError("give exactly one of `path` (a local folder) or `hub` (a hub repository id)")
        if self.tiny and self.path is None:
            raise ValueError("a tiny model is built into a local folder; give `path`, not `hub`")
        return self

    def identity(self) -> str:
        """Changes when the weights change: the folder's files with their sizes and times, or the hub id."""
        if self.path is None:
            return f"{self.hub}@{self.revision or 'main'}"
        folder = Path(self.path)
        files = sorted(folder.iterdir()) if folder.is_dir() else []
        stamps = [(file.name, file.stat().st_size, file.stat().st_mtime_ns) for file in files if file.is_file()]
        return f"{folder}:{_digest(stamps)}"


class DetectorWeights(TransformersWeights):
    """The person detector; boxes of class "person" scoring at least `threshold` count as people."""

    threshold: float = Field(default=0.5, ge=0, description="minimum detection score; above 1 finds nobody")


class PoseWeights(TransformersWeights):
    """The keypoint model; keypoints scoring under `threshold` are not drawn."""

    threshold: float = Field(default=0.3, ge=0, description="minimum keypoint confidence to draw a keypoint")


class SoftEdgeWeights(BaseModel):
    """An ONNX soft-edge network (HED, PiDiNet) run with OpenCV's DNN module, and how to feed it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(description="the .onnx file")
    channels: Literal["bgr", "rgb"] = Field(default="bgr", description="channel order the network expects")
    mean: tuple[float, float, float] = Field(default=HED_MEAN_BGR, description="subtracted, in that channel order")
    scale: float = Field(default=1.0, gt=0, description="multiplies the pixel values (0-255) after the mean")

    @model_validator(mode="after")
    def _onnx(self) -> SoftEdgeWeights:
        if not self.path.lower().endswith(".onnx"):
            raise ValueError("`path` must name an .onnx file (OpenCV 5 reads ONNX; convert Caffe HED to ONNX first)")
        return self

    @property
    def weights(self) -> str:
        return self.path

    def identity(self) -> str:
        file = Path(self.path)
        stamp = (file.stat().st_size, file.stat().st_mtime_ns) if file.is_file() else None
        return f"{file}:{_digest([stamp, self.channels, self.mean, self.scale])}"


class ControlCatalog(BaseModel):
    """The control preprocessors' models, with local paths made absolute; a role left out is None."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    depth: TransformersWeights | None = None
    pose_detector: DetectorWeights | None = None
    pose: PoseWeights | None = None
    softedge: SoftEdgeWeights | None = None


ENTRY_TYPES: dict[str, type[BaseModel]] = {
    "depth": TransformersWeights, "pose_detector": DetectorWeights, "pose": PoseWeights, "softedge": SoftEdgeWeights,
}
ROLES = tuple(ENTRY_TYPES)


def load_control_catalog(files: list[Path], models_dir: Path) -> ControlCatalog:
    """Read the `[controls]` tables of the catalog files in order; relative paths resolve against `models_dir`."""
    entries: dict[str, dict] = {}
    for file in files:
        data = read_catalog_file(file)
        table = data.get("controls", {})
        if not isinstance(table, dict):
            raise CatalogError(f"{file}: [controls] must be a table")
        for role, entry in table.items():
            entries[role] = _checked_entry(file, role, entry, models_dir)
    return ControlCatalog(**entries)


def _checked_entry(file: Path, role: str, entry: object, models_dir: Path) -> BaseModel:
    if role not in ROLES:
        raise CatalogError(f"{file}: [controls] has an unknown key {role!r}; the keys are: {', '.join(ROLES)}")
    if not isinstance(entry, dict):
        raise CatalogError(f"{file}: [controls] {role} must be a table, e.g. {role} = {{ path = \"...\" }}")
    entry = dict(entry)
    if isinstance(entry.get("path"), str) and not Path(entry["path"]).is_absolute():
        entry["path"] = str((models_dir / entry["path"]).resolve())
    try:
        return ENTRY_TYPES[role](**entry)
    except ValidationError as exc:
        raise CatalogError(f"{file}: [controls] {role} is invalid: {validation_problems(exc.errors())}") from exc


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, default=str).encode()).hexdigest()[:16]
