"""The output codecs a render can be delivered in: H.264 for review, ProRes and DNxHR for editorial.

Every choice is made by ffmpeg's own encoders (libx264, prores_ks, dnxhd).
ProRes and DNxHR are intra-frame codecs, so chunk segments join without
re-encoding exactly as H.264 segments do, and a resumed render stays
byte-identical to an uninterrupted one. Editorial containers (MOV) carry the
audio as 24-bit PCM, which every editing system reads without decoding losses.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Literal

from engine.errors import SettingsError

CodecName = Literal["h264", "prores_422_hq", "prores_4444", "dnxhr_hq"]
COLOUR_TAGS = {"colorspace": "bt709", "color_primaries": "bt709", "color_trc": "bt709"}
# x264's output depends on its thread count, which it would otherwise take from the machine's cores: pinned, a
# render resumed on another machine (a Ray cluster's other node) encodes its segments as the first would have.
# One thread per encoder, with two segments' encoders side by side (engine/chunks.py): of 1, 2, 3 and 4 threads it
# spent the least CPU and was as fast as any on two cores (docs/benchmarks.md); a machine with more cores has them
# for the model.
X264_THREADS = 1
# The last segment is the one the render's end waits for: every other is encoded while later chunks render, but
# nothing is left to overlap the last one (and with a real model the cores are idle then), so it gets more
# threads. Still a fixed count, so its bytes do not depend on the machine either.
X264_LAST_SEGMENT_THREADS = 2


@dataclass(frozen=True)
class OutputCodec:
    """One output choice: its encoder settings, its container and the name its files end with."""

    name: str
    description: str
    container: str  # the ffmpeg muxer, which is also the segment's
    suffix: str
    video: dict = field(default_factory=dict)
    audio: dict = field(default_factory=dict)
    mux: dict = field(default_factory=dict)
    min_width: int = 16
    min_height: int = 16

    def segment_video(self, last: bool) -> dict:
        """The video encoder's options for one segment (`last`: the render's last segment)."""
        if last and "threads" in self.video:
            return {**self.video, "threads": X264_LAST_SEGMENT_THREADS}
        return self.video

    def check_size(self, width: int, height: int) -> None:
        """Refuse an output size the encoder cannot write."""
        if width < self.min_width or height < self.min_height:
            raise SettingsError(
                f"output_codec {self.name!r} needs an output of at least {self.min_width}x{self.min_height}, "
                f"and this render would be {width}x{height}; raise output_size or choose another output_codec "
                f"({', '.join(name for name in CODECS if name != self.name)})"
            )


CODECS: dict[str, OutputCodec] = {
    "h264": OutputCodec(
        "h264", "H.264 (High, 4:2:0, 8-bit, CRF 16) in MP4 with AAC audio: for review and the web", "mp4", ".mp4",
        video={"vcodec": "libx264", "preset": "medium", "crf": 16, "pix_fmt": "yuv420p", "threads": X264_THREADS},
        audio={"acodec": "aac", "audio_bitrate": "192k"},
        mux={"movflags": "+faststart"},
    ),
    "prores_422_hq": OutputCodec(
        "prores_422_hq", "Apple ProRes 422 HQ (4:2:2, 10-bit) in MOV with PCM audio: for editorial", "mov", ".mov",
        video={"vcodec": "prores_ks", "profile:v": "3", "pix_fmt": "yuv422p10le", "vendor": "apl0"},
        audio={"acodec": "pcm_s24le"},
    ),
    "prores_4444": OutputCodec(
        "prores_4444", "Apple ProRes 4444 (4:4:4, 10-bit) in MOV with PCM audio: for finishing", "mov", ".mov",
        video={"vcodec": "prores_ks", "profile:v": "4", "pix_fmt": "yuv444p10le", "vendor": "apl0"},
        audio={"acodec": "pcm_s24le"},
    ),
    "dnxhr_hq": OutputCodec(
        "dnxhr_hq", "Avid DNxHR HQ (4:2:2, 8-bit) in MOV with PCM audio: for Avid editorial", "mov", ".mov",
        video={"vcodec": "dnxhd", "profile:v": "dnxhr_hq", "pix_fmt": "yuv422p"},
        audio={"acodec": "pcm_s24le"},
        # The encoder refuses smaller frames.
        min_width=256, min_height=120,
    ),
}
DEFAULT_CODEC = "h264"
SUFFIXES = frozenset(codec.suffix for codec in CODECS.values())


def output_codec(name: str) -> OutputCodec:
    """The codec called `name`; refuse an unknown one, listing the choices."""
    try:
        return CODECS[name]
    except KeyError:
        raise SettingsError(f"output_codec {name!r} is not known; use one of {', '.join(CODECS)}") from None


@functools.cache
def segment_encoder() -> str:
    """The ffmpeg that encodes chunk segments: the statically linked build imageio-ffmpeg installs, where there is
    one for this platform. A render starts an encoder per chunk, and the system's ffmpeg spends about 0.08 s of
    CPU loading its 200-odd shared libraries at each start (a static build: 0.01 s). Joining, decoding and probing
    stay with the system's ffmpeg; the segments it joins are plain MP4 or MOV files either way."""
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        return "ffmpeg"
