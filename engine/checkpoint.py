"""Chunk checkpoints in the job's work folder, for resuming after a crash.

A finished chunk leaves two files: its raw output frames (`chunk-NNNN.npy`,
needed by the next chunk as known frames and for the crossfade) and its
encoded segment of final frames (`segment-NNNN.mp4`). Raw frames of older
chunks are deleted once two newer chunks exist, so a long render keeps only
compressed segments on disk.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from engine import files

KEEP_RAW = 2


class WorkFolder:
    """The checkpoint files of one job."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def raw_path(self, index: int) -> Path:
        return self.root / f"chunk-{index:04d}.npy"

    def segment_path(self, index: int) -> Path:
        return self.root / f"segment-{index:04d}.mp4"

    def save_raw(self, index: int, frames: np.ndarray) -> None:
        with files.writing(self.raw_path(index)) as tmp:
            with open(tmp, "wb") as handle:
                np.save(handle, frames, allow_pickle=False)

    def load_raw(self, index: int, shape: tuple[int, ...]) -> np.ndarray | None:
        """The raw frames of chunk `index`, or None if missing or not of the expected shape."""
        path = self.raw_path(index)
        try:
            frames = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return None
        if frames.shape != shape or frames.dtype != np.uint8:
            return None
        return frames

    def has_segment(self, index: int) -> bool:
        path = self.segment_path(index)
        return path.is_file() and path.stat().st_size > 0

    def drop_old_raw(self, latest: int) -> None:
        for index in range(latest - KEEP_RAW, -1, -1):
            with contextlib.suppress(FileNotFoundError):
                self.raw_path(index).unlink()

    def resume_point(self, recorded: set[int], chunk_count: int, raw_shape) -> tuple[int, np.ndarray | None]:
        """The first chunk to render and the raw frames of the chunk before it.

        Resuming needs every segment before that chunk and the raw frames of
        the chunk just before it; chunks without a recorded row do not count.
        """
        done = 0
        while done < chunk_count and done in recorded and self.has_segment(done):
            done += 1
        while done > 0:
            previous = self.load_raw(done - 1, raw_shape(done - 1))
            if previous is not None:
                return done, previous
            done -= 1
        return 0, None
