"""When each source frame is shown: the real timestamps a range's audio is cut at, and variable frame rates.

A constant-rate source shows frame N at N ÷ rate. A variable-rate one (phone
footage, screen recordings) does not: frame 10 may be shown 50 ms later. The
decoder hands over every frame once, so the output plays them at a constant
rate, the source's average, while the audio for the range is cut where the
range's first and last frames really are, so that it starts in sync.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from fractions import Fraction

from engine.errors import MediaError
from engine.media_safety import ffprobe_command, last_line, run_checked
from engine.probe import VideoInfo

# A frame further than this share of a frame interval from the constant-rate grid makes the source variable-rate;
# it allows for containers that round timestamps to the millisecond (Matroska at 29.97 fps).
VFR_TOLERANCE = 0.25


@dataclass(frozen=True)
class SourceTiming:
    """The output's frame rate and where the range's audio starts and how long it lasts, in seconds."""

    output_fps: str
    variable: bool
    audio_start: float
    audio_duration: float
    largest_offset: float  # seconds: the furthest an output frame is shown from its time in the source

    def to_manifest(self, source: VideoInfo) -> dict:
        return {
            "source": source.fps,
            "source_average": source.avg_fps,
            "variable": self.variable,
            "output": self.output_fps,
            "constant_rate_output": True,
            "largest_frame_offset_ms": round(self.largest_offset * 1000, 1),
            "audio_start_seconds": round(self.audio_start, 6),
            "audio_duration_seconds": round(self.audio_duration, 6),
        }


def timing_warnings(source: VideoInfo, timing: SourceTiming) -> list[str]:
    """What a user must know about the output's timing."""
    if not timing.variable:
        return []
    return [f"the source has a variable frame rate; the output is constant-rate at its average rate, "
            f"{_rate_text(timing.output_fps)} fps: every frame is kept, shown up to "
            f"{timing.largest_offset * 1000:.0f} ms from its time in the source, and the audio starts with the "
            "range's first frame"]


def source_timing(source: VideoInfo, first: int, last: int, timeout: float = 120.0,
                  read: tuple[list[float], float] | None = None) -> SourceTiming:
    """Read the video's frame timestamps (unless `read` holds what `frame_times` returned) and work out the
    output rate and the range's audio cut."""
    times, end = read if read is not None else frame_times(source.path, timeout)
    nominal = Fraction(source.fps)
    if len(times) != source.frame_count or not times:
        # Timestamps unreadable (or not one per frame): fall back on the nominal rate.
        return SourceTiming(source.fps, False, float(first / nominal), float((last - first + 1) / nominal), 0.0)
    interval = 1 / float(nominal)
    variable = any(abs(time - times[0] - index * interval) > VFR_TOLERANCE * interval
                   for index, time in enumerate(times))
    output_fps = source.avg_fps if variable and source.avg_fps else source.fps
    # How far an output frame is shown from where the source shows it, from the range's first frame on.
    step = 1 / float(Fraction(output_fps))
    offset = max(abs(times[index] - times[first] - (index - first) * step) for index in range(first, last + 1))
    stop = times[last + 1] if last + 1 < len(times) else end
    return SourceTiming(output_fps, variable, times[first], max(0.0, stop - times[first]), offset)


def frame_times(path: str, timeout: float) -> tuple[list[float], float]:
    """Every video frame's presentation time in display order, measured as ffmpeg measures when it reads the
    file (from the file's start time), and when the last frame ends."""
    command = ffprobe_command(path, "-select_streams", "v:0", "-show_entries",
                              "packet=pts_time,duration_time,flags:format=start_time")
    try:
        done = run_checked(command, timeout)
        data = json.loads(done.stdout or b"{}")
    except subprocess.TimeoutExpired as exc:
        raise MediaError(path, f"reading its frame timestamps took longer than {timeout:g} s") from exc
    except subprocess.CalledProcessError as exc:
        raise MediaError(path, f"its frame timestamps cannot be read: {last_line(exc.stderr)}") from exc
    except json.JSONDecodeError as exc:
        raise MediaError(path, "ffprobe returned unreadable frame timestamps") from exc
    start = _seconds((data.get("format") or {}).get("start_time")) or 0.0
    frames = []
    # Packets the demuxer marks discardable (before an edit list's start) are never shown.
    for packet in data.get("packets") or []:
        if "D" in str(packet.get("flags", "")):
            continue
        pts = _seconds(packet.get("pts_time"))
        if pts is None:
            return [], 0.0
        frames.append((pts, _seconds(packet.get("duration_time")) or 0.0))
    frames.sort()
    if not frames:
        return [], 0.0
    end = frames[-1][0] + frames[-1][1] - start
    return [pts - start for pts, _ in frames], end


def _rate_text(fps: str) -> str:
    rate = Fraction(fps)
    return str(rate.numerator) if rate.denominator == 1 else f"{float(rate):.3f} ({fps})"


def _seconds(text: object) -> float | None:
    try:
        return float(text) if text not in (None, "", "N/A") else None
    except ValueError:
        return None
