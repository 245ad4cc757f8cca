"""Probe a video file: size, frame rate, frame count, audio, timecode, alpha, how its colours are read."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

from engine.errors import MediaError
from engine.media_safety import ffprobe_command, last_line, run_checked
from engine.source_colour import SourceColour, source_colour

MAX_SIDE = 8192
MAX_FRAMES = 2_000_000
TEXT_SNIFF_BYTES = 4096


@dataclass(frozen=True)
class VideoInfo:
    """What hotshot needs to know about a video before rendering it."""

    path: str
    size_bytes: int
    format_name: str
    codec: str
    width: int
    height: int
    fps: str
    frame_count: int
    duration: float
    has_audio: bool
    audio_codec: str | None = None
    # The first audio stream's start (from the file's start, as the frame timestamps in engine/timing.py) and
    # duration, in seconds: whether a render's audio cut is the whole stream (engine/encode.py carries it as is).
    audio_start: float | None = None
    audio_duration: float | None = None
    avg_fps: str | None = None
    timecode: str | None = None
    pixel_format: str | None = None
    alpha: bool = False
    colour: SourceColour | None = None  # None: probed before hotshot read colour tags

    @property
    def fps_fraction(self) -> Fraction:
        return Fraction(self.fps)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> VideoInfo:
        colour = data.get("colour")
        return cls(**{**data, "colour": SourceColour(**colour) if colour else None})


def probe(path: str | Path, timeout: float = 30.0) -> VideoInfo:
    """Read a video's properties with ffprobe; raise `MediaError` if it is not a usable video."""
    path = str(path)
    try:
        st = os.stat(path)
    except OSError as exc:
        raise MediaError(path, f"cannot be opened ({exc.strerror})") from exc
    if not stat.S_ISREG(st.st_mode):
        raise MediaError(path, "it is not a regular file (a pipe or a device)")
    size = st.st_size
    if size == 0:
        raise MediaError(path, "the file is empty (0 bytes)")
    if _is_text(path):
        raise MediaError(path, "it is a text file, not a video (a playlist or a list of other files, perhaps); "
                               "hotshot reads only video files")

    data = _ffprobe_json(path, timeout, "-show_format", "-show_streams")
    streams = data.get("streams", [])
    video = _video_stream(path, streams)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)

    width, height = int(video.get("width") or 0), int(video.get("height") or 0)
    if _rotation(video) in (90, 270):
        width, height = height, width
    if not width or not height:
        raise MediaError(path, f"its frame size cannot be read (ffprobe reports {width}x{height}; the file may "
                               f"declare a frame too large for ffmpeg, over {MAX_SIDE}x{MAX_SIDE} in any case)")
    if not (16 <= width <= MAX_SIDE and 16 <= height <= MAX_SIDE):
        raise MediaError(path, f"its frame size {width}x{height} is outside 16x16 to {MAX_SIDE}x{MAX_SIDE}")

    fps = _frame_rate(video)
    if fps is None:
        raise MediaError(path, "its frame rate cannot be determined")

    frame_count = _frame_count(path, video, timeout)
    if frame_count <= 0:
        raise MediaError(path, "it contains no video frames")
    if frame_count > MAX_FRAMES:
        raise MediaError(path, f"it declares {frame_count} frames, more than the {MAX_FRAMES} hotshot accepts")

    fmt = data.get("format", {})
    average = _average_rate(video)
    duration = float(fmt.get("duration") or video.get("duration") or frame_count / fps)
    return VideoInfo(
        path=path,
        size_bytes=size,
        format_name=str(fmt.get("format_name", "")),
        codec=str(video.get("codec_name", "")),
        width=width,
        height=height,
        fps=f"{fps.numerator}/{fps.denominator}",
        frame_count=frame_count,
        duration=duration,
        has_audio=audio is not None,
        audio_codec=audio.get("codec_name") if audio else None,
        audio_start=_stream_start(audio, fmt) if audio else None,
        audio_duration=_number(audio.get("duration")) if audio else None,
        avg_fps=f"{average.numerator}/{average.denominator}" if average else None,
        timecode=_timecode(video, streams, fmt),
        pixel_format=video.get("pix_fmt"),
        alpha=_has_alpha(video),
        colour=source_colour(video),
    )


def probe_colour(path: str | Path, timeout: float = 30.0) -> SourceColour:
    """How a video's pixels are read as RGB (engine/source_colour.py), without the rest of `probe`."""
    path = str(path)
    return source_colour(_video_stream(path, _ffprobe_json(path, timeout, "-show_streams").get("streams", [])))


def _video_stream(path: str, streams: list[dict]) -> dict:
    """The video stream hotshot reads: the first that is not cover art."""
    video = next((s for s in streams if s.get("codec_type") == "video" and not _is_cover_art(s)), None)
    if video is None:
        raise MediaError(path, "it has no video stream")
    return video


def _number(text: object) -> float | None:
    try:
        return float(text) if text not in (None, "", "N/A") else None
    except (TypeError, ValueError):
        return None


def _stream_start(stream: dict, fmt: dict) -> float | None:
    """Where a stream starts, in seconds from the file's start time."""
    start = _number(stream.get("start_time"))
    return None if start is None else start - (_number(fmt.get("start_time")) or 0.0)


def _is_text(path: str) -> bool:
    """Whether the file starts like text (every video container starts with binary headers)."""
    with open(path, "rb") as handle:
        start = handle.read(TEXT_SNIFF_BYTES)
    try:
        text = start.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(char.isprintable() or char in "\t\r\n" for char in text)


def _ffprobe_json(path: str, timeout: float, *args: str) -> dict:
    try:
        done = run_checked(ffprobe_command(path, *args), timeout)
    except subprocess.TimeoutExpired as exc:
        raise MediaError(path, f"ffprobe did not finish within {timeout:g} s") from exc
    except subprocess.CalledProcessError as exc:
        raise MediaError(path, f"ffprobe failed: {last_line(exc.stderr)}") from exc
    try:
        return json.loads(done.stdout or b"{}")
    except json.JSONDecodeError as exc:
        raise MediaError(path, "ffprobe returned unreadable output") from exc


def _is_cover_art(stream: dict) -> bool:
    return bool(stream.get("disposition", {}).get("attached_pic"))


def _rotation(stream: dict) -> int:
    for side in stream.get("side_data_list", []) or []:
        if "rotation" in side:
            return int(round(float(side["rotation"]))) % 360
    rotate = stream.get("tags", {}).get("rotate")
    return int(rotate) % 360 if rotate else 0


def _frame_rate(stream: dict) -> Fraction | None:
    for key in ("r_frame_rate", "avg_frame_rate"):
        text = stream.get(key) or "0/0"
        try:
            value = Fraction(text)
        except (ValueError, ZeroDivisionError):
            continue
        if 0 < value <= 1000:
            return value
    return None


def _average_rate(stream: dict) -> Fraction | None:
    """The stream's average frame rate (frames over duration), which differs from its nominal rate when the
    frame rate varies."""
    try:
        value = Fraction(stream.get("avg_frame_rate") or "0/0")
    except (ValueError, ZeroDivisionError):
        return None
    return value if 0 < value <= 1000 else None


def _timecode(video: dict, streams: list[dict], fmt: dict) -> str | None:
    """The start timecode: the video stream's tag, a timecode track's (MOV/MP4 `tmcd`), or the file's."""
    places = [video, *(s for s in streams if s.get("codec_type") == "data"), fmt]
    for place in places:
        value = (place.get("tags") or {}).get("timecode")
        if value:
            return str(value)
    return None


# Pixel formats whose names carry an alpha plane (yuva420p, rgba, gbrap12le, ya8 ...).
_ALPHA_MARKERS = ("yuva", "rgba", "bgra", "argb", "abgr", "gbrap", "ya8", "ya16", "rgb32", "bgr32")


def _has_alpha(stream: dict) -> bool:
    """Whether the video carries transparency: an alpha pixel format, or WebM's alpha side stream (VP8/VP9
    with alpha decode as plain yuv420p but are tagged `alpha_mode` 1)."""
    pixel_format = str(stream.get("pix_fmt") or "")
    tags = {key.lower(): value for key, value in (stream.get("tags") or {}).items()}
    return pixel_format.startswith(_ALPHA_MARKERS) or str(tags.get("alpha_mode", "")) == "1"


def _frame_count(path: str, stream: dict, timeout: float) -> int:
    declared = stream.get("nb_frames")
    if declared and str(declared).isdigit() and int(declared) > 0:
        return int(declared)
    counted = _ffprobe_json(path, timeout, "-count_packets", "-select_streams", "v:0",
                            "-show_entries", "stream=nb_read_packets")
    streams = counted.get("streams") or [{}]
    return int(streams[0].get("nb_read_packets") or 0)
