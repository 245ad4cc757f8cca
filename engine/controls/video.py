"""`ControlVideo`: the control frames of one source, computed on demand and cached on disk."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import structlog

from engine.catalog import CONTROL_TYPES
from engine.controls.cache import ControlCache
from engine.controls.catalog import ControlCatalog
from engine.controls.depth import RELIEF, DepthEstimator, DepthRange, depth_image, measure_depth_range, normal_image
from engine.controls.loading import ensure_weights, kept
from engine.controls.pose import PersonDetector, PoseEstimator, draw_pose
from engine.controls.softedge import OPENCV_METHOD, OnnxSoftEdge, opencv_softedge
from engine.decode import FrameReader
from engine.encode import encode_segment
from engine.errors import FrameRangeError, MediaError, SettingsError
from engine.probe import VideoInfo, probe

# The models each control type runs (softedge's optional model is a plain file, never built).
ROLES = {"depth": ("depth",), "normal": ("depth",), "pose": ("pose_detector", "pose")}

log = structlog.get_logger("hotshot.controls")

CACHE_VERSION = 2
"""Part of every cache key: raise it when a change to this package changes the pictures it makes."""
PREVIEW_BATCH = 64
NEEDS = {
    "depth": ("depth",),
    "normal": ("depth",),
    "pose": ("pose_detector", "pose"),
    "depth+pose": ("depth", "pose_detector", "pose"),
    "softedge": (),
}

Producer = Callable[[list[np.ndarray]], list[np.ndarray]]


class ControlVideo:
    """Control frames of one source for one control type at one output size, computed on demand, cached on disk.

    Frames come from `cache_root/<cache_key>/` when they are there (in any
    process, without loading a model); missing ones are decoded and computed in
    batches of `batch_size`, then stored. "depth+pose" is built from the
    "depth" and "pose" control videos of the same source and size (and shares
    their caches); "normal" uses the depth control video's per-clip range.
    """

    def __init__(self, control_type: str, catalog: ControlCatalog, source: Path, width: int, height: int,
                 cache_root: Path, device: str = "cpu", batch_size: int = 8) -> None:
        if control_type not in CONTROL_TYPES:
            raise SettingsError(f"unknown control type {control_type!r}; the types are: {', '.join(CONTROL_TYPES)}")
        missing = [role for role in NEEDS[control_type] if getattr(catalog, role) is None]
        if missing:
            raise SettingsError(f"control type {control_type!r} needs {', '.join(missing)} in the [controls] table "
                                "of the model catalog; add them as in config/models.toml")
        if width <= 0 or height <= 0 or batch_size <= 0:
            raise ValueError(f"size {width}x{height} and batch size {batch_size} must be positive")
        self.type = control_type
        self.catalog = catalog
        self.source = Path(source)
        self.width, self.height = width, height
        self.cache_root = Path(cache_root)
        self.device = device
        self.batch_size = batch_size
        self._parts: dict[str, ControlVideo] = {}
        if control_type in ("depth+pose", "normal"):
            names = ("depth", "pose") if control_type == "depth+pose" else ("depth",)
            self._parts = {name: ControlVideo(name, catalog, source, width, height, cache_root, device, batch_size)
                           for name in names}
        self.cache_key = self._cache_key()
        self.cache = ControlCache(self.cache_root / self.cache_key)

    @property
    def method(self) -> dict:
        """What made these frames, for the Render Info (the depth range once it has been measured)."""
        if self.type == "depth+pose":
            return {"type": self.type, "parts": {name: part.method for name, part in self._parts.items()}}
        catalog = self.catalog
        if self.type == "softedge":
            spec = catalog.softedge
            if spec is None:
                return {"type": self.type, "method": OPENCV_METHOD}
            return {"type": self.type, "method": Path(spec.path).name, "model": spec.path}
        if self.type == "pose":
            return {"type": self.type, "method": "rt-detr person boxes + vitpose keypoints, drawn openpose-style",
                    "person_detector": catalog.pose_detector.weights,
                    "detection_threshold": catalog.pose_detector.threshold,
                    "pose_model": catalog.pose.weights, "keypoint_threshold": catalog.pose.threshold}
        method = {"type": self.type, "method": "depth model, normalised per clip", "depth_model": catalog.depth.weights}
        if self.type == "normal":
            method.update(method="normals from the per-clip depth", convention="(-dz/dx, -dz/dy, 1) as (n+1)/2*255",
                          relief=RELIEF)
        depth_cache = self._parts["depth"].cache if self.type == "normal" else self.cache
        meta = depth_cache.meta() or {}
        if "normalisation" in meta:
            method["normalisation"] = meta["normalisation"]
        return method

    def frames(self, source_frames: Sequence[int]) -> list[np.ndarray]:
        """HxWx3 uint8 RGB control frames, one per requested source frame number (non-decreasing, repeats allowed)."""
        numbers = _checked_numbers(source_frames)
        if self.type == "depth+pose":
            return self.composite(self.parts(numbers))
        found: dict[int, np.ndarray] = {}
        missing = []
        for number in sorted(set(numbers)):
            image = self.cache.load(number)
            if image is None:
                missing.append(number)
            else:
                found[number] = image
        if missing:
            found.update(self._compute(missing))
        return [found[number] for number in numbers]

    def ensure(self, source_frames: Sequence[int]) -> int:
        """Compute and store the frames of these the cache lacks, in one pass over the source; load nothing.
        Return how many frames were computed (one per part for "depth+pose")."""
        numbers = _checked_numbers(source_frames)
        if self.type == "depth+pose":
            return sum(part.ensure(numbers) for part in self._parts.values())
        missing = [number for number in sorted(set(numbers)) if not self.cache.frame_path(number).is_file()]
        if missing:
            self._compute(missing, keep=False)
        return len(missing)

    @staticmethod
    def composite(parts: dict[str, list[np.ndarray]]) -> list[np.ndarray]:
        """depth+pose as one picture: the pose skeleton drawn over the depth."""
        return [_overlay(pose, depth) for depth, pose in zip(parts["depth"], parts["pose"], strict=True)]

    def parts(self, source_frames: Sequence[int]) -> dict[str, list[np.ndarray]]:
        """The separate controls: {"depth": [...], "pose": [...]} for "depth+pose", else {type: frames}."""
        numbers = _checked_numbers(source_frames)
        if self.type == "depth+pose":
            return {name: part.frames(numbers) for name, part in self._parts.items()}
        return {self.type: self.frames(numbers)}

    def write_preview(self, source_frames: Sequence[int], fps: str, path: Path) -> Path:
        """Write these control frames as a viewable H.264 MP4 at `path` (atomically), a batch at a time."""
        numbers = _checked_numbers(source_frames)

        def stream() -> Iterator[np.ndarray]:
            for start in range(0, len(numbers), PREVIEW_BATCH):
                yield from self.frames(numbers[start:start + PREVIEW_BATCH])

        encode_segment(stream(), self.width, self.height, fps, Path(path))
        return Path(path)

    def _compute(self, numbers: list[int], keep: bool = True) -> dict[int, np.ndarray]:
        """Decode the range the missing frames span, compute those frames in batches, store each one; return
        them (`keep`) or nothing (a whole clip's frames would not fit in memory)."""
        started = time.monotonic()
        info = probe(self.source)
        frame_count = info.frame_count
        if numbers[-1] >= frame_count:
            raise FrameRangeError(numbers[0], numbers[-1], frame_count)
        produce = self._producer(info)
        wanted, computed = set(numbers), {}
        batch: list[np.ndarray] = []
        batch_numbers: list[int] = []

        def flush() -> None:
            for number, image in zip(batch_numbers, produce(batch), strict=True):
                self.cache.store(number, image)
                if keep:
                    computed[number] = np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image
            batch.clear()
            batch_numbers.clear()

        with FrameReader(self.source, numbers[0], numbers[-1], self.width, self.height,
                         colour=info.colour) as reader:
            for number, frame in enumerate(reader, start=numbers[0]):
                if number in wanted:
                    batch.append(frame)
                    batch_numbers.append(number)
                    if len(batch) == self.batch_size:
                        flush()
        if batch:
            flush()
        log.info("control frames computed", type=self.type, frames=len(numbers), size=f"{self.width}x{self.height}",
                 seconds=round(time.monotonic() - started, 2))
        return computed

    def _producer(self, info: VideoInfo) -> Producer:
        """Load what this type runs and write the cache's meta.json; return the batch function."""
        if self.type == "pose":
            detector = PersonDetector(self.catalog.pose_detector, self.device)
            estimator = PoseEstimator(self.catalog.pose, self.device)
            self._write_meta()
            return lambda frames: [draw_pose(estimator.people(frame, boxes), self.width, self.height,
                                             estimator.threshold)
                                   for frame, boxes in zip(frames, detector.boxes(frames), strict=True)]
        if self.type == "softedge":
            self._write_meta()
            spec = self.catalog.softedge
            if spec is not None:
                return kept(("softedge", spec.identity()), lambda: OnnxSoftEdge(spec))
            return lambda frames: [opencv_softedge(frame) for frame in frames]
        estimator = DepthEstimator(self.catalog.depth, self.device)
        depth_video = self._parts.get("depth", self)
        clip_range = depth_video._depth_range(estimator, info)
        self._write_meta(clip_range)
        draw = normal_image if self.type == "normal" else depth_image
        return lambda frames: [draw(clip_range.normalised(nearness)) for nearness in estimator.nearness(frames)]

    def _depth_range(self, estimator: DepthEstimator, info: VideoInfo) -> DepthRange:
        """The clip's depth range: from meta.json, or measured once (under the cache lock) and stored there."""
        with self.cache.locked():
            meta = self.cache.meta() or {}
            if "normalisation" in meta:
                return DepthRange.from_dict(meta["normalisation"])
            clip_range = measure_depth_range(estimator, self.source, self.width, self.height, info.frame_count,
                                             self.batch_size, info.colour)
            self._write_meta(clip_range)
            return clip_range

    def _write_meta(self, clip_range: DepthRange | None = None) -> None:
        meta = self.cache.meta()
        if meta is not None and (clip_range is None or "normalisation" in meta):
            return
        data = {"version": CACHE_VERSION, "cache_key": self.cache_key, "source": str(self.source),
                "size": [self.width, self.height], "method": self.method}
        if clip_range is not None:
            data["normalisation"] = data["method"]["normalisation"] = clip_range.to_dict()
        self.cache.write_meta(data)

    def _cache_key(self) -> str:
        """`<type>-<W>x<H>-<hash>`: the hash covers the source's identity, the models' identities and the version."""
        try:
            stat = self.source.stat()
        except OSError as exc:
            raise MediaError(str(self.source), f"cannot be opened ({exc.strerror})") from exc
        catalog = self.catalog
        # A tiny model built on first use would change its identity, and so the key, after the first render.
        for role in ROLES.get(self.type, ()):
            spec = getattr(catalog, role)
            if spec is not None:
                ensure_weights(role, spec)
        models: dict[str, object]
        if self.type == "depth+pose":
            models = {name: part.cache_key for name, part in self._parts.items()}
        elif self.type in ("depth", "normal"):
            models = {"depth": catalog.depth.identity(), "relief": RELIEF if self.type == "normal" else None}
        elif self.type == "pose":
            models = {"pose_detector": catalog.pose_detector.identity(), "pose": catalog.pose.identity(),
                      "thresholds": [catalog.pose_detector.threshold, catalog.pose.threshold]}
        else:
            models = {"softedge": catalog.softedge.identity() if catalog.softedge else OPENCV_METHOD}
        identity = {"version": CACHE_VERSION, "type": self.type, "size": [self.width, self.height], "models": models,
                    "source": [str(self.source.resolve()), stat.st_size, stat.st_mtime_ns]}
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]
        return f"{self.type}-{self.width}x{self.height}-{digest}"


def _checked_numbers(source_frames: Sequence[int]) -> list[int]:
    numbers = [int(number) for number in source_frames]
    if not numbers:
        return []
    if numbers[0] < 0 or any(later < earlier for earlier, later in zip(numbers, numbers[1:], strict=False)):
        shown = ", ".join(map(str, numbers[:8])) + (", ..." if len(numbers) > 8 else "")
        raise ValueError(f"source frame numbers must be non-negative and non-decreasing, got [{shown}]")
    return numbers


def _overlay(pose: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """The pose skeleton drawn over the depth picture: pose pixels where there are any, depth elsewhere."""
    return np.where(pose.any(axis=2, keepdims=True), pose, depth)
