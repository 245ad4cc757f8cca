"""The hot folder conventions: what is a video, a request, a render, and what is ignored.

See hotfolders/README.md for the user-facing description.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from daemon.errors import PathEscapeError

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".mkv", ".webm", ".avi", ".mxf"})
REQUEST_SUFFIX = ".render.json"
MANIFEST_SUFFIX = ".render-info.json"
TEMPORARY_SUFFIXES = (".part", ".tmp", "~", ".crdownload")
NAME_MAX = 255  # bytes in one file name on the file systems hotshot runs on (ext4, xfs, NFS, SMB)
# A render of `plate.mp4` adds at most this many bytes to `plate`: `plate_r001.render-info.json`, control
# previews `plate_r001.control-softedge.mp4`, frames `plate_r001/plate_r001.000123.png`.
RENDER_NAME_EXTRA = 40
RENDER_STEM = re.compile(r"^(?P<stem>.+)_r(?P<number>\d{3,})$")
# Control previews written beside a render: plate_r001.control-depth.mp4
CONTROL_PREVIEW = re.compile(r"\.control-[a-z+]+\.mp4$")


def is_ignored(path: Path, root: Path) -> bool:
    """Hidden and temporary names, at any level below the root, are never looked at."""
    text, prefix = str(path), os.path.join(str(root), "")
    if text == str(root):
        return path.name.endswith(TEMPORARY_SUFFIXES)
    if not text.startswith(prefix):
        return True
    return any(part.startswith(".") for part in text[len(prefix):].split("/")) \
        or path.name.endswith(TEMPORARY_SUFFIXES)


def kind_of(path: Path) -> str | None:
    """'video', 'request' or None for anything hotshot does not read."""
    return kind_of_name(path.name)


def kind_of_name(name: str) -> str | None:
    """`kind_of` for a bare file name (the reconcile scan asks it of every file, without making paths)."""
    name = name.lower()
    if name.endswith(REQUEST_SUFFIX):
        return "request"
    dot = name.rfind(".")
    if not 0 < dot < len(name) - 1 or name[dot:] not in VIDEO_EXTENSIONS:  # Path.suffix's rule
        return None
    return None if CONTROL_PREVIEW.search(name) else "video"


def status_path(request: Path) -> Path:
    """`restyle.render.json` → `restyle.render.status.json`, beside it.

    The request's suffix keeps its case (`r.RENDER.JSON` → `r.RENDER.status.JSON`), so requests whose names
    differ only in case each have a status file of their own."""
    return request.with_name(request.name[: -len(".json")] + ".status" + request.name[-len(".json"):])


def name_bytes(name: str) -> int:
    """The length of a file name as the file system counts it (NAME_MAX is in bytes, not characters)."""
    return len(os.fsencode(name))


def storable(path: Path) -> bool:
    """Whether `path` is valid UTF-8, as the state database stores names (a Latin-1 client on a share may
    write names that are not)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown(path: Path | str) -> str:
    """`path` as text for a person: bytes that are not UTF-8 written as `\\xe9`."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


def manifest_path(video: Path) -> Path:
    return video.with_name(video.stem + MANIFEST_SUFFIX)


def has_manifest(video: Path) -> bool:
    """Whether a Render Info lies beside `video` (hotshot rendered it). A name too long to take the suffix
    has none."""
    try:
        return manifest_path(video).exists()
    except OSError:
        return False


def render_stem(original_stem: str, number: int) -> str:
    """The name of render `number` of a source: `plate` → `plate_r003`."""
    return f"{original_stem}_r{number:03d}"


def root_of(path: Path, roots: list[Path]) -> Path | None:
    """The watch root `path` is in (or is), or None. Compared as text (as `Path.parents` would, without making
    every parent): the daemon asks this of every event."""
    text = str(path)
    for root in roots:
        prefix = os.path.join(str(root), "")
        if text == str(root) or text.startswith(prefix):
            return root
    return None


def resolve_in_shot(shot: Path, root: Path, value: str, field: str, allow_hard_links: bool = False) -> Path:
    """The file a request names, checked to stay inside its shot and its watch root.

    Refused: absolute paths, any `..`, names whose real location (after
    following symlinks) is outside the watch root, anything but a regular file
    or a folder (a pipe would block the reader), and, unless `allow_hard_links`,
    a file with more than one hard link: a hard link to a file outside the root
    cannot be told from a file inside it. A folder's images are checked alike.
    """
    if not value or value.strip() != value:
        raise PathEscapeError(field, value, "is empty or has leading or trailing spaces")
    candidate = Path(value)
    if candidate.is_absolute() or value.startswith("~"):
        raise PathEscapeError(field, value, "is an absolute path")
    if ".." in candidate.parts:
        raise PathEscapeError(field, value, "climbs out of the shot with '..'")
    if any(part.startswith(".") for part in candidate.parts):
        raise PathEscapeError(field, value, "names a hidden file, which hotshot ignores")
    path = shot / candidate
    check_inside(path, root, field, value, allow_hard_links)
    if path.is_dir():
        for entry in sorted(path.iterdir()):
            if not entry.name.startswith("."):
                check_inside(entry, root, field, value, allow_hard_links, inside=str(candidate / entry.name))
    return path


def check_inside(path: Path, root: Path, field: str, value: str, allow_hard_links: bool,
                 inside: str | None = None) -> None:
    """Refuse `path` (`inside` the folder a request names) if it leads outside `root`, is neither a regular
    file nor a folder, or is a file with several hard links that are not allowed."""

    try:
        st = os.stat(path)
    except OSError:
        st = None  # not there (yet): the caller waits for it
    why = refusal(path, root, st, allow_hard_links)
    if why:
        raise PathEscapeError(field, value, f"holds {inside}, which {why}" if inside else why)


def refusal(path: Path, root: Path, st: os.stat_result | None, allow_hard_links: bool,
            folders: bool = True) -> str | None:
    """Why hotshot does not read `path` (its `st`, None when it is not there), or None: it leads outside `root`,
    is not a regular file (or folder), or is a file with several hard links that are not allowed."""
    real = Path(os.path.realpath(path))
    real_root = Path(os.path.realpath(root))
    if real != real_root and real_root not in real.parents:
        return f"leads outside the watch root (to {real})"
    if st is None:
        return None
    if not (stat.S_ISREG(st.st_mode) or (folders and stat.S_ISDIR(st.st_mode))):
        return "is not a regular file (a pipe or a device)"
    if stat.S_ISREG(st.st_mode) and st.st_nlink > 1 and not allow_hard_links:
        return (f"has {st.st_nlink} hard links; a hard link may be a file outside the watch root, so hotshot only "
                "reads files with one (copy it, or set allow_hard_links = true)")
    return None
