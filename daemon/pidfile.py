"""The daemon's lock file in its state folder, and which daemon holds it; kept apart from daemon/control.py so
that `hotshot status` can ask without importing what the commands need."""

from __future__ import annotations

from pathlib import Path

from daemon.scan import process_alive

LOCK_FILE = "hotshot.lock"


def daemon_pid(state_dir: Path) -> int | None:
    """The pid of the daemon running on this state, read without touching the lock."""
    try:
        pid = int((state_dir / LOCK_FILE).read_text().strip() or 0)
    except (OSError, ValueError):
        return None
    return pid if pid > 0 and process_alive(pid) else None
