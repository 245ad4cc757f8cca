"""Pictures for the page: poster strips of videos (ffmpeg, cached under the state folder) and uploaded stills."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import threading
from pathlib import Path

from daemon.errors import HotshotError
from daemon.web.forms import safe_name, write_new
from engine.source_colour import SourceColour

STRIP_TILES = 8
MAX_TILES = 16
STRIP_HEIGHT = 54
STRIP_VERSION = 2  # in the cached file's name: strips made before their frames were read with the source's colour
FORMATS = {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif"}
_locks: dict[Path, threading.Lock] = {}
_locks_guard = threading.Lock()


def poster_strip(video: Path, media_id: int, frames: int | None, cache: Path, tiles: int = STRIP_TILES,
                 timeout: float = 60.0, colour: dict | None = None) -> Path:
    """A JPEG of `tiles` frames spread over `video`, side by side; made once per file version and tile count.

    `colour`: how the video's pixels are read as RGB (its probe's `colour`, engine/source_colour.py), as a render
    reads them. The frames go through RGB so the JPEG (BT.601 by definition, as browsers read it) shows them as
    a player would; copied across as Y'CbCr, a BT.709 video's strip came out with its colours shifted."""
    stat = video.stat()
    tiles = max(1, min(tiles, MAX_TILES))
    target = cache / f"{media_id}-{tiles}-v{STRIP_VERSION}-{stat.st_size}-{stat.st_mtime_ns}.jpg"
    if target.exists():
        return target
    with _locks_guard:
        lock = _locks.setdefault(target, threading.Lock())
    with lock:
        if target.exists():
            return target
        cache.mkdir(parents=True, exist_ok=True)
        step = max(1, (frames or tiles) // tiles)
        tmp = cache / f".{target.name}.{os.getpid()}.{threading.get_ident()}.jpg"
        reading = "".join(f":{key}={value}" for key, value in SourceColour(**colour).scale_options().items()) \
            if colour else ""
        command = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(video), "-vf",
                   f"select='not(mod(n\\,{step}))',scale=-2:{STRIP_HEIGHT}{reading},format=rgb24,"
                   f"tile={tiles}x1:color=black",
                   "-frames:v", "1", "-fps_mode", "vfr", "-q:v", "4", str(tmp)]
        try:
            done = subprocess.run(command, capture_output=True, timeout=timeout)
            if done.returncode != 0 or not tmp.exists():
                raise HotshotError(f"ffmpeg could not make a poster of {video.name}: "
                                   f"{done.stderr.decode(errors='replace').strip()[-300:]}")
            os.replace(tmp, target)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        for old in cache.glob(f"{media_id}-{tiles}-*.jpg"):  # earlier versions of the same file
            if old != target:
                with contextlib.suppress(OSError):
                    old.unlink()
    return target


def save_upload(folder: Path, wanted_name: str, data: bytes, limit: int) -> str:
    """Store an uploaded still in the shot: size-limited, checked by decoding its header, under a safe new name.

    The name keeps only plain characters and gets the extension of the format actually found in the bytes
    (PNG, JPEG or TIFF); an existing file is never replaced (`name-2.png` …). Returns the name written.
    """
    from PIL import Image, UnidentifiedImageError

    if len(data) > limit:
        raise HotshotError(f"the image is {len(data)} bytes, over the limit of {limit} bytes (web_upload_bytes)")
    if not data:
        raise HotshotError("the upload is empty")
    try:
        with Image.open(io.BytesIO(data)) as image:
            kind = image.format
            width, height = image.size
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise HotshotError(f"{wanted_name!r} is not a PNG, JPEG or TIFF image hotshot can read ({exc})") from exc
    if kind not in FORMATS:
        raise HotshotError(f"{wanted_name!r} is a {kind} image; upload PNG, JPEG or TIFF")
    if width < 1 or height < 1 or width * height > 100_000_000:
        raise HotshotError(f"{wanted_name!r} is {width}x{height}; images up to 100 megapixels are accepted")
    return write_new(folder, safe_name(wanted_name, FORMATS[kind], "upload"), data)
