"""Still images that join a render: the style (first) frame and the reference frame.

A still is an image file (PNG, JPEG, TIFF, EXR) or a frame of the source. It is
fitted to the output size with the same rule as the video: scaled to cover,
then centre-cropped. Its content hash goes into the Render Info.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, model_validator

from engine.decode import read_frames
from engine.errors import MediaError, SettingsError
from engine.source_colour import SourceColour

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".exr")
MAX_IMAGE_SIDE = 8192
MAX_IMAGE_PIXELS = MAX_IMAGE_SIDE * MAX_IMAGE_SIDE
MAX_IMAGE_BYTES = 512 * 2**20


class StillSpec(BaseModel):
    """Where a still comes from: an image file, or frame `keyframe` of the source."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path | None = None
    keyframe: int | None = None

    @model_validator(mode="after")
    def _one_origin(self) -> StillSpec:
        if (self.path is None) == (self.keyframe is None):
            raise ValueError("a still is either an image `path` or a source `keyframe`")
        return self

    def describe(self) -> str:
        return self.path.name if self.path is not None else f"source frame {self.keyframe}"


@dataclass(frozen=True)
class Still:
    frame: np.ndarray
    sha256: str
    origin: str

    def to_manifest(self) -> dict:
        return {"from": self.origin, "sha256": self.sha256}


def load_still(spec: StillSpec, source: Path, width: int, height: int, colour: SourceColour | None = None) -> Still:
    """The still as an HxWx3 uint8 RGB frame of the output size, with the hash of what it came from (`colour`: how
    the source's pixels are read, when its probe is at hand)."""
    if spec.keyframe is not None:
        frame = next(iter(read_frames(source, spec.keyframe, spec.keyframe, width, height, colour)))
        digest = hashlib.sha256(np.ascontiguousarray(frame).tobytes()).hexdigest()
        return Still(frame, digest, f"source frame {spec.keyframe}")
    path = Path(spec.path)
    data, image = read_image(path)
    return Still(fit(image, width, height), hashlib.sha256(data).hexdigest(), path.name)


def read_image(path: Path) -> tuple[bytes, np.ndarray]:
    """An image file's bytes and its HxWx3 uint8 RGB frame (EXR converted from linear), checked first."""
    check_image(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MediaError(str(path), f"the image cannot be read ({exc.strerror})") from exc
    return data, _decode_image(path, data)


def fit(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scale an RGB image to cover width x height and crop the centre: the video's rule."""
    source_h, source_w = image.shape[:2]
    scale = max(width / source_w, height / source_h)
    scaled_w, scaled_h = max(width, round(source_w * scale)), max(height, round(source_h * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    scaled = cv2.resize(image, (scaled_w, scaled_h), interpolation=interpolation)
    left, top = (scaled_w - width) // 2, (scaled_h - height) // 2
    return np.ascontiguousarray(scaled[top : top + height, left : left + width])


def export_frame(source: Path, number: int, destination: Path, fmt: str | None = None,
                 first_frame_number: int = 1001) -> Path:
    """Write frame `number` of a video at its own size, to paint over and give back as a style frame.

    `destination` is a folder, made if missing (the file is named like a render's image sequence,
    `<stem>.<first_frame_number + number>.<fmt>`), or a file name ending in .png or .exr. `fmt` is "png" or
    "exr" (default: the file name's, else PNG). PNG holds the decoded 8-bit frame exactly; EXR holds it as
    scene-linear half floats, as image sequences do.
    """
    from engine.probe import probe
    from engine.sequence import write_frame

    source, destination = Path(source), Path(destination)
    named = destination.suffix.lower()[1:] if not destination.is_dir() and destination.suffix else None
    if named is not None and named not in ("png", "exr"):
        raise SettingsError(f"{destination.name} is neither a folder nor a .png or .exr file name")
    if named is not None and fmt is not None and named != fmt:
        raise SettingsError(f"{destination.name} is not a .{fmt} file name; name it .{fmt} or leave the format out")
    fmt = fmt or named or "png"
    info = probe(source)
    if not 0 <= number < info.frame_count:
        raise SettingsError(f"frame {number} is outside {source.name}, which has {info.frame_count} frames "
                            f"(valid frames are 0 to {info.frame_count - 1})")
    frame = np.ascontiguousarray(next(iter(read_frames(source, number, number, info.width, info.height,
                                                       info.colour))))
    folder = destination.parent if named else destination
    folder.mkdir(parents=True, exist_ok=True)
    if not named:
        return write_frame(folder, source.stem, number, frame, fmt, first_frame_number)
    written = write_frame(folder, f".{destination.stem}.export", number, frame, fmt, first_frame_number)
    written.replace(destination)
    return destination


def check_image(path: Path) -> None:
    """Refuse an image too big to decode before decoding it: by its size on disk, and by the frame size its
    header declares (a file of a few bytes can declare a frame of billions of pixels)."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise MediaError(str(path), f"the image cannot be read ({exc.strerror})") from exc
    if size > MAX_IMAGE_BYTES:
        raise MediaError(str(path), f"it is {size} bytes, more than the {MAX_IMAGE_BYTES} hotshot reads for an image")
    try:
        if path.suffix.lower() == ".exr":
            import OpenEXR

            with OpenEXR.File(str(path), header_only=True) as exr:
                (left, top), (right, bottom) = exr.header()["dataWindow"]
            width, height = right - left + 1, bottom - top + 1
        else:
            with Image.open(path) as image:  # reads the header only
                width, height = image.size
    except Image.DecompressionBombError as exc:
        raise MediaError(str(path), f"its frame size is over {MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE}, more than hotshot "
                                    f"decodes ({exc})") from exc
    except Exception:  # noqa: BLE001 - a header these readers do not know: the decoder decides
        return
    if width > MAX_IMAGE_SIDE or height > MAX_IMAGE_SIDE:
        raise MediaError(str(path), f"its frame size is over {MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE}: it declares "
                                    f"{width}x{height}")


def _decode_image(path: Path, data: bytes) -> np.ndarray:
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        raise MediaError(str(path), f"it is not an image hotshot reads ({', '.join(IMAGE_EXTENSIONS)})")
    if path.suffix.lower() == ".exr":
        return _decode_exr(path)
    raw = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise MediaError(str(path), "the image cannot be decoded")
    if raw.ndim == 2:
        raw = cv2.cvtColor(raw, cv2.COLOR_GRAY2BGR)
    if raw.shape[2] == 4:
        raw = raw[:, :, :3]
    if raw.dtype == np.uint16:
        raw = np.rint(raw / 257.0).astype(np.uint8)
    elif raw.dtype != np.uint8:
        raise MediaError(str(path), f"its sample type {raw.dtype} is not supported (use 8 or 16 bit)")
    if raw.shape[0] * raw.shape[1] > MAX_IMAGE_PIXELS:
        raise MediaError(str(path), f"it is {raw.shape[1]}x{raw.shape[0]}, larger than hotshot accepts")
    return cv2.cvtColor(raw, cv2.COLOR_BGR2RGB)


def _decode_exr(path: Path) -> np.ndarray:
    from engine.sequence import linear_to_srgb8, read_exr

    try:
        linear = read_exr(path)
    except Exception as exc:  # noqa: BLE001 - OpenEXR raises plain exceptions for bad files
        raise MediaError(str(path), f"the EXR cannot be read ({exc})") from exc
    return linear_to_srgb8(linear)
