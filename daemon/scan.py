"""The reconcile scan: the source of truth for what is in the roots.

It walks every root (skipping hidden and temporary names) and reports the
videos and requests that the database does not know in their current state,
so files dropped while the daemon was down, or whose events were lost, are
found. It only stats files; reading them is the ingest step's job.

It runs at start-up and every `reconcile_seconds` over every file of every
root, so it costs about what `find -printf` costs: names are looked at as
strings, only videos and requests are stat'ed, and a `Path` is made only for
what it reports.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

from daemon.conventions import kind_of_name

OWN_TEMPORARY = re.compile(r"^\..+\.(?P<pid>\d+)\.part$")
Listdir = Callable[[str], Iterator[os.DirEntry]]


def candidate_entries(root: Path, listdir: Listdir = os.scandir) -> Iterator[os.DirEntry]:
    """The directory entry of every video and request under `root`, not following symlinked folders."""
    pending = [os.fspath(root)]
    while pending:
        folder = pending.pop()
        try:
            for entry in listdir(folder):
                name = entry.name
                if name[0] == ".":
                    continue
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                elif kind_of_name(name):
                    yield entry
        except OSError:
            continue  # gone or unreadable meanwhile: the next scan looks again


def candidate_files(root: Path, listdir: Listdir = os.scandir) -> Iterator[Path]:
    """Every video and request under `root`, not following symlinked folders."""
    for entry in candidate_entries(root, listdir):
        yield Path(entry.path)


def changed_files(roots: list[Path], known: dict[str, tuple[int, int]],
                  seen: set[str] | None = None) -> Iterator[Path]:
    """Candidates whose (size, mtime) differs from what the database recorded. `seen`, if given, gets the
    path of every candidate found, so that the caller can tell what is gone without a stat of its own."""
    for root in roots:
        for entry in candidate_entries(root):
            try:
                st = entry.stat()
            except OSError:
                continue
            if seen is not None:
                seen.add(entry.path)
            if known.get(entry.path) != (st.st_size, st.st_mtime_ns):
                yield Path(entry.path)


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
