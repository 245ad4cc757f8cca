"""Inpainting masks: what to regenerate, frame by frame, and compositing the source back.

A mask is a video, a folder of images (one per source frame, in name order) or
a single image applied to every frame: white = regenerate, black = keep, grey =
partial. Frame N of a mask video or folder belongs to source frame N; past its
end the last mask frame holds. A mask with the source's aspect is fitted like
the video (scaled to cover, centre-cropped), so a mask drawn on the plate lines
up; any other mask is scaled to the output frame. `grow` dilates it and
`feather` softens its edge, both in output pixels. After decoding, everything
the mask does not touch is the source again, pixel for pixel.

A lossy (H.264) matte is never quite black or white: its black decodes to 1-3
and its white to 252-254, which would count as a faint partial mask and move
pixels outside the shape. So mask values within SNAP of black count as black
and within SNAP of white as white, before the mask is fitted, grown and
feathered (which make their own soft edges).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from engine.decode import FrameReader
from engine.errors import MediaError
from engine.probe import probe
from engine.source_colour import SourceColour
from engine.stills import IMAGE_EXTENSIONS, fit, read_image

SNAP = 16 / 255
"""Mask values at most this far from black (0) or white (1) are snapped to it: compression noise, not a partial
mask (16 levels of 255, the distance between full-range and video-range black)."""


class MaskSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path
    feather: int = Field(default=0, ge=0)
    grow: int = Field(default=0, ge=0)


class MaskSource:
    """Mask frames at the output size as float32 HxW in [0, 1], read in increasing frame order."""

    def __init__(self, spec: MaskSpec, width: int, height: int, source_aspect: float) -> None:
        self.spec = spec
        self.width, self.height = width, height
        self.source_aspect = source_aspect
        self.path = Path(spec.path)
        self.warnings: list[str] = []
        self._reader: FrameReader | None = None
        self._frames = None
        self._next = 0
        self._current: np.ndarray | None = None
        self._cache: dict[int, np.ndarray] = {}
        if self.path.is_dir():
            self.kind = "sequence"
            self.files = sorted(p for p in self.path.iterdir()
                                if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
            if not self.files:
                raise MediaError(str(self.path), "the mask folder holds no images")
            self.frame_count = len(self.files)
        elif self.path.suffix.lower() in IMAGE_EXTENSIONS:
            self.kind, self.frame_count = "image", 1
        else:
            self.kind = "video"
            self.info = probe(self.path)
            self.frame_count = self.info.frame_count

    def describe(self) -> dict:
        return {"from": self.path.name, "kind": self.kind, "frames": self.frame_count,
                "feather": self.spec.feather, "grow": self.spec.grow}

    def at(self, source_frame: int) -> np.ndarray:
        """The processed mask for a source frame (the last mask frame past the mask's end)."""
        index = min(source_frame, self.frame_count - 1)
        if index != source_frame and self.kind != "image" and not self.warnings:
            self.warnings.append(f"the mask has {self.frame_count} frames; later frames use its last one")
        if index not in self._cache:
            self._cache = {index: self._process(self._raw(index))}
        return self._cache[index]

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _raw(self, index: int) -> np.ndarray:
        if self.kind == "image":
            return read_image(self.path)[1]
        if self.kind == "sequence":
            return read_image(self.files[index])[1]
        return self._video_frame(index)

    def _video_frame(self, index: int) -> np.ndarray:
        if self._reader is None or index < self._next - 1:
            self.close()
            self._reader = FrameReader(self.path, index, self.frame_count - 1, self.info.width, self.info.height,
                                       colour=self.info.colour)
            self._reader.__enter__()
            self._frames = iter(self._reader)
            self._next = index
        while self._next <= index:
            self._current = next(self._frames)
            self._next += 1
        return self._current

    def _process(self, rgb: np.ndarray) -> np.ndarray:
        grey = snap(rgb.astype(np.float32).mean(axis=2) / 255.0)
        height, width = grey.shape
        if abs(width / height - self.source_aspect) / self.source_aspect < 0.01:
            grey = fit(grey, self.width, self.height)
        else:
            grey = cv2.resize(grey, (self.width, self.height), interpolation=cv2.INTER_AREA)
        if self.spec.grow:
            size = 2 * self.spec.grow + 1
            grey = cv2.dilate(grey, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size)))
        if self.spec.feather:
            size = 2 * self.spec.feather + 1
            grey = cv2.GaussianBlur(grey, (size, size), self.spec.feather / 2.0)
        return np.clip(grey, 0.0, 1.0).astype(np.float32)


def snap(grey: np.ndarray) -> np.ndarray:
    """Mask values in [0, 1] with those within SNAP of black or white set to exactly 0 or 1."""
    return np.where(grey <= SNAP, 0.0, np.where(grey >= 1.0 - SNAP, 1.0, grey)).astype(np.float32)


class Compositor:
    """Puts the source back wherever the mask keeps it, after decoding, so untouched pixels stay exact."""

    def __init__(self, masks: MaskSource, source: Path, first: int, last: int, start_index: int,
                 colour: SourceColour | None = None) -> None:
        self.masks = masks
        self.first = first
        self._reader = FrameReader(source, first + start_index, last, masks.width, masks.height, colour=colour)
        self._frames = iter(self._reader.__enter__())
        self._next = start_index

    def apply(self, index: int, frame: np.ndarray) -> np.ndarray:
        """The output frame `index` of the range: the render inside the mask, the source outside."""
        if index != self._next:
            raise RuntimeError(f"compositing out of order: frame {index}, expected {self._next}")
        source = next(self._frames)
        self._next += 1
        mask = self.masks.at(self.first + index)[:, :, None]
        mixed = source.astype(np.float32) + (frame.astype(np.float32) - source.astype(np.float32)) * mask
        return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)

    def close(self) -> None:
        self._reader.close()
        self.masks.close()

