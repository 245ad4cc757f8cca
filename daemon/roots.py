"""Watch roots that can go away: an unmounted share, a folder renamed or removed.

A root is available while it is a folder and, if it has been seen as a mount point, is a mount point still
or holds something (an unmounted share leaves an empty folder behind, which must not read as "everything
was deleted"; a root that is a plain folder with files in it now is taken as it is, and no longer counted
as a mount). Mount points are remembered in the database, so a daemon started while the share is down
knows it too.
While a root is unavailable nothing under it counts as deleted, nothing under it is started, and watching
it resumes (the observer's watch is made anew) when it is back.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

CHECK_SECONDS = 1.0
# A daemon takes this lock in each root when it starts (daemon/control.py), also in the empty folder a share
# that is down leaves behind: the folder is still empty for what tells a share that is down from one that is up.
ROOT_LOCK_FILE = ".hotshot-root.lock"  # hidden: the watcher ignores it
MOUNTINFO = Path("/proc/self/mountinfo")
OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def is_mount_point(path: Path) -> bool:
    """Whether `path` is a mount point: another device than its parent (a share), or, on Linux, listed in
    the mount table (a bind mount of a folder on the same device)."""
    if os.path.ismount(path):
        return True
    try:
        table = MOUNTINFO.read_text()
    except OSError:
        return False
    target = str(path)
    return any(len(fields) > 4 and OCTAL_ESCAPE.sub(lambda m: chr(int(m[1], 8)), fields[4]) == target
               for fields in (line.split() for line in table.splitlines()))


class RootStates:
    def __init__(self, roots: list[Path], remembered_mounts: set[Path], remember_mount: Callable[[Path, bool], None],
                 is_dir: Callable[[Path], bool] = os.path.isdir,
                 is_mount: Callable[[Path], bool] = is_mount_point) -> None:
        self.roots = roots
        self.mounts = set(remembered_mounts)
        self.remember_mount = remember_mount
        self.is_dir = is_dir
        self.is_mount = is_mount
        self.unavailable: set[Path] = set()

    def check(self) -> tuple[list[Path], list[Path]]:
        """Look at every root; return the roots that went away and those that came back since the last look."""
        gone, back = [], []
        for root in self.roots:
            available = self._available(root)
            if not available and root not in self.unavailable:
                self.unavailable.add(root)
                gone.append(root)
            elif available and root in self.unavailable:
                self.unavailable.discard(root)
                back.append(root)
        return gone, back

    def available(self, root: Path | None) -> bool:
        """Whether `root` (as of the last look) is there; None (a path under no root) counts as there."""
        return root is None or root not in self.unavailable

    def look(self, root: Path) -> bool:
        """Whether `root` is there right now (without changing what `check` reports). Called for every vanished
        path: a root not known as a mount is there if it is a folder, without reading the mount table."""
        if root not in self.mounts:
            return self.is_dir(root)
        return self._available(root)

    def _available(self, root: Path) -> bool:
        try:
            if not self.is_dir(root):
                return False
            if self.is_mount(root):
                if root not in self.mounts:
                    self.mounts.add(root)
                    self.remember_mount(root, True)
                return True
            if root not in self.mounts:
                return True
            with os.scandir(root) as entries:
                if all(entry.name == ROOT_LOCK_FILE for entry in entries):
                    return False  # the empty folder an unmounted share leaves
        except OSError:
            return False
        self.mounts.discard(root)
        self.remember_mount(root, False)
        return True
