"""Probing, frame-accurate decoding and encoding with the real ffmpeg."""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from engine.decode import PIPE_FRAMES, read_frames, widen_pipe
from engine.encode import AudioCut, encode_segment, mux_output
from engine.errors import MediaError
from engine.probe import _ffprobe_json, probe
from tests.helpers import make_clip


def test_probe_reads_the_bundled_clips(media):
    chaplin = probe(media / "chaplin.mp4")
    assert (chaplin.width, chaplin.height, chaplin.fps, chaplin.frame_count) == (640, 360, "25/1", 241)
    assert chaplin.has_audio and chaplin.audio_codec == "mp3"
    webm = probe(media / "bbb-short.webm")
    assert (webm.width, webm.height, webm.fps, webm.frame_count, webm.codec) == (1280, 720, "24/1", 24, "vp8")
    assert probe(media / "bars-timecode.mp4").has_audio is False


@pytest.mark.parametrize("content,reason", [
    (b"", "empty"),
    (b"this is a text file, not a video\n" * 20, "it is a text file, not a video"),
    (b"\x00\x01binary, but no video\n" * 20, "ffprobe failed"),
])
def test_probe_refuses_non_videos(tmp_path, content, reason):
    path = tmp_path / "plate.mp4"
    path.write_bytes(content)
    with pytest.raises(MediaError, match=reason):
        probe(path)


def test_probe_refuses_a_truncated_file(tmp_path, media):
    path = tmp_path / "cut.mp4"
    path.write_bytes((media / "chaplin.mp4").read_bytes()[:20000])
    with pytest.raises(MediaError):
        probe(path)


def test_playlist_disguised_as_mp4_cannot_make_ffmpeg_read_other_files(tmp_path, media):
    """An HLS playlist saved as .mp4 that points at another file is refused, not followed: as text before
    ffprobe runs, and by ffprobe's fence (protocol and demuxer whitelists) should it ever reach it."""
    path = tmp_path / "plate.mp4"
    path.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nfile://{media / 'chaplin.mp4'}\n#EXT-X-ENDLIST\n")
    with pytest.raises(MediaError, match="it is a text file, not a video"):
        probe(path)
    with pytest.raises(MediaError, match="ffprobe failed"):
        _ffprobe_json(str(path), 30.0, "-show_format", "-show_streams")


def test_decoding_a_range_is_frame_accurate(media):
    """Frames 17..31 decoded as a range equal the same frames of a full decode (timecode clip)."""
    full = list(read_frames(media / "bars-timecode.mp4", 0, 49, 128, 96))
    part = list(read_frames(media / "bars-timecode.mp4", 17, 31, 128, 96))
    assert len(full) == 50 and len(part) == 15
    for offset, frame in enumerate(part):
        assert np.array_equal(frame, full[17 + offset])
    assert not np.array_equal(full[17], full[18])


def test_decoding_past_the_end_reports_a_short_file(media):
    with pytest.raises(MediaError, match="decoding stopped at frame 50"):
        list(read_frames(media / "bars-timecode.mp4", 40, 59, 64, 48))


def test_encoding_keeps_ntsc_rate_and_adds_the_ranges_audio(tmp_path):
    """29.97 stays 30000/1001; the audio of the rendered range is muxed in; remuxing is byte-stable."""
    source = make_clip(tmp_path / "ntsc.mov", frames=60, rate="30000/1001", audio=True)
    info = probe(source)
    assert info.fps == "30000/1001" and info.has_audio
    frames = list(read_frames(source, 10, 39, 64, 48))
    work = tmp_path / "work"
    work.mkdir()
    encode_segment(frames[:12], 64, 48, info.fps, work / "a.mp4")
    encode_segment(frames[12:], 64, 48, info.fps, work / "b.mp4")
    out = tmp_path / "out.mp4"
    mux_output([work / "a.mp4", work / "b.mp4"], info.fps, 30, out, AudioCut(str(source), 10 * 1001 / 30000, 1.001),
               work)
    result = probe(out)
    assert (result.fps, result.frame_count, result.width, result.height) == ("30000/1001", 30, 64, 48)
    assert result.has_audio and abs(result.duration - 30 * 1001 / 30000) < 0.05
    first = hashlib.sha256(out.read_bytes()).hexdigest()
    mux_output([work / "a.mp4", work / "b.mp4"], info.fps, 30, out, AudioCut(str(source), 10 * 1001 / 30000, 1.001),
               work)
    assert hashlib.sha256(out.read_bytes()).hexdigest() == first
    back = list(read_frames(out, 0, 29, 64, 48))
    # 4:2:0 at 64x48 loses much of a busy pattern's colour detail, which the decoded source frames keep
    assert np.mean([np.abs(a.astype(int) - b).mean() for a, b in zip(back, frames, strict=True)]) < 14
    assert not list(tmp_path.glob(".*.part")) and not list(work.glob("*.txt"))


def test_encoding_keeps_colours(tmp_path):
    """A flat colour survives RGB → H.264 (BT.709) → RGB within 2 levels per channel."""
    colour = np.array([200, 50, 30], dtype=np.uint8)
    encode_segment([np.broadcast_to(colour, (48, 64, 3))] * 5, 64, 48, "25/1", tmp_path / "a.mp4")
    mux_output([tmp_path / "a.mp4"], "25/1", 5, tmp_path / "flat.mp4", None, tmp_path)
    back = list(read_frames(tmp_path / "flat.mp4", 0, 4, 64, 48))
    assert len(back) == 5
    assert np.abs(back[2].astype(int) - colour).max() <= 2


def test_a_pipe_to_ffmpeg_holds_a_whole_frame_even_where_a_few_are_refused():
    """A pipe for 640x480 frames is widened past Linux's 64 KiB default to a few frames, or, where the system
    refuses that many, to the most it allows (a whole frame at the default 1 MiB limit)."""
    frame = 640 * 480 * 3
    limit = int(Path("/proc/sys/fs/pipe-max-size").read_text())
    read_end, write_end = os.pipe()
    with os.fdopen(read_end, "rb") as pipe:
        os.close(write_end)
        widen_pipe(pipe, frame)
        assert fcntl.fcntl(pipe.fileno(), fcntl.F_GETPIPE_SZ) >= min(PIPE_FRAMES * frame, limit)
