"""Decode a few chosen frames spread over a whole clip, in one pass."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import ffmpeg
import numpy as np

from engine.decode import FrameReader
from engine.errors import MediaError
from engine.source_colour import SourceColour


def evenly_spaced(frame_count: int, most: int) -> list[int]:
    """Up to `most` frame numbers spread evenly from the first frame to the last."""
    return sorted({round(value) for value in np.linspace(0, frame_count - 1, min(most, frame_count))})


class SampledFrameReader(FrameReader):
    """Iterate `(number, frame)` for the listed frame numbers (ascending) at the output size.

    ffmpeg's `select` filter picks the frames by number, as `trim` does for a
    range, so only the chosen frames are scaled and sent through the pipe.
    """

    def __init__(self, path: str | Path, numbers: list[int], width: int, height: int,
                 colour: SourceColour | None = None) -> None:
        super().__init__(path, numbers[0], numbers[-1], width, height, colour=colour)
        self.numbers = numbers

    def selected(self, video: ffmpeg.nodes.FilterableStream) -> ffmpeg.nodes.FilterableStream:
        return video.filter("select", "+".join(f"eq(n,{number})" for number in self.numbers))

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        assert self._process is not None, "use SampledFrameReader as a context manager"
        for number in self.numbers:
            data = self._read_exactly(self.width * self.height * 3)
            if data is None:
                self._process.wait()
                detail = self._stderr[-1] if self._stderr else "the stream ended early"
                raise MediaError(self.path, f"decoding stopped before frame {number} ({detail})")
            yield number, np.frombuffer(data, dtype=np.uint8).reshape(self.height, self.width, 3)
