"""Chunk checkpoints in the job's work folder, for resuming after a crash.

A finished chunk leaves three files: the tail of its raw output frames (`chunk-NNNN.npy`: the frames from
the next chunk's first on, which the next chunk takes as known frames and crossfades; the frames before it
are never read again, so they are not written), its encoded
segment of final frames (`segment-NNNN.mp4`, `.mov` for the editorial codecs) and its last final frame
(`final-NNNN.npy`, the next chunk's dynamic reference and interpolation
neighbour). Raw frames of older chunks are deleted once two newer chunks exist,
so a long render keeps only compressed segments on disk. The colour anchor of
a render with colour consistency is kept in `anchor.json`.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np

from engine import files

KEEP_RAW = 2


class WorkFolder:
    """The checkpoint files of one job."""

    def __init__(self, root: Path, segment_suffix: str = ".mp4") -> None:
        self.root = root
        self.segment_suffix = segment_suffix

    def prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def raw_path(self, index: int) -> Path:
        return self.root / f"chunk-{index:04d}.npy"

    def segment_path(self, index: int) -> Path:
        return self.root / f"segment-{index:04d}{self.segment_suffix}"

    def save_raw(self, index: int, frames: np.ndarray, needed_from: int = 0) -> None:
        """Keep chunk `index`'s raw frames from `needed_from` on (what the next chunk reads of them)."""
        with files.writing(self.raw_path(index), fault_point="chunk") as tmp:
            with open(tmp, "wb") as handle:
                np.save(handle, frames[needed_from:], allow_pickle=False)

    def load_raw(self, index: int, shape: tuple[int, ...], needed_from: int = 0) -> np.ndarray | None:
        """The raw frames of chunk `index` in an array of `shape` (frames before `needed_from` are not kept:
        they read as black), or None if missing or not of the expected shape. A checkpoint holding every frame
        (written before only the tail was kept) is taken as it is."""
        path = self.raw_path(index)
        try:
            frames = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return None
        if frames.dtype != np.uint8:
            return None
        if frames.shape == tuple(shape):
            return frames
        if frames.shape != (shape[0] - needed_from, *shape[1:]):
            return None
        whole = np.zeros(shape, np.uint8)  # pages of the unused head are never touched, so never resident
        whole[needed_from:] = frames
        return whole

    def final_path(self, index: int) -> Path:
        return self.root / f"final-{index:04d}.npy"

    def save_final(self, index: int, frame: np.ndarray) -> None:
        with files.writing(self.final_path(index), fault_point="chunk") as tmp:
            with open(tmp, "wb") as handle:
                np.save(handle, frame, allow_pickle=False)

    def load_final(self, index: int, shape: tuple[int, ...]) -> np.ndarray | None:
        try:
            frame = np.load(self.final_path(index), allow_pickle=False)
        except (OSError, ValueError):
            return None
        return frame if frame.shape == shape and frame.dtype == np.uint8 else None

    def save_anchor(self, data: dict) -> None:
        files.write_json_atomic(self.root / "anchor.json", data)

    def load_anchor(self) -> dict | None:
        try:
            return json.loads((self.root / "anchor.json").read_text())
        except (OSError, ValueError):
            return None

    def has_segment(self, index: int) -> bool:
        path = self.segment_path(index)
        return path.is_file() and path.stat().st_size > 0

    def drop_old_raw(self, latest: int) -> None:
        for index in range(latest - KEEP_RAW, -1, -1):
            for path in (self.raw_path(index), self.final_path(index)):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    def resume_point(self, recorded: set[int], chunk_count: int, raw_shape, frame_shape,
                     needed_from=lambda index: 0) -> tuple[int, np.ndarray | None, np.ndarray | None]:
        """The first chunk to render, and the raw frames and last final frame of the chunk before it.

        Resuming needs every segment before that chunk and the checkpoint of
        the chunk just before it; chunks without a recorded row do not count.
        """
        done = 0
        while done < chunk_count and done in recorded and self.has_segment(done):
            done += 1
        while done > 0:
            previous = self.load_raw(done - 1, raw_shape(done - 1), needed_from(done - 1))
            final = self.load_final(done - 1, frame_shape)
            if previous is not None and final is not None:
                return done, previous, final
            done -= 1
        return 0, None, None
