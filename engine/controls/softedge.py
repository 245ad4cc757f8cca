"""Soft edges: an ONNX edge network (HED, PiDiNet) through OpenCV's DNN module, or a weight-free OpenCV edge.

The weight-free edge is the gradient magnitude of the blurred picture at three
scales, taken per colour channel (so edges between colours of equal brightness
show), mapped through a fixed soft curve rather than normalised per frame, so
it does not flicker, and lightly blurred.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from engine.controls.catalog import SoftEdgeWeights
from engine.errors import ModelError, WeightsMissingError

OPENCV_METHOD = "opencv-softedge"
SCALES = (0.7, 1.4, 2.8)
"""Blur sigmas in pixels at a 512-pixel picture; they grow with the picture."""
SOFTNESS = 0.15
"""The edge strength that shows at 1 - 1/e of white; a sharp step between 75% colour bars (about 0.26) shows at 0.8."""


def opencv_softedge(frame: np.ndarray) -> np.ndarray:
    """Soft edges of an RGB frame as 8-bit greyscale (HxW), bright on edges, dark in flat areas."""
    picture = frame.astype(np.float32) / 255.0
    unit = max(1.0, max(frame.shape[:2]) / 512)
    strength = np.zeros(frame.shape[:2], np.float32)
    for sigma in SCALES:
        blurred = cv2.GaussianBlur(picture, (0, 0), sigma * unit)
        # Scharr's kernel weighs a unit slope 32. Weighing each scale by sqrt(sigma) favours the finer
        # scales on sharp edges while the coarser ones still answer soft, wide transitions.
        gx = cv2.Scharr(blurred, cv2.CV_32F, 1, 0) / 32.0
        gy = cv2.Scharr(blurred, cv2.CV_32F, 0, 1) / 32.0
        strength += np.sqrt(gx * gx + gy * gy).max(axis=2) * np.sqrt(sigma * unit) / len(SCALES)
    soft = cv2.GaussianBlur(1.0 - np.exp(-strength / SOFTNESS), (0, 0), unit)
    return np.rint(np.clip(soft, 0.0, 1.0) * 255.0).astype(np.uint8)


class OnnxSoftEdge:
    """An ONNX soft-edge network read with `cv2.dnn.readNet`; its first output channel is the edge map (0-1)."""

    def __init__(self, spec: SoftEdgeWeights) -> None:
        if not Path(spec.path).is_file():
            raise WeightsMissingError("[controls] softedge", spec.path,
                                      "put the .onnx file there, or remove `softedge` from [controls] "
                                      "to use the weight-free OpenCV soft edge")
        self.spec = spec
        try:
            self.net = cv2.dnn.readNet(spec.path)
        except cv2.error as exc:
            raise ModelError(f"OpenCV cannot read the soft-edge network {spec.path} ({exc}); "
                             "check that it is a complete ONNX file") from exc

    def __call__(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Soft edges of RGB frames as 8-bit greyscale, one network pass per frame (exports often fix batch 1)."""
        return [self._edges(frame) for frame in frames]

    def _edges(self, frame: np.ndarray) -> np.ndarray:
        height, width = frame.shape[:2]
        picture = frame[:, :, ::-1] if self.spec.channels == "bgr" else frame
        values = (picture.astype(np.float32) - np.asarray(self.spec.mean, np.float32)) * self.spec.scale
        self.net.setInput(np.ascontiguousarray(values.transpose(2, 0, 1)[None]))
        output = np.asarray(self.net.forward(), dtype=np.float32)
        edges = output.reshape(-1, *output.shape[-2:])[0]
        if edges.shape != (height, width):
            edges = cv2.resize(edges, (width, height), interpolation=cv2.INTER_LINEAR)
        return np.rint(np.clip(edges, 0.0, 1.0) * 255.0).astype(np.uint8)
