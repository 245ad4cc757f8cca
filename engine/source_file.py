"""Reading the source a job was queued with, and nothing else.

The daemon fixes the source's identity (size, modification time, inode, change
time) when the job is queued. The worker opens that name without following a
symbolic link, checks that what it opened is a regular file with that identity,
and holds it open for the whole render; ffmpeg and ffprobe read it through
`/proc/<pid>/fd/<n>`. A name swapped for a link, a hard link or another file
after the check is therefore never read: what is read is what was checked.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from engine.errors import MediaError
from engine.files import same_file

REPLACED = ("it was replaced or modified after the render was queued; `hotshot retry` renders the new file from "
            "the start")


@contextmanager
def opened_source(path: Path, size: int, mtime_ns: int, inode: int | None,
                  ctime_ns: int | None) -> Iterator[Path]:
    """Open the source at `path` if it is still the regular file recorded; yield a name that reads that file."""
    try:
        # O_NONBLOCK: a pipe swapped in must not block the worker; O_NOFOLLOW: a link is refused, not followed.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise MediaError(str(path), "it was deleted before the render finished") from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise MediaError(str(path), "it was replaced by a symbolic link after the render was queued; hotshot "
                                        "does not follow links to sources") from exc
        raise MediaError(str(path), f"it cannot be opened ({exc.strerror})") from exc
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode):
            raise MediaError(str(path), "it is no longer a regular file (a pipe, a device or a folder)")
        if not same_file(opened, size, mtime_ns, inode, ctime_ns):
            raise MediaError(str(path), REPLACED)
        yield Path(f"/proc/{os.getpid()}/fd/{fd}")
    finally:
        os.close(fd)


def check_name_unchanged(path: Path, size: int, mtime_ns: int, inode: int | None, ctime_ns: int | None) -> None:
    """Fail if the name no longer holds the recorded file (deleted, replaced, or swapped for a link)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError as exc:
        raise MediaError(str(path), "it was deleted before the render finished") from exc
    if not stat.S_ISREG(st.st_mode) or not same_file(st, size, mtime_ns, inode, ctime_ns):
        raise MediaError(str(path), REPLACED)
