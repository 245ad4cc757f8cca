"""Fitting the tiny person detector and pose model to the bundled Chaplin clip, so that tests can see people.

A random detector finds nobody (or, at threshold 0, noise). Instead the tiny
RT-DETR is fitted for a few seconds, at build time, to the two people of
tests/data/chaplin.mp4 (boxes drawn by hand on frames 40 to 240 every 40,
linearly interpolated between) against pictures without people (frames of the
bundled colour-bars clip, random bars, gradients, flat colours, noise). It then
finds those two people and nobody in colour bars; on any other footage its
answers mean nothing. The tiny VitPose is fitted to draw one standing figure
(POSE_TEMPLATE) in every person crop. Both are saved with `save_pretrained`, so
tests take the same loading path as real weights. The fitting is seeded and runs
on the CPU in one thread, so a build gives the same weights each time on the
same machine (about 15 s for both).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

CLIP = Path(__file__).resolve().parents[2] / "tests" / "data" / "chaplin.mp4"
BARS = CLIP.with_name("bars-timecode.mp4")
CLIP_SIZE = (640, 360)
PEOPLE_BOXES = {
    40: ((120, 45, 180, 335), (200, 45, 305, 360)),
    80: ((118, 40, 180, 335), (305, 35, 415, 360)),
    120: ((125, 38, 225, 335), (310, 8, 452, 360)),
    160: ((122, 35, 215, 338), (335, 8, 480, 360)),
    200: ((142, 40, 245, 338), (300, 10, 442, 360)),
    240: ((130, 40, 215, 340), (325, 10, 452, 360)),
}
"""x0, y0, x1, y1 in the clip's 640x360 pixels of the man on the left and Chaplin, drawn by hand on these frames."""

POSE_TEMPLATE = np.array([
    (0.50, 0.15), (0.53, 0.13), (0.47, 0.13), (0.56, 0.15), (0.44, 0.15),  # nose, eyes, ears
    (0.62, 0.27), (0.38, 0.27), (0.66, 0.41), (0.34, 0.41), (0.68, 0.55), (0.32, 0.55),  # shoulders, elbows, wrists
    (0.57, 0.55), (0.43, 0.55), (0.58, 0.72), (0.42, 0.72), (0.59, 0.88), (0.41, 0.88),  # hips, knees, ankles
], dtype=np.float32)
"""COCO's 17 keypoints of a person standing, facing the camera, as x, y fractions of the pose model's crop."""

FIT_SEED = 0
DETECTOR_STEPS = 120
POSE_STEPS = 300


def clip_path(clip: Path = CLIP) -> Path:
    if not clip.is_file():
        raise FileNotFoundError(f"the tiny person detector is fitted to {clip}, which is missing; build the tiny "
                                "models from a checkout of hotshot (`hotshot models make-tiny`)")
    return clip


def people_boxes(frame: int) -> np.ndarray:
    """The hand-drawn boxes of `frame` (40-240), interpolated linearly between the drawn frames; (2, 4) pixels."""
    keys = sorted(PEOPLE_BOXES)
    if not keys[0] <= frame <= keys[-1]:
        raise ValueError(f"people are drawn for frames {keys[0]}-{keys[-1]}, not {frame}")
    after = next(key for key in keys if key >= frame)
    before = max(key for key in keys if key <= frame)
    weight = 0.0 if after == before else (frame - before) / (after - before)
    return ((1 - weight) * np.asarray(PEOPLE_BOXES[before], np.float32)
            + weight * np.asarray(PEOPLE_BOXES[after], np.float32))


def pictures_without_people(count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Colour bars, gradients, flat colours and noise at the clip's size (HxWx3 uint8)."""
    width, height = CLIP_SIZE
    pictures = []
    for index in range(count):
        kind = index % 4
        if kind == 0:
            bars = rng.integers(0, 256, (int(rng.integers(3, 9)), 3))
            picture = np.repeat(bars, -(-width // len(bars)), axis=0)[:width][None].repeat(height, axis=0)
            if rng.random() < 0.5:  # a second row of bars below, as SMPTE bars have
                cut = int(rng.integers(height // 2, height))
                picture[cut:] = rng.integers(0, 256, 3)
        elif kind == 1:
            ramp = np.linspace(0, 1, width)[None, :, None] * rng.integers(0, 256, 3)
            picture = np.broadcast_to(ramp, (height, width, 3))
        elif kind == 2:
            picture = np.broadcast_to(rng.integers(0, 256, 3), (height, width, 3))
        else:
            picture = rng.integers(0, 256, (height // 8, width // 8, 3)).repeat(8, 0).repeat(8, 1)
        pictures.append(np.ascontiguousarray(picture, dtype=np.uint8))
    return pictures


def fit_person_detector(model: Any, processor: Any) -> None:
    """Fit the RT-DETR in place: the two people of the Chaplin clip are class 0, nothing is found elsewhere."""
    import torch

    from engine.decode import read_frames

    width, height = CLIP_SIZE
    frames = list(read_frames(clip_path(), 40, 240, width, height))
    numbers = list(range(40, 241, 20))
    with_people = [frames[number - 40] for number in numbers]
    scale = np.array([width, height, width, height], np.float32)
    targets = [_cxcywh(people_boxes(number) / scale) for number in numbers]
    rng = np.random.default_rng(FIT_SEED)
    without = pictures_without_people(4, rng) + list(read_frames(clip_path(BARS), 0, 40, width, height))[::8]
    targets += [torch.zeros((0, 4))] * len(without)
    pixels = processor(images=with_people + without, return_tensors="pt")["pixel_values"]
    def loss_of(model: Any) -> Any:
        outputs = model(pixel_values=pixels)
        loss = _detection_loss(outputs.logits, outputs.pred_boxes, targets)
        return loss + _detection_loss(outputs.enc_topk_logits, outputs.enc_topk_bboxes, targets)

    _fit(model, DETECTOR_STEPS, loss_of)


def _cxcywh(boxes: np.ndarray) -> Any:
    import torch

    x0, y0, x1, y1 = boxes.T
    return torch.from_numpy(np.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], axis=1))


def _detection_loss(logits: Any, boxes: Any, targets: list[Any]) -> Any:
    """DETR's loss with a greedy one-to-one match (two people need no Hungarian solver): every query's class
    scores against "person" for its matched person and "nothing" otherwise, plus L1 and GIoU on matched boxes."""
    import torch
    import torch.nn.functional as functional

    wanted = torch.zeros_like(logits)
    box_loss = logits.new_zeros(())
    for index, target in enumerate(targets):
        if len(target) == 0:
            continue
        cost = torch.cdist(boxes[index].detach(), target, p=1) - logits[index, :, 0].detach().sigmoid()[:, None]
        for _ in range(len(target)):
            query, person = divmod(int(cost.argmin()), len(target))
            cost[query, :], cost[:, person] = float("inf"), float("inf")
            wanted[index, query, 0] = 1.0
            box_loss = box_loss + (boxes[index, query] - target[person]).abs().sum()
            box_loss = box_loss + 1 - _giou(boxes[index, query], target[person])
    classes = functional.binary_cross_entropy_with_logits(logits, wanted, reduction="sum")
    return (classes + 5 * box_loss) / len(targets)


def _giou(box: Any, other: Any) -> Any:
    """Generalised IoU of two cx, cy, w, h boxes."""
    import torch

    def corners(value: Any) -> tuple[Any, Any, Any, Any]:
        return value[0] - value[2] / 2, value[1] - value[3] / 2, value[0] + value[2] / 2, value[1] + value[3] / 2

    ax0, ay0, ax1, ay1 = corners(box)
    bx0, by0, bx1, by1 = corners(other)
    overlap = (torch.minimum(ax1, bx1) - torch.maximum(ax0, bx0)).clamp(min=0) * \
        (torch.minimum(ay1, by1) - torch.maximum(ay0, by0)).clamp(min=0)
    union = box[2] * box[3] + other[2] * other[3] - overlap
    hull = (torch.maximum(ax1, bx1) - torch.minimum(ax0, bx0)) * (torch.maximum(ay1, by1) - torch.minimum(ay0, by0))
    iou = overlap / union.clamp(min=1e-6)
    return iou - (hull - union) / hull.clamp(min=1e-6)


def fit_pose_model(model: Any, crop_size: tuple[int, int], mean: list[float], std: list[float]) -> None:
    """Fit the VitPose in place to draw the standing template in whatever crop it is given, so each person box
    gets a whole skeleton (a random VitPose scores a few stray joints above the drawing threshold)."""
    import cv2
    import torch

    from engine.decode import read_frames

    width, height = CLIP_SIZE
    crop_w, crop_h = crop_size
    crops = []
    for number, frame in zip(range(40, 241, 40), read_frames(clip_path(), 40, 240, width, height), strict=False):
        for x0, y0, x1, y1 in people_boxes(number).astype(int):
            crops.append(cv2.resize(frame[y0:y1, x0:x1], (crop_w, crop_h), interpolation=cv2.INTER_AREA))
    pixels = (np.stack(crops).astype(np.float32) / 255.0 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    pixels = torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy())
    targets: list[Any] = []

    def loss_of(model: Any) -> Any:
        heatmaps = model(pixel_values=pixels).heatmaps
        if not targets:
            targets.append(_template_heatmaps(*heatmaps.shape[-2:]).expand_as(heatmaps))
        # Weighted towards the peaks: with a plain mean an all-zero heatmap looks nearly right.
        return (((heatmaps - targets[0]) ** 2) * (1 + 20 * targets[0])).mean()

    _fit(model, POSE_STEPS, loss_of)



def _fit(model: Any, steps: int, loss_of: Callable[[Any], Any]) -> None:
    """Train `model` in place for `steps` Adam steps on `loss_of(model)`, seeded, on one CPU thread."""
    import torch

    threads = torch.get_num_threads()
    # The tensors are tiny: with several threads, syncing costs more than the work (20x slower on a busy CPU).
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(FIT_SEED)
            model.train()
            optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
            for _ in range(steps):
                loss = loss_of(model)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
            model.eval()
    finally:
        torch.set_num_threads(threads)


def _template_heatmaps(map_h: int, map_w: int) -> Any:
    """One Gaussian peak of height 1 per template keypoint, on the heatmap grid (pixel centres at +0.5)."""
    import torch

    ys, xs = np.mgrid[0:map_h, 0:map_w].astype(np.float32)
    sigma = map_w / 12
    peaks = [np.exp(-((xs + 0.5 - x * map_w) ** 2 + (ys + 0.5 - y * map_h) ** 2) / (2 * sigma ** 2))
             for x, y in POSE_TEMPLATE]
    return torch.from_numpy(np.stack(peaks))[None]
