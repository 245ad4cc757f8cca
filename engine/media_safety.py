"""How every ffmpeg and ffprobe process is started: fenced in and bounded.

A video file can ask its demuxer to open other files or URLs (an HLS playlist
or a concat list saved as `.mp4`). Every input is therefore opened with a
protocol whitelist (local files and pipes only) and a demuxer whitelist (the
containers hotshot accepts), probing is bounded, and every blocking call has a
timeout.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

import ffmpeg

PROTOCOLS = "file,pipe"
VIDEO_DEMUXERS = "mov,mp4,matroska,webm,avi,mxf"
PROBE_SIZE = 32 * 1024 * 1024
ANALYZE_MICROSECONDS = 20_000_000
FFMPEG_ARGS = ("-nostdin", "-hide_banner", "-loglevel", "error")
# Ctrl-C in a terminal signals its whole foreground process group. ffmpeg and ffprobe run in a group of their
# own, so that only hotshot stops them: a shutdown lets the running chunk finish instead of cutting its decode.
OWN_GROUP = {"process_group": 0}
FFPROBE_ARGS = ("-hide_banner", "-loglevel", "error")


def fenced_input(path: str, **options) -> ffmpeg.nodes.FilterableStream:
    """An ffmpeg-python input node that can only read this one local file."""
    return ffmpeg.input(
        str(path),
        protocol_whitelist=PROTOCOLS,
        format_whitelist=VIDEO_DEMUXERS,
        probesize=PROBE_SIZE,
        analyzeduration=ANALYZE_MICROSECONDS,
        **options,
    )


def compile_command(stream, binary: str = "ffmpeg") -> list[str]:
    """Compile an ffmpeg-python graph with the global options placed first."""
    args = ffmpeg.compile(stream, cmd=binary, overwrite_output=True)
    return [args[0], *FFMPEG_ARGS, *args[1:]]


def ffprobe_command(path: str, *extra: str) -> list[str]:
    """An ffprobe command line reading only `path`, JSON output."""
    return [
        "ffprobe",
        *FFPROBE_ARGS,
        "-protocol_whitelist", PROTOCOLS,
        "-format_whitelist", VIDEO_DEMUXERS,
        "-probesize", str(PROBE_SIZE),
        "-analyzeduration", str(ANALYZE_MICROSECONDS),
        "-of", "json",
        *extra,
        str(path),
    ]


def run_checked(cmd: Sequence[str], timeout: float) -> subprocess.CompletedProcess[bytes]:
    """Run a short ffmpeg/ffprobe command; raise `subprocess` errors as they come."""
    return subprocess.run(list(cmd), capture_output=True, timeout=timeout, check=True, stdin=subprocess.DEVNULL,
                          **OWN_GROUP)


def last_line(stderr: bytes | str | None) -> str:
    """The most useful line of an ffmpeg error output: its last non-empty one."""
    if not stderr:
        return "no error output"
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no error output"
