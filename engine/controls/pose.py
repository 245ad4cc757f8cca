"""Body pose: people found by RT-DETR, their keypoints by VitPose, drawn as an OpenPose skeleton.

VitPose predicts COCO's 17 keypoints for each person box; they are mapped to
OpenPose's 18 (the neck is the middle of the shoulders) and drawn with
OpenPose's limb colours on black, the picture ControlNet pose models expect.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from engine.controls.catalog import ControlCatalog, DetectorWeights, PoseWeights
from engine.controls.loading import load_transformers
from engine.errors import SettingsError

# OpenPose keypoint i is COCO keypoint COCO_OF_OPENPOSE[i]; the neck (1) is computed.
NECK = -1
COCO_OF_OPENPOSE = (0, NECK, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)
LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
         (1, 0), (0, 14), (14, 16), (0, 15), (15, 17))
COLOURS = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
           (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
           (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85))
LIMB_BRIGHTNESS = 0.6
PADDING = 1.25
"""Person boxes are widened by this factor before cropping, as VitPose was trained."""


@dataclass(frozen=True)
class Person:
    """One person's COCO keypoints in frame pixels, (17, 2) x/y, and their confidences, (17,)."""

    keypoints: np.ndarray
    scores: np.ndarray


class PersonDetector:
    """An RT-DETR detector; boxes of class "person" scoring at least the catalog's threshold are people."""

    def __init__(self, spec: DetectorWeights, device: str, threshold: float | None = None) -> None:
        self.device = device
        self.threshold = spec.threshold if threshold is None else threshold
        self.model, self.processor = load_transformers("pose_detector", spec, device, "RTDetrForObjectDetection")
        labels = {name.lower(): int(index) for index, name in self.model.config.id2label.items()}
        if "person" not in labels:
            raise SettingsError(f"the person detector at {spec.weights} has no 'person' class (its classes include "
                                f"{', '.join(list(labels)[:8])}); name a COCO detector in [controls] pose_detector")
        self.person = labels["person"]

    def boxes(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Per frame, the people's boxes as an (N, 4) float array of x0, y0, x1, y1 in frame pixels."""
        import torch

        inputs = self.processor(images=list(frames), return_tensors="pt").to(self.device)
        with torch.inference_mode():
            outputs = self.model(**inputs)
        found = self.processor.post_process_object_detection(
            outputs, threshold=self.threshold, target_sizes=[frame.shape[:2] for frame in frames])
        return [item["boxes"][item["labels"] == self.person].float().cpu().numpy().reshape(-1, 4) for item in found]


class PoseEstimator:
    """A VitPose model; person crops are cut and keypoints read from heatmaps here (no scipy needed)."""

    def __init__(self, spec: PoseWeights, device: str) -> None:
        self.device = device
        self.threshold = spec.threshold
        self.model, processor = load_transformers("pose", spec, device, "VitPoseForPoseEstimation")
        self.input_size = (int(processor.size["width"]), int(processor.size["height"]))
        self.mean = np.asarray(processor.image_mean, dtype=np.float32)
        self.std = np.asarray(processor.image_std, dtype=np.float32)

    def people(self, frame: np.ndarray, boxes: np.ndarray) -> list[Person]:
        """The keypoints of the person in each box of one frame."""
        import torch

        if len(boxes) == 0:
            return []
        crops, regions = zip(*(self._crop(frame, box) for box in boxes), strict=True)
        pixels = torch.from_numpy(np.stack(crops)).to(self.device)
        options = {}
        if getattr(self.model.config.backbone_config, "num_experts", 1) > 1:
            # ViTPose+ has one head per dataset; index 0 is COCO.
            options["dataset_index"] = torch.zeros(len(crops), dtype=torch.long, device=self.device)
        with torch.inference_mode():
            heatmaps = self.model(pixel_values=pixels, **options).heatmaps.float().cpu().numpy()
        return [self._keypoints(maps, region) for maps, region in zip(heatmaps, regions, strict=True)]

    def _crop(self, frame: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float, float]]:
        """The box widened to the model's aspect ratio, cut out at its input size and normalised (CHW)."""
        in_w, in_h = self.input_size
        x0, y0, x1, y1 = (float(value) for value in box)
        width, height = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
        if width * in_h > height * in_w:
            height = width * in_h / in_w
        else:
            width = height * in_w / in_h
        width, height = width * PADDING, height * PADDING
        left, top = (x0 + x1) / 2 - width / 2, (y0 + y1) / 2 - height / 2
        scale_x, scale_y = in_w / width, in_h / height
        matrix = np.array([[scale_x, 0, -left * scale_x], [0, scale_y, -top * scale_y]], dtype=np.float32)
        crop = cv2.warpAffine(np.ascontiguousarray(frame), matrix, (in_w, in_h), flags=cv2.INTER_LINEAR)
        crop = (crop.astype(np.float32) / 255.0 - self.mean) / self.std
        return crop.transpose(2, 0, 1), (left, top, width, height)

    def _keypoints(self, heatmaps: np.ndarray, region: tuple[float, float, float, float]) -> Person:
        """Each heatmap's peak, moved a quarter pixel towards the higher neighbour, in frame pixels."""
        count, map_h, map_w = heatmaps.shape
        flat = heatmaps.reshape(count, -1)
        peaks = flat.argmax(axis=1)
        scores = flat[np.arange(count), peaks]
        ys, xs = (peaks // map_w).astype(np.float32), (peaks % map_w).astype(np.float32)
        for index in range(count):
            x, y = int(xs[index]), int(ys[index])
            if 0 < x < map_w - 1:
                xs[index] += 0.25 * np.sign(heatmaps[index, y, x + 1] - heatmaps[index, y, x - 1])
            if 0 < y < map_h - 1:
                ys[index] += 0.25 * np.sign(heatmaps[index, y + 1, x] - heatmaps[index, y - 1, x])
        left, top, width, height = region
        points = np.stack([left + (xs + 0.5) * width / map_w, top + (ys + 0.5) * height / map_h], axis=1)
        return Person(points, scores.astype(np.float32))


def draw_pose(people: Sequence[Person], width: int, height: int, threshold: float) -> np.ndarray:
    """Everyone's skeleton, OpenPose style, on black (HxWx3 uint8 RGB); keypoints under `threshold` are left out."""
    limbs = np.zeros((height, width, 3), np.uint8)
    joints: list[tuple[int, int, int]] = []
    stick = max(1, round(4 * min(width, height) / 512))
    for person in people:
        points = _openpose_points(person, threshold)
        for colour, (start, end) in zip(COLOURS, LIMBS, strict=False):
            if points[start] is None or points[end] is None:
                continue
            (xa, ya), (xb, yb) = points[start], points[end]
            length = math.hypot(xa - xb, ya - yb)
            angle = math.degrees(math.atan2(ya - yb, xa - xb))
            polygon = cv2.ellipse2Poly((round((xa + xb) / 2), round((ya + yb) / 2)), (round(length / 2), stick),
                                       round(angle), 0, 360, 1)
            cv2.fillConvexPoly(limbs, polygon, colour)
        joints += [(index, round(point[0]), round(point[1])) for index, point in enumerate(points) if point is not None]
    # OpenPose draws the limbs dimmer than the joints.
    canvas = (limbs * LIMB_BRIGHTNESS).astype(np.uint8)
    for index, x, y in joints:
        cv2.circle(canvas, (x, y), stick, COLOURS[index], thickness=-1)
    return canvas


def _openpose_points(person: Person, threshold: float) -> list[tuple[float, float] | None]:
    def point(coco: int) -> tuple[float, float] | None:
        if person.scores[coco] < threshold:
            return None
        return float(person.keypoints[coco, 0]), float(person.keypoints[coco, 1])

    points = []
    for coco in COCO_OF_OPENPOSE:
        if coco != NECK:
            points.append(point(coco))
            continue
        right, left = point(6), point(5)
        points.append(None if right is None or left is None else
                      ((right[0] + left[0]) / 2, (right[1] + left[1]) / 2))
    return points


def count_people(frames: Sequence[np.ndarray], catalog: ControlCatalog, device: str = "cpu",
                 threshold: float | None = None, batch_size: int = 8) -> list[int]:
    """How many people the catalog's person detector finds in each frame (the detector alone, no keypoints)."""
    if catalog.pose_detector is None:
        raise SettingsError("counting people needs `pose_detector` in the [controls] table of the model catalog; "
                            "add one as in config/models.toml")
    detector = PersonDetector(catalog.pose_detector, device, threshold)
    counts = []
    for start in range(0, len(frames), batch_size):
        counts += [len(boxes) for boxes in detector.boxes(frames[start:start + batch_size])]
    return counts
