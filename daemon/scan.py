"""The reconcile scan: the source of truth for what is in the roots.

It walks every root (skipping hidden and temporary names) and reports the
videos and requests that the database does not know in their current state,
so files dropped while the daemon was down, or whose events were lost, are
found. It only stats files; reading them is the ingest step's job.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

from daemon.conventions import kind_of

OWN_TEMPORARY = re.compile(r"^\..+\.(?P<pid>\d+)\.part$")


def candidate_files(root: Path, listdir: Callable[[Path], Iterator[os.DirEntry]] = os.scandir) -> Iterator[Path]:
    """Every video and request under `root`, not following symlinked folders."""
    pending = [root]
    while pending:
        folder = pending.pop()
        try:
            entries = list(listdir(folder))
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                pending.append(Path(entry.path))
            elif kind_of(Path(entry.name)):
                yield Path(entry.path)


def changed_files(roots: list[Path], known: dict[str, tuple[int, int]]) -> Iterator[Path]:
    """Candidates whose (size, mtime) differs from what the database recorded."""
    for root in roots:
        for path in candidate_files(root):
            try:
                st = path.stat()
            except OSError:
                continue
            if known.get(str(path)) != (st.st_size, st.st_mtime_ns):
                yield path


def stale_temporaries(folders: list[Path]) -> Iterator[Path]:
    """hotshot's own temporary files (`.<name>.<pid>.part`) whose writing process is gone."""
    for folder in folders:
        for dirpath, _dirnames, filenames in os.walk(folder):
            for name in filenames:
                match = OWN_TEMPORARY.match(name)
                if match and not process_alive(int(match["pid"])):
                    yield Path(dirpath) / name


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
