"""Stream decoded frames of a frame range through a pipe, one at a time.

Frames are selected by number with ffmpeg's `trim` filter (frame-accurate,
unlike a timestamp seek), scaled to cover the output size and centre-cropped,
and read as raw RGB with the source's matrix and range (engine/source_colour.py:
its tags, else the players' rule). Only one frame is held here at a time.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import select
import subprocess
import threading
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import ffmpeg
import numpy as np

from engine.errors import MediaError
from engine.media_safety import OWN_GROUP, compile_command, fenced_input
from engine.probe import probe_colour
from engine.source_colour import SourceColour
from engine.timeline import Timeline

STALL_SECONDS = 120.0
PIPE_FRAMES = 2  # a pipe to or from ffmpeg holds this many frames (Linux's default is 64 KiB, a tenth of a frame)


def widen_pipe(pipe, frame_bytes: int) -> None:
    """Let `pipe` hold a few whole frames, so that ffmpeg and hotshot wake each other per frame rather than per
    64 KiB. An unprivileged process may not go past the system's limit (/proc/sys/fs/pipe-max-size, 1 MiB by
    default: about one 640x480 frame), so where a few frames are refused the pipe gets that limit; where even
    that is refused it stays as it was (only slower)."""
    with contextlib.suppress(OSError, AttributeError, ValueError):
        try:
            fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_FRAMES * frame_bytes)
        except PermissionError:
            fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, min(PIPE_FRAMES * frame_bytes, _pipe_max_size()))


@functools.cache
def _pipe_max_size() -> int:
    """The largest pipe an unprivileged process may ask for."""
    return int(Path("/proc/sys/fs/pipe-max-size").read_text())


class FrameReader:
    """Iterate the frames `first..last` (inclusive) of a video as HxWx3 uint8 arrays.

    `colour` is how the video's pixels are read as RGB, from its probe; without it the video is probed here."""

    def __init__(self, path: str | Path, first: int, last: int, width: int, height: int,
                 stall_seconds: float = STALL_SECONDS, colour: SourceColour | None = None) -> None:
        self.path = str(path)
        self.colour = colour or probe_colour(self.path)
        self.first, self.last = first, last
        self.width, self.height = width, height
        self.stall_seconds = stall_seconds
        self._process: subprocess.Popen | None = None
        self._stderr: deque[str] = deque(maxlen=20)
        self._stderr_thread: threading.Thread | None = None

    def command(self) -> list[str]:
        stream = (
            self.selected(fenced_input(self.path).video)
            # full_chroma_int: scaled frames are converted to RGB at full chroma resolution; without it,
            # flat colours came out 2-5 levels off (bench/colour_check.py).
            .filter("scale", self.width, self.height, force_original_aspect_ratio="increase",
                    flags="bicubic+full_chroma_int", **self.colour.scale_options())
            .filter("crop", self.width, self.height)
            .output("pipe:", format="rawvideo", pix_fmt="rgb24", fps_mode="passthrough")
        )
        return compile_command(stream)

    def selected(self, video: ffmpeg.nodes.FilterableStream) -> ffmpeg.nodes.FilterableStream:
        """The frames this reader sends, out of the video stream: `first..last`, by number."""
        return video.filter("trim", start_frame=self.first, end_frame=self.last + 1).filter("setpts", "N/FRAME_RATE/TB")

    def __enter__(self) -> FrameReader:
        self._process = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **OWN_GROUP
        )
        widen_pipe(self._process.stdout, self.width * self.height * 3)
        self._stderr_thread = threading.Thread(target=self._collect_stderr, daemon=True)
        self._stderr_thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def stop(self) -> None:
        """End the decoder early (from another thread): a read waiting on it sees the stream end."""
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()

    def close(self) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        if self._process.stdout:
            self._process.stdout.close()
        if self._stderr_thread:
            self._stderr_thread.join(timeout=5)
        self._process = None

    def __iter__(self) -> Iterator[np.ndarray]:
        assert self._process is not None, "use FrameReader as a context manager"
        expected = self.last - self.first + 1
        for number in range(expected):
            frame = np.empty((self.height, self.width, 3), np.uint8)
            if not self._read_into(memoryview(frame).cast("B")):
                self._process.wait()
                detail = self._stderr[-1] if self._stderr else "the stream ended early"
                raise MediaError(
                    self.path,
                    f"decoding stopped at frame {self.first + number} of the range "
                    f"{self.first}-{self.last} ({detail}); the file may be truncated or damaged",
                )
            yield frame

    def _read_exactly(self, size: int) -> bytearray | None:
        """The next `size` bytes of ffmpeg's output, or None if it ended first (for readers of other layouts)."""
        data = bytearray(size)
        return data if self._read_into(memoryview(data)) else None

    def _read_into(self, buffer: memoryview) -> bool:
        """Fill `buffer` from ffmpeg's output (read straight into the frame: no copy); False if it ended first."""
        stdout = self._process.stdout
        filled, size = 0, len(buffer)
        while filled < size:
            ready, _, _ = select.select([stdout], [], [], self.stall_seconds)
            if not ready:
                raise MediaError(self.path, f"ffmpeg produced no frame for {self.stall_seconds:g} s")
            count = stdout.readinto1(buffer[filled:])
            if not count:
                return False
            filled += count
        return True

    def _collect_stderr(self) -> None:
        for raw in self._process.stderr:
            line = raw.decode("utf-8", "replace").strip()
            if line:
                self._stderr.append(line)


def read_frames(path: str | Path, first: int, last: int, width: int, height: int,
                colour: SourceColour | None = None) -> Iterator[np.ndarray]:
    """Convenience generator over `FrameReader` that closes ffmpeg when done."""
    with FrameReader(path, first, last, width, height, colour=colour) as reader:
        yield from reader


def timeline_frames(decoded: Iterator[np.ndarray], decode_from: int, timeline: Timeline,
                    from_position: int) -> Iterator[np.ndarray]:
    """The decoded frame for each timeline position from `from_position` on (repeats where the timeline repeats)."""
    number, frame = decode_from - 1, None
    for position in range(from_position, timeline.positions):
        wanted = timeline.sources[position]
        while number < wanted:
            frame = next(decoded)
            number += 1
        yield frame


class SourceWindow:
    """Timeline frames read once, in order, kept only while a chunk may still need them."""

    def __init__(self, frames: Iterator[np.ndarray], first_index: int = 0) -> None:
        self._frames = frames
        self._held: deque[np.ndarray] = deque()
        self._held_from = first_index

    def take(self, start: int, end: int) -> list[np.ndarray]:
        while self._held_from < start:
            if self._held:
                self._held.popleft()
            else:
                next(self._frames)
            self._held_from += 1
        while self._held_from + len(self._held) < end:
            self._held.append(next(self._frames))
        return list(self._held)[start - self._held_from : end - self._held_from]
