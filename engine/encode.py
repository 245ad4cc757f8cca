"""Encode final frames to segments in the output codec, then mux them with the source audio and timecode.

Each chunk's segment of final frames is encoded on its own (in the output
codec's container: H.264 in a small MP4, ProRes or DNxHR in a MOV). The output
is the concatenation of the segments (ffmpeg's concat demuxer, which keeps the
timing exact), remuxed without re-encoding, at exactly the output frame rate,
with the source's audio cut at the range's real timestamps and the range's
start timecode. Because a resumed render and an uninterrupted one encode the
same segments, their outputs are identical.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterable
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import ffmpeg
import numpy as np

from engine import faults, files
from engine.codecs import COLOUR_TAGS, DEFAULT_CODEC, output_codec
from engine.decode import widen_pipe
from engine.errors import DISK_FULL_MESSAGES, DiskFullError, EncodeError, MediaError
from engine.media_safety import OWN_GROUP, compile_command, fenced_input, last_line
from engine.probe import VideoInfo, probe


@dataclass(frozen=True)
class AudioCut:
    """The part of a source's audio that goes with the rendered range, in seconds of the source."""

    source: str
    start: float
    duration: float


def encode_segment(frames: Iterable[np.ndarray], width: int, height: int, fps: str, final: Path,
                   timeout: float = 3600.0, fault_point: str | None = None, codec: str = DEFAULT_CODEC) -> int:
    """Encode RGB frames in `codec` (engine/codecs.py) at `final` (atomically); return the frame count.
    `fault_point`: the point (engine/faults.py) reached while it is half-written."""
    chosen = output_codec(codec)
    with files.writing(final, fault_point=fault_point) as tmp:
        stream = (
            ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}", framerate=fps)
            .filter("scale", out_color_matrix="bt709", out_range="tv")
            # Frame-level tags too: ProRes and DNxHR write the colour description from the frames, not the options.
            .filter("setparams", range="tv", color_primaries="bt709", color_trc="bt709", colorspace="bt709")
            .output(str(tmp), format=chosen.container, **chosen.video, **COLOUR_TAGS)
        )
        process = subprocess.Popen(compile_command(stream), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, **OWN_GROUP)
        widen_pipe(process.stdin, width * height * 3)
        errors: list[bytes] = []
        reader = threading.Thread(target=lambda: errors.append(process.stderr.read()), daemon=True)
        reader.start()
        count = 0
        try:
            for frame in frames:
                process.stdin.write(np.ascontiguousarray(frame, dtype=np.uint8).data)  # no copy of the frame
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


def mux_output(segments: list[Path], fps: str, frame_count: int, final: Path, audio: AudioCut | None,
               work_dir: Path | None = None, timeout: float = 3600.0, codec: str = DEFAULT_CODEC,
               timecode: str | None = None, segment_frames: list[int] | None = None) -> VideoInfo:
    """Join the segments into `final` (atomically, in `codec`'s container), adding the source audio and the start
    timecode when given; return what the output holds.

    ffmpeg writes the joined file in the work folder, where nobody else writes; it is checked there and
    copied in beside the source through a temporary file hotshot creates itself, then renamed into place.
    `segment_frames`: each segment's frame count when the caller knows it (else each segment is probed).
    """
    work = work_dir or final.parent
    joined = work / "segments.txt"
    joined.write_text(concat_list(segments, fps, segment_frames))
    tmp = work / f".{final.name}.joined.{os.getpid()}.part"
    try:
        chosen = output_codec(codec)
        video = ffmpeg.input(str(joined), format="concat", safe=0, protocol_whitelist="file").video
        streams = [video]
        if audio is not None:
            streams.append(
                fenced_input(audio.source)
                .audio.filter("atrim", start=f"{audio.start:.6f}", duration=f"{audio.duration:.6f}")
                .filter("asetpts", "PTS-STARTPTS")
            )
        options = {"vcodec": "copy", "format": chosen.container, "map_metadata": -1, **chosen.mux}
        if audio is not None:
            options.update(chosen.audio)
        if timecode is not None:
            options["timecode"] = timecode  # written as a timecode track (tmcd) by the MP4 and MOV muxers
        command = compile_command(ffmpeg.output(*streams, str(tmp), **options))
        try:
            done = subprocess.run(command, capture_output=True, timeout=timeout, check=True,
                                  stdin=subprocess.DEVNULL, **OWN_GROUP)
        except subprocess.CalledProcessError as exc:
            raise _failure(tmp, "writing", exc.stderr) from exc
        except subprocess.TimeoutExpired as exc:
            raise EncodeError(f"writing {final.name} took longer than {timeout:g} s") from exc
        written = _check_written(tmp, tmp, frame_count, done.stderr)
        if written.fps != fps:
            raise EncodeError(f"writing {final.name} failed: it plays at {written.fps} fps instead of {fps}")
        files.copy_atomic(tmp, final, fault_point="after-chunks")
    finally:
        joined.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    return replace(written, path=str(final))


def concat_list(segments: list[Path], fps: str, segment_frames: list[int] | None = None) -> str:
    """The concat demuxer's list of segments, each with its exact duration.

    Left to itself the demuxer starts each segment where the previous file's duration says, which MP4 and MOV
    round to the millisecond: at 24 or 23.976 fps every join would shift the frames after it. Each duration is
    given to the microsecond, rounded from the exact running total so that rounding never accumulates.
    """
    rate = Fraction(fps)
    counts = segment_frames if segment_frames is not None else [probe(segment).frame_count for segment in segments]
    lines, frames, start = [], 0, 0
    for segment, count in zip(segments, counts, strict=True):
        frames += count
        end = round(Fraction(frames) / rate * 1_000_000)
        seconds, micro = divmod(end - start, 1_000_000)
        lines.append(f"file '{_quote(segment)}'\nduration {seconds}.{micro:06d}\n")
        start = end
    return "".join(lines)


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
