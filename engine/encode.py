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

import contextlib
import os
import subprocess
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import ffmpeg
import numpy as np

from engine import faults, files
from engine.codecs import COLOUR_TAGS, DEFAULT_CODEC, output_codec, segment_encoder
from engine.decode import widen_pipe
from engine.errors import DISK_FULL_MESSAGES, DiskFullError, EncodeError, MediaError, is_disk_full
from engine.media_safety import OWN_GROUP, compile_command, fenced_input, last_line
from engine.probe import VideoInfo, probe


@dataclass(frozen=True)
class AudioCut:
    """The part of a source's audio that goes with the rendered range, in seconds of the source."""

    source: str
    start: float
    duration: float
    carried: bool = False  # the cut is the source's whole audio stream, copied as it is (`carries_audio`)


# Audio codecs each container takes as they are; the editorial MOVs carry only the PCM they would write.
CARRIED_AUDIO = {"mp4": {"aac", "mp3"}}


def carries_audio(source: VideoInfo, start: float, duration: float, fps: str, codec: str = DEFAULT_CODEC) -> bool:
    """Whether the audio cut from `start` for `duration` seconds is the source's whole audio stream, in a codec
    the output's container takes as it is: then it is copied (no generation loss, no encoding) rather than
    encoded. The cut may miss up to one frame interval at either end (the stream's own start and end rarely
    fall on a frame)."""
    chosen = output_codec(codec)
    allowed = CARRIED_AUDIO.get(chosen.container, {chosen.audio.get("acodec")})
    if not source.has_audio or source.audio_codec not in allowed:
        return False
    if source.audio_start is None or source.audio_duration is None:
        return False
    slack = float(1 / Fraction(fps))
    return (start <= source.audio_start + slack
            and start + duration >= source.audio_start + source.audio_duration - slack)


def encode_segment(frames: Iterable[np.ndarray], width: int, height: int, fps: str, final: Path,
                   timeout: float = 3600.0, fault_point: str | None = None, codec: str = DEFAULT_CODEC,
                   last: bool = False) -> int:
    """Encode RGB frames in `codec` (engine/codecs.py) at `final` (atomically); return the frame count.
    `fault_point`: the point (engine/faults.py) reached while it is half-written; `last`: the render's last
    segment (`OutputCodec.segment_video`)."""
    encoder = SegmentEncoder(width, height, fps, final, fault_point, codec, last)
    encoder.feed(frames)
    return encoder.finish(timeout)


class SegmentEncoder:
    """One segment's encoder: an ffmpeg process taking RGB frames through a pipe, writing a temporary file that
    `finish` checks and renames into place (`abort`: killed and removed).

    `feed_behind` writes the frames from a thread of its own, so that the caller may start the next segment's
    encoder while this one still encodes: an encoder spends much of its time after its last frame arrived
    (x264 holds up to its lookahead's worth of frames), and encoders side by side keep every core busy where
    one at a time leaves them idle at each start and end."""

    def __init__(self, width: int, height: int, fps: str, final: Path, fault_point: str | None = None,
                 codec: str = DEFAULT_CODEC, last: bool = False) -> None:
        chosen = output_codec(codec)
        self.final, self.fault_point = final, fault_point
        self.count = 0
        self._tmp = files.temp_path(final)
        with contextlib.suppress(FileNotFoundError):
            self._tmp.unlink()
        stream = (
            ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}", framerate=fps)
            # The chroma planes are each 2x2 (4:2:0) or 2x1 (4:2:2) block's average (`area`): the exact box filter,
            # and cheaper than swscale's default bicubic, which also smears colour edges wider.
            .filter("scale", out_color_matrix="bt709", out_range="tv", flags="area")
            # Frame-level tags too: ProRes and DNxHR write the colour description from the frames, not the options.
            .filter("setparams", range="tv", color_primaries="bt709", color_trc="bt709", colorspace="bt709")
            .output(str(self._tmp), format=chosen.container, **chosen.segment_video(last), **COLOUR_TAGS)
        )
        self._process = subprocess.Popen(compile_command(stream, segment_encoder()), stdin=subprocess.PIPE,
                                         stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE, **OWN_GROUP)
        widen_pipe(self._process.stdin, width * height * 3)
        self._errors: list[bytes] = []
        self._reader = threading.Thread(target=lambda: self._errors.append(self._process.stderr.read()),
                                        daemon=True)
        self._reader.start()
        self._feeder: threading.Thread | None = None
        self._fed_error: BaseException | None = None
        self._broken = False

    def feed(self, frames: Iterable[np.ndarray]) -> None:
        """Write every frame, then close the pipe (the encoder then finishes on its own); an error here is
        raised by `finish`."""
        try:
            for frame in frames:
                self._process.stdin.write(np.ascontiguousarray(frame, dtype=np.uint8).data)  # no copy of the frame
                self.count += 1
                if self.count == 1 and self.fault_point:
                    faults.reached(self.fault_point)  # the segment is half-written
        except BrokenPipeError:
            self._broken = True  # ffmpeg stopped reading: its own error is the one to raise
        except BaseException as exc:  # noqa: BLE001  raised again by finish()
            self._fed_error = exc
        finally:
            with contextlib.suppress(BrokenPipeError):
                self._process.stdin.close()

    def feed_behind(self, frames: list[np.ndarray]) -> None:
        """`feed` on a thread of its own."""
        self._feeder = threading.Thread(target=self.feed, args=(frames,), name="hotshot-feed", daemon=True)
        self._feeder.start()

    def finish(self, timeout: float = 3600.0) -> int:
        """Wait for the encoder, check what it wrote and rename it into place; return the frame count."""
        try:
            if self._feeder is not None:
                self._feeder.join()
            if self._fed_error is not None:
                raise self._fed_error
            try:
                self._process.wait(timeout=timeout)
            except subprocess.TimeoutExpired as exc:
                raise self._failed() from exc
            self._reader.join(timeout=5)
            if self._process.returncode != 0 or self._broken:
                raise self._failed()
            if self.count:
                _check_boxes(self._tmp, self.final, b"".join(self._errors))
            if self.fault_point:
                faults.reached(self.fault_point)
            files.publish(self._tmp, self.final)
        except BaseException as exc:
            self.abort()
            if is_disk_full(exc):
                raise DiskFullError(self.final, exc.strerror) from exc
            raise
        return self.count

    def abort(self) -> None:
        """Stop the encoder and remove what it wrote (the render stopped, or the segment failed)."""
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        if self._feeder is not None:
            self._feeder.join()
        self._reader.join(timeout=5)
        with contextlib.suppress(FileNotFoundError):
            self._tmp.unlink()

    def _failed(self) -> EncodeError | DiskFullError:
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        self._reader.join(timeout=5)
        return _failure(self.final, "encoding", b"".join(self._errors))


def mux_output(segments: list[Path], fps: str, frame_count: int, final: Path, audio: AudioCut | Path | None,
               work_dir: Path | None = None, timeout: float = 3600.0, codec: str = DEFAULT_CODEC,
               timecode: str | None = None, segment_frames: list[int] | None = None) -> VideoInfo:
    """Join the segments into `final` (atomically, in `codec`'s container), adding the source audio and the start
    timecode when given; return what the output holds.

    ffmpeg writes the joined file in the work folder, where nobody else writes; it is checked there and
    copied in beside the source through a temporary file hotshot creates itself, then renamed into place.
    `segment_frames`: each segment's frame count when the caller knows it (else each segment is probed).
    `audio`: the cut to encode (or to copy from the source when it is `carried`), or the file `AudioEncoder`
    encoded it to (copied as it is).
    """
    work = work_dir or final.parent
    joined = work / "segments.txt"
    joined.write_text(concat_list(segments, fps, segment_frames))
    tmp = work / f".{final.name}.joined.{os.getpid()}.part"
    try:
        chosen = output_codec(codec)
        video = ffmpeg.input(str(joined), format="concat", safe=0, protocol_whitelist="file").video
        streams = [video]
        if isinstance(audio, Path):
            streams.append(ffmpeg.input(str(audio)).audio)
        elif audio is not None and audio.carried:
            streams.append(fenced_input(audio.source)["a:0"])
        elif audio is not None:
            streams.append(cut_audio(audio))
        options = {"vcodec": "copy", "format": chosen.container, "map_metadata": -1, **chosen.mux}
        if isinstance(audio, Path) or (audio is not None and audio.carried):
            options["acodec"] = "copy"
        elif audio is not None:
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


def cut_audio(audio: AudioCut) -> ffmpeg.nodes.FilterableStream:
    """The source's audio over the rendered range, moved so that the range's first frame is at 0.

    Moved by the cut's start, not by the first sample's time: a source whose audio starts after its picture (an
    encoder's priming delay, a track laid in late) keeps that gap, filled with silence, so the sound stays on
    its frames (moving by the first sample pulled it that far ahead of the picture)."""
    return (fenced_input(audio.source).audio
            .filter("atrim", start=f"{audio.start:.6f}", duration=f"{audio.duration:.6f}")
            .filter("asetpts", f"PTS-{audio.start:.6f}/TB")
            .filter("aresample", **{"async": 1, "first_pts": 0}))


class AudioEncoder:
    """The range's audio, encoded in the output codec's audio format into the work folder while the chunks render
    (a core left idle by the model does it), so that joining the segments at the end only copies it.

    Every attempt encodes it afresh from the source, with the same command, so a resumed render's audio is the
    uninterrupted one's."""

    def __init__(self, audio: AudioCut, work_dir: Path, codec: str = DEFAULT_CODEC) -> None:
        chosen = output_codec(codec)
        self.path = work_dir / f"audio{chosen.suffix}"
        self._tmp = files.temp_path(self.path)
        self._errors = tempfile.TemporaryFile()
        stream = ffmpeg.output(cut_audio(audio), str(self._tmp), format=chosen.container, map_metadata=-1,
                               **chosen.audio)
        self._process = subprocess.Popen(compile_command(stream), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=self._errors, **OWN_GROUP)

    def finish(self, timeout: float = 3600.0) -> Path:
        """Wait for it; the encoded audio's path."""
        try:
            try:
                self._process.wait(timeout=timeout)
            except subprocess.TimeoutExpired as exc:
                raise EncodeError(f"encoding the audio for {self.path.name} took longer than {timeout:g} s") from exc
            self._errors.seek(0)
            errors = self._errors.read()
            if self._process.returncode != 0:
                raise _failure(self.path, "encoding the audio for", errors)
            _check_boxes(self._tmp, self.path, errors)
            os.replace(self._tmp, self.path)
        finally:
            self.abort()
        return self.path

    def abort(self) -> None:
        """Stop it (if it still runs) and remove what it left unfinished."""
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        self._errors.close()
        with contextlib.suppress(FileNotFoundError):
            self._tmp.unlink()


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
