"""Image-sequence export for VFX: every output frame as a PNG or EXR beside the MP4.

Frames go into a folder named after the render, `<render>.<frame>.<ext>`,
numbered from the source frame plus `first_frame_number` (1001 by default, the
VFX convention). They are written into a hidden staging folder beside the final
one, which is renamed into place when the render finishes, so the sequence
appears complete or not at all.

PNG holds the 8-bit sRGB frames losslessly. EXR holds them as scene-linear half
floats, decoded with the sRGB EOTF, tagged with Rec.709 primaries and a D65
white, and ZIP-compressed: lossless, read by every compositor, and quick to
decode in 16-scanline blocks; PIZ compresses better only on film grain, which
frames quantised from 8 bits do not have. When the source has a timecode, each
EXR carries its own (`timeCode`, the source's start plus the frame number) and
the output rate (`framesPerSecond`).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import OpenEXR
from PIL import Image, PngImagePlugin

from engine import files
from engine.errors import SettingsError
from engine.timecode import Timecode

FORMATS = ("png", "exr")
FOLDER_MODE = 0o755
EXR_COMPRESSION = OpenEXR.ZIP_COMPRESSION
# Rec.709 / sRGB primaries and D65 white as CIE xy: red, green, blue, white.
REC709_CHROMATICITIES = (0.64, 0.33, 0.30, 0.60, 0.15, 0.06, 0.3127, 0.3290)
# The sRGB chunk tells readers the PNG is sRGB rather than leaving them to guess; 0 is perceptual intent.
_PNG_INFO = PngImagePlugin.PngInfo()
_PNG_INFO.add(b"sRGB", b"\x00")


def _srgb_eotf(encoded: np.ndarray) -> np.ndarray:
    """The piecewise sRGB decoding of values in [0, 1]."""
    return np.where(encoded <= 0.04045, encoded / 12.92, ((encoded + 0.055) / 1.055) ** 2.4)


# Every 8-bit code's linear value, so decoding a frame is one table lookup.
_SRGB_TO_LINEAR = _srgb_eotf(np.arange(256, dtype=np.float64) / 255.0).astype(np.float32)


def frame_name(render_id: str, source_frame: int, first_frame_number: int, fmt: str) -> str:
    """The file name of one frame, e.g. `plate_r001.1001.exr` for source frame 0."""
    _check_format(fmt)
    if not render_id or render_id in (".", "..") or "/" in render_id or "\\" in render_id:
        raise ValueError(f"render id {render_id!r} is not a plain file name")
    number = first_frame_number + source_frame
    if number < 0:
        raise SettingsError(
            f"frame number {number} (source frame {source_frame} + first_frame_number {first_frame_number}) "
            "is negative; use a first_frame_number of 0 or more"
        )
    return f"{render_id}.{number:04d}.{fmt}"


def srgb_to_linear(rgb8: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 sRGB to float32 linear light in [0, 1]."""
    _check_frame(rgb8)
    return _SRGB_TO_LINEAR[rgb8]


def linear_to_srgb8(linear: np.ndarray) -> np.ndarray:
    """Float linear light to 8-bit sRGB, clipped to [0, 1] and rounded."""
    value = np.clip(np.asarray(linear, dtype=np.float64), 0.0, 1.0)
    encoded = np.where(value <= 0.0031308, value * 12.92, 1.055 * value ** (1.0 / 2.4) - 0.055)
    return np.clip(np.rint(encoded * 255.0), 0, 255).astype(np.uint8)


def write_frame(folder: Path, render_id: str, source_frame: int, frame: np.ndarray, fmt: str,
                first_frame_number: int = 1001, timecode: Timecode | None = None, fps: str | None = None) -> Path:
    """Write one RGB uint8 frame into `folder` atomically (temporary name, then rename); return its path.
    An EXR gets the frame's `timecode` and the rate `fps` in its header."""
    path = folder / frame_name(render_id, source_frame, first_frame_number, fmt)
    _check_frame(frame)
    data = _encode_png(frame) if fmt == "png" else _encode_exr(frame, _exr_timing(timecode, fps))
    files.write_bytes_atomic(path, data)
    return path


def read_exr(path: Path) -> np.ndarray:
    """The R, G, B channels of an EXR as HxWx3 float32 linear light."""
    with OpenEXR.File(str(path), separate_channels=True) as exr:
        channels = exr.channels()
        return np.stack([channels[name].pixels for name in "RGB"], axis=-1).astype(np.float32)


class SequenceWriter:
    """Writes a render's frames into a hidden staging folder and publishes it as a whole.

    `staging` must sit in the same folder as `final`, so publishing is a rename.
    A staging folder left by an interrupted render is kept and written over, so a
    resumed render only adds or rewrites frames.
    """

    def __init__(self, staging: Path, final: Path, render_id: str, fmt: str, first_frame_number: int = 1001,
                 start_timecode: Timecode | None = None, fps: str | None = None) -> None:
        _check_format(fmt)
        if staging.parent != final.parent:
            raise ValueError(f"staging folder {staging} must be in the same folder as {final}")
        self.staging = staging
        self.final = final
        self.render_id = render_id
        self.fmt = fmt
        self.first_frame_number = first_frame_number
        self.start_timecode = start_timecode  # the source's, at its frame 0
        self.fps = fps

    def write(self, source_frame: int, frame: np.ndarray) -> None:
        """Write (or rewrite) one frame into the staging folder."""
        self._prepare()
        timecode = self.start_timecode.plus(source_frame) if self.start_timecode else None
        write_frame(self.staging, self.render_id, source_frame, frame, self.fmt, self.first_frame_number, timecode,
                    self.fps)

    def holds(self, first_frame: int, count: int) -> bool:
        """Whether the `count` frames from source frame `first_frame` on are staged (or already published)."""
        folder = self.staging if self.staging.is_dir() and not self.staging.is_symlink() else self.final
        if folder.is_symlink():
            return False
        return all((folder / frame_name(self.render_id, frame, self.first_frame_number, self.fmt)).is_file()
                   for frame in range(first_frame, first_frame + count))

    def publish(self) -> Path:
        """Rename the staging folder to the final one, replacing any earlier sequence; return the final path."""
        if not self.staging.exists() and self.final.is_dir() and not self.final.is_symlink():
            return self.final  # published by an attempt that stopped before its Render Info was written
        self._prepare()
        # A directory cannot be renamed over a non-empty one, so an earlier sequence is moved aside first.
        aside = self.final.with_name(f".{self.final.name}.{os.getpid()}.old.part")
        _remove(aside)
        replacing = self.final.exists() or self.final.is_symlink()
        if replacing:
            os.replace(self.final, aside)
        os.replace(self.staging, self.final)
        files.fsync_dir(self.final.parent)
        if replacing:
            _remove(aside)
        return self.final

    def discard(self) -> None:
        """Remove the staging folder and everything in it."""
        _remove(self.staging)

    def _prepare(self) -> None:
        if self.staging.is_symlink() or (self.staging.exists() and not self.staging.is_dir()):
            _remove(self.staging)  # planted there: never write frames through it
        self.staging.mkdir(parents=True, exist_ok=True)
        os.chmod(self.staging, FOLDER_MODE)


def _encode_png(frame: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(frame, mode="RGB").save(buffer, format="PNG", pnginfo=_PNG_INFO)
    return buffer.getvalue()


def _exr_timing(timecode: Timecode | None, fps: str | None) -> dict:
    """The EXR header attributes that place a frame in time."""
    header: dict = {}
    if fps is not None:
        header["framesPerSecond"] = Fraction(fps)
    if timecode is not None:
        value = OpenEXR.TimeCode()
        value.hours, value.minutes, value.seconds = timecode.hours, timecode.minutes, timecode.seconds
        value.frame, value.dropFrame = timecode.frames, timecode.drop_frame
        header["timeCode"] = value
    return header


def _encode_exr(frame: np.ndarray, timing: dict | None = None) -> bytes:
    header = {
        "compression": EXR_COMPRESSION,
        "type": OpenEXR.scanlineimage,
        "chromaticities": REC709_CHROMATICITIES,
        **(timing or {}),
    }
    # The "RGB" key becomes separate R, G and B channels, half float because the array is float16. OpenEXR reads
    # the buffer as interleaved rows whatever the array's strides say, and the pipelines return frames that are
    # views of channel-first tensors, so the half floats are laid out C-contiguous first.
    channels = {"RGB": np.ascontiguousarray(srgb_to_linear(frame), dtype=np.float16)}
    buffer = io.BytesIO()
    with OpenEXR.File(header, channels) as exr:
        exr.write(buffer)
    return buffer.getvalue()


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise SettingsError(f"image_sequence {fmt!r} is not a known format; use one of {', '.join(FORMATS)}")


def _check_frame(frame: np.ndarray) -> None:
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 RGB frame, got {frame.dtype} of shape {frame.shape}")


def _remove(path: Path) -> None:
    """Remove a file, link or folder tree at `path`; nothing there is fine."""
    if path.is_symlink() or path.is_file():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
