"""Outputs appear atomically: written under a temporary hidden name, then renamed.

Temporary names start with a dot and end in `.part`, the names the watcher
ignores. A rename replaces whatever directory entry holds the final name, so a
symlink planted there is replaced, never followed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from engine import faults
from engine.errors import DiskFullError, is_disk_full

OUTPUT_MODE = 0o644
COPY_BUFFER = 1 << 20


def temp_stem(name: str) -> str:
    """A short stand-in for `name` in temporary names: the same length for every name, so that a temporary
    name fits the file system wherever the final name does (NAME_MAX is 255 bytes)."""
    return "hs-" + hashlib.sha256(os.fsencode(name)).hexdigest()[:16]


def temp_path(final: Path) -> Path:
    """A hidden temporary name beside `final`, unique to this process, of a fixed length."""
    return final.with_name(f".{temp_stem(final.name)}.{os.getpid()}.part")


def publish(tmp: Path, final: Path, mode: int = OUTPUT_MODE, sync_folder: bool = True) -> None:
    """Give a finished temporary file its defined mode and rename it into place. Without `sync_folder` the
    caller makes the rename durable itself (`fsync_dir`), once for many files of one folder."""
    os.chmod(tmp, mode)
    _fsync_file(tmp)
    os.replace(tmp, final)
    if sync_folder:
        fsync_dir(final.parent)


@contextlib.contextmanager
def writing(final: Path, fault_point: str | None = None, sync_folder: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write; publish it on success, remove it on failure.

    `fault_point` names this write for the reliability tests' fault injection (engine/faults.py).
    """
    tmp = temp_path(final)
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        yield tmp
        if fault_point:
            faults.reached(fault_point)
        publish(tmp, final, sync_folder=sync_folder)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if is_disk_full(exc):
            raise DiskFullError(final, exc.strerror) from exc
        raise


def write_bytes_atomic(final: Path, data: bytes, fault_point: str | None = None, sync_folder: bool = True) -> None:
    with writing(final, fault_point, sync_folder) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, OUTPUT_MODE)
        with os.fdopen(fd, "wb") as handle:
            if fault_point and faults.armed():  # a test may stop the process half-way through the write
                half = len(data) // 2
                handle.write(data[:half])
                handle.flush()
                faults.reached(fault_point)
                data = data[half:]
            handle.write(data)


def copy_atomic(source: Path, final: Path, fault_point: str | None = None) -> None:
    """Copy `source` to `final` atomically, through a temporary file this process creates itself, so that
    nothing is ever written through a link planted beside the output."""
    with writing(final, fault_point) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, OUTPUT_MODE)
        with open(source, "rb") as reader, os.fdopen(fd, "wb") as writer:
            shutil.copyfileobj(reader, writer, COPY_BUFFER)


def write_json_atomic(final: Path, data: object, fault_point: str | None = None, sync_folder: bool = True) -> None:
    write_bytes_atomic(final, (json.dumps(data, indent=2, sort_keys=False, default=str) + "\n").encode(), fault_point,
                       sync_folder)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable (best effort: not every file system allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def same_file(stat: os.stat_result, size: int, mtime_ns: int, inode: int | None = None,
              ctime_ns: int | None = None) -> bool:
    """Whether `stat` is the file recorded by its size and modification time, and by its inode and change time
    where those were recorded (a file rewritten in place with its size and time put back changes its ctime)."""
    return (stat.st_size, stat.st_mtime_ns) == (size, mtime_ns) and inode in (None, stat.st_ino) \
        and ctime_ns in (None, stat.st_ctime_ns)


class FileLock:
    """An exclusive lock on a file, across processes (`flock`): the one way hotshot locks a folder.

    `with FileLock(path):` waits for the lock and releases it at the end of the block; `acquire(wait)` gives
    up after `wait` seconds and says whether it got it (the lock is then held until `release`). The lock file
    stays, holding whatever its owner wrote in it (`write`), e.g. the daemon's pid.
    """

    POLL_SECONDS = 0.1

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.handle = None

    def acquire(self, wait: float | None = None) -> bool:
        """Take the lock, waiting for it forever (`wait` None) or up to `wait` seconds; False if not taken."""
        import fcntl
        import time

        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 - held open for as long as the lock is
        if wait is None:
            fcntl.flock(handle, fcntl.LOCK_EX)
            self.handle = handle
            return True
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self.handle = handle
                return True
            except OSError:
                if time.monotonic() >= deadline:
                    handle.close()
                    return False
                time.sleep(self.POLL_SECONDS)

    def write(self, text: str) -> None:
        """Replace what the lock file says (only while holding it)."""
        with contextlib.suppress(OSError):
            self.handle.truncate(0)
            self.handle.write(text)
            self.handle.flush()

    def release(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()
