"""Depth and normal maps from a monocular depth model, normalised once per clip.

Per-frame normalisation would make the whole picture pump as people walk in
and out of frame, so the depth values that map to black and white are measured
once per source: the 2nd and 98th percentiles over frames sampled evenly across
the whole clip. Every frame is then mapped with those same two values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from engine.controls.catalog import TransformersWeights
from engine.controls.loading import load_transformers
from engine.controls.sampling import SampledFrameReader, evenly_spaced
from engine.source_colour import SourceColour

PERCENTILES = (2.0, 98.0)
SAMPLED_FRAMES = 32
VALUES_PER_SAMPLE = 4096
RELIEF = 0.5
"""For normals: the clip's far-to-near range spans this fraction of the picture's longer side."""


@dataclass(frozen=True)
class DepthRange:
    """The clip's nearness values that map to black (`far`) and white (`near`), and the frames they come from."""

    far: float
    near: float
    frames: tuple[int, ...]

    def normalised(self, nearness: np.ndarray) -> np.ndarray:
        """Nearness mapped to 0 (far) .. 1 (near), clipped, as float32."""
        span = max(self.near - self.far, 1e-12)
        return np.clip((nearness - self.far) / span, 0.0, 1.0).astype(np.float32)

    def to_dict(self) -> dict:
        return {"far": self.far, "near": self.near, "percentiles": list(PERCENTILES),
                "sampled_frames": list(self.frames)}

    @classmethod
    def from_dict(cls, data: dict) -> DepthRange:
        return cls(float(data["far"]), float(data["near"]), tuple(data["sampled_frames"]))


class DepthEstimator:
    """A transformers depth-estimation model (Depth Anything V2, DPT) and its image processor."""

    def __init__(self, spec: TransformersWeights, device: str) -> None:
        self.device = device
        self.model, self.processor = load_transformers("depth", spec, device, "AutoModelForDepthEstimation")
        # Relative models predict inverse depth (larger = nearer); metric ones predict distance.
        self.inverse = getattr(self.model.config, "depth_estimation_type", "relative") != "metric"

    def nearness(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One HxW float32 map per frame, at the frame's size, larger = nearer (in the model's own units)."""
        import torch

        height, width = frames[0].shape[:2]
        inputs = self.processor(images=list(frames), return_tensors="pt").to(self.device)
        with torch.inference_mode():
            outputs = self.model(**inputs)
        maps = self.processor.post_process_depth_estimation(outputs, target_sizes=[(height, width)] * len(frames))
        sign = 1.0 if self.inverse else -1.0
        return [sign * item["predicted_depth"].float().cpu().numpy() for item in maps]


def measure_depth_range(estimator: DepthEstimator, source: Path, width: int, height: int, frame_count: int,
                        batch_size: int, colour: SourceColour | None = None) -> DepthRange:
    """The clip's depth range from up to SAMPLED_FRAMES frames spread over the whole clip, decoded in one pass."""
    numbers = evenly_spaced(frame_count, SAMPLED_FRAMES)
    stride = max(1, int(np.sqrt(width * height / VALUES_PER_SAMPLE)))
    values, batch = [], []

    def run() -> None:
        values.extend(nearness[::stride, ::stride].ravel() for nearness in estimator.nearness(batch))
        batch.clear()

    with SampledFrameReader(source, numbers, width, height, colour) as reader:
        for _, frame in reader:
            batch.append(frame)
            if len(batch) == batch_size:
                run()
    if batch:
        run()
    far, near = np.percentile(np.concatenate(values), PERCENTILES)
    return DepthRange(float(far), float(near), tuple(numbers))


def depth_image(depth: np.ndarray) -> np.ndarray:
    """Normalised depth (0 far .. 1 near) as 8-bit greyscale, near = bright, as ControlNet depth models expect."""
    return np.rint(depth * 255.0).astype(np.uint8)


def normal_image(depth: np.ndarray) -> np.ndarray:
    """A normal map (HxWx3 uint8 RGB) from normalised depth (0 far .. 1 near).

    With z the distance from the camera, x to the right and y down the
    picture, the normal is (-dz/dx, -dz/dy, 1) normalised and stored as
    (n + 1) / 2 * 255: red above 128 where the surface turns to the left,
    green above 128 where it faces up, blue towards the camera, so a flat
    region facing the camera is (128, 128, 255). This is the convention of
    ControlNet's normal models.
    """
    relief = RELIEF * max(depth.shape)
    smooth = cv2.GaussianBlur(depth.astype(np.float32), (0, 0), 1.0)
    # Sobel's 3x3 kernel weighs a unit slope 8; nearness rises where distance falls, hence no minus sign here.
    slope_x = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3) / 8.0 * relief
    slope_y = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3) / 8.0 * relief
    normal = np.stack([slope_x, slope_y, np.ones_like(slope_x)], axis=-1)
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    return np.rint((normal + 1.0) * 0.5 * 255.0).astype(np.uint8)
