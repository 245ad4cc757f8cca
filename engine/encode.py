"""Encode final frames to H.264 segments, then mux them with the source audio.

Each chunk's segment of final frames is encoded on its own (H.264 in a small
MP4). The output MP4 is the concatenation of the segments (ffmpeg's concat
demuxer, which keeps the timing exact), remuxed without re-encoding, at exactly the source frame rate, with the
source's audio for the rendered range. Because a resumed render and an
uninterrupted one encode the same segments, their outputs are identical.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterable
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import ffmpeg
import numpy as np

from engine import faults, files
from engine.errors import DISK_FULL_MESSAGES, DiskFullError, EncodeError, MediaError
from engine.media_safety import OWN_GROUP, compile_command, fenced_input, last_line
from engine.probe import VideoInfo, probe

X264_PRESET = "medium"
X264_CRF = 16
AUDIO_BITRATE = "192k"
COLOUR_TAGS = {"colorspace": "bt709", "color_primaries": "bt709", "color_trc": "bt709"}


def encode_segment(frames: Iterable[np.ndarray], width: int, height: int, fps: str, final: Path,
                   timeout: float = 3600.0, fault_point: str | None = None) -> int:
    """Encode RGB frames to H.264 in an MP4 at `final` (atomically); return the frame count. `fault_point`: the
    point (engine/faults.py) reached while it is half-written."""
    with files.writing(final, fault_point=fault_point) as tmp:
        stream = (
            ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}", framerate=fps)
            .filter("scale", out_color_matrix="bt709", out_range="tv")
            .output(str(tmp), format="mp4", vcodec="libx264", preset=X264_PRESET, crf=X264_CRF,
                    pix_fmt="yuv420p", **COLOUR_TAGS)
        )
        process = subprocess.Popen(compile_command(stream), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, **OWN_GROUP)
        errors: list[bytes] = []
        reader = threading.Thread(target=lambda: errors.append(process.stderr.read()), daemon=True)
        reader.start()
        count = 0
        try:
            for frame in frames:
                process.stdin.write(np.ascontiguousarray(frame, dtype=np.uint8).tobytes())
                count += 1
                if count == 1 and fault_point:
                    faults.reached(fault_point)  # the segment is half-written
            process.stdin.close()
            process.wait(timeout=timeout)
        except (BrokenPipeError, subprocess.TimeoutExpired) as exc:
            process.kill()
            process.wait()
            reader.join(timeout=5)
            raise _failure(final, "encoding", b"".join(errors)) from exc
        reader.join(timeout=5)
        if process.returncode != 0:
            raise _failure(final, "encoding", b"".join(errors))
        if count:
            _check_boxes(tmp, final, b"".join(errors))
    return count


def mux_output(segments: list[Path], fps: str, frame_count: int, final: Path, source: str | None,
               audio_start_frame: int = 0, work_dir: Path | None = None, timeout: float = 3600.0) -> VideoInfo:
    """Join the segments into `final` (MP4, atomically), adding the source audio when given; return what the
    output holds.

    ffmpeg writes the joined file in the work folder, where nobody else writes; it is checked there and
    copied in beside the source through a temporary file hotshot creates itself, then renamed into place.
    """
    work = work_dir or final.parent
    joined = work / "segments.txt"
    joined.write_text("".join(f"file '{_quote(segment)}'\n" for segment in segments))
    tmp = work / f".{final.name}.joined.{os.getpid()}.part"
    try:
        video = ffmpeg.input(str(joined), format="concat", safe=0, protocol_whitelist="file").video
        streams = [video]
        if source is not None:
            rate = Fraction(fps)
            start = float(audio_start_frame / rate)
            duration = float(frame_count / rate)
            audio = (
                fenced_input(source)
                .audio.filter("atrim", start=f"{start:.6f}", duration=f"{duration:.6f}")
                .filter("asetpts", "PTS-STARTPTS")
            )
            streams.append(audio)
        options = {"vcodec": "copy", "format": "mp4", "movflags": "+faststart", "map_metadata": -1}
        if source is not None:
            options.update(acodec="aac", audio_bitrate=AUDIO_BITRATE)
        command = compile_command(ffmpeg.output(*streams, str(tmp), **options))
        try:
            done = subprocess.run(command, capture_output=True, timeout=timeout, check=True,
                                  stdin=subprocess.DEVNULL, **OWN_GROUP)
        except subprocess.CalledProcessError as exc:
            raise _failure(tmp, "writing", exc.stderr) from exc
        except subprocess.TimeoutExpired as exc:
            raise EncodeError(f"writing {final.name} took longer than {timeout:g} s") from exc
        written = _check_written(tmp, tmp, frame_count, done.stderr)
        files.copy_atomic(tmp, final, fault_point="after-chunks")
    finally:
        joined.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    return replace(written, path=str(final))


def _check_written(tmp: Path, final: Path, frames: int, stderr: bytes | None) -> VideoInfo:
    """Refuse to publish what ffmpeg wrote unless it is whole: ffmpeg exits 0 even when it could not write
    its trailer (a full disk), leaving a file no player can open. Return what it holds."""
    _check_boxes(tmp, final, stderr)
    try:
        written = probe(tmp)
    except MediaError as exc:
        raise EncodeError(f"writing {final.name} failed: what ffmpeg wrote is not readable ({exc.reason})") from exc
    if written.frame_count != frames:
        raise EncodeError(f"writing {final.name} failed: it holds {written.frame_count} frames instead of {frames}")
    return written


def _check_boxes(tmp: Path, final: Path, stderr: bytes | None) -> None:
    """A quick check of an MP4 ffmpeg says it wrote: no write error in its output, and top-level boxes that
    fill the file exactly and include the index (`moov`), which a truncated file lacks."""
    text = (stderr or b"").decode("utf-8", "replace")
    if any(message in text for message in DISK_FULL_MESSAGES) or "Error writing trailer" in text \
            or "Error closing file" in text:
        raise _failure(final, "writing", stderr)
    names, offset, size = set(), 0, tmp.stat().st_size
    with open(tmp, "rb") as handle:
        while offset < size:
            handle.seek(offset)
            header = handle.read(16)
            length, name = int.from_bytes(header[:4], "big"), header[4:8]
            if length == 1 and len(header) == 16:
                length = int.from_bytes(header[8:16], "big")
            elif length == 0:
                length = size - offset
            if length < 8 or offset + length > size:
                raise EncodeError(f"writing {final.name} failed: the file ffmpeg wrote is cut short at byte {offset}")
            names.add(name)
            offset += length
    if b"moov" not in names:
        raise EncodeError(f"writing {final.name} failed: the file ffmpeg wrote has no index (moov box)")


def _failure(final: Path, doing: str, stderr: bytes | None) -> EncodeError | DiskFullError:
    """What ffmpeg's failure to write `final` means: a full disk, or an encoding error with its last line."""
    text = (stderr or b"").decode("utf-8", "replace")
    full = next((message for message in DISK_FULL_MESSAGES if message in text), None)
    if full:
        return DiskFullError(final, full)
    return EncodeError(f"{doing} {final.name} failed: {last_line(stderr)}")


def _quote(path: Path) -> str:
    """A path quoted for a concat list file."""
    return str(path.resolve()).replace("'", "'\\''")
