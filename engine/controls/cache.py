"""The on-disk cache of one control video: a lossless PNG per source frame and a meta.json.

Every file appears atomically (written under a hidden temporary name, then
renamed), so a reader in another process sees a whole frame or none. Frames are
not fsynced: a frame lost or damaged by a crash reads as missing and is simply
computed again.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from engine import files


class ControlCache:
    """The folder `cache_root/<cache_key>/` of one control video."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def frame_path(self, number: int) -> Path:
        return self.folder / f"{number:06d}.png"

    def load(self, number: int) -> np.ndarray | None:
        """The stored frame as HxWx3 uint8 RGB, or None when it is missing or unreadable."""
        path = self.frame_path(number)
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED) if path.is_file() else None
        if image is None:
            return None
        if image.ndim == 2:
            return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)

    def store(self, number: int, image: np.ndarray) -> None:
        """Store a frame: HxW greyscale (kept as one channel) or HxWx3 RGB."""
        pixels = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        ok, data = cv2.imencode(".png", pixels)
        if not ok:
            raise OSError(f"could not encode control frame {number} as PNG")
        self._write(self.frame_path(number), data.tobytes())

    def meta(self) -> dict | None:
        try:
            return json.loads((self.folder / "meta.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def write_meta(self, data: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        files.write_json_atomic(self.folder / "meta.json", data)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the folder's lock (across processes) while deciding what its meta.json says."""
        with files.FileLock(self.folder / ".lock"):
            yield

    def _write(self, final: Path, data: bytes) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = files.temp_path(final)
        try:
            tmp.write_bytes(data)
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
