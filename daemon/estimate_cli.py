"""`hotshot estimate`: resolve a request file as the daemon would, without queuing it."""

from __future__ import annotations

import os
import time
from pathlib import Path

from daemon.config import Settings
from daemon.conventions import kind_of, manifest_path, root_of
from daemon.errors import ConfigError, HotshotError, RequestError
from daemon.request import parse_request
from daemon.resolve import ShotFacts, load_context, resolve
from daemon.schedule import Schedule
from daemon.store import Store
from engine.errors import MediaError
from engine.probe import probe


def estimate_request(settings: Settings, request_path: Path) -> dict:
    """The resolution of a request file: its settings and cost estimate, or why it would wait or fail."""
    request_path = request_path.resolve()
    try:
        raw = request_path.read_bytes()
    except OSError as exc:
        raise HotshotError(f"cannot read {request_path}: {exc.strerror}") from exc
    return estimate_raw(settings, request_path.parent, raw)


def estimate_raw(settings: Settings, folder: Path, raw: bytes) -> dict:
    """The same for a request's bytes meant for the shot `folder` (the web workspace's Generate buttons)."""
    root = root_of(folder, settings.roots) or folder
    store = Store.open(settings.database, read_only=True) if settings.database.exists() else None
    try:
        try:
            context = load_context(settings, settings.device_kind, store.cost_history if store else None)
        except ConfigError as exc:
            raise HotshotError(str(exc)) from exc
        schedule = _schedule(settings)
        try:
            request = parse_request(raw, settings.max_request_bytes)
            schedule.start_of(request)  # the daemon's own check of `when`, before the source is looked at
            resolution = resolve(request, _shot_facts(folder, root, settings), context)
        except RequestError as exc:
            return {"state": "failed", "reason": str(exc)}
    finally:
        if store:
            store.close()
    if resolution.state != "queued":
        return {"state": resolution.state, "reason": resolution.wait_reason}
    first, last = resolution.settings["frame_range"]["value"]
    start = schedule.start_of(request, last - first + 1, resolution.full_clip)
    waits = not schedule.may_start(start.window, start.at)
    return {"state": "queued", "estimate": resolution.estimate, "settings": resolution.settings,
            "start": {"window": start.window, "at": start.at, "waits": waits,
                      "description": schedule.describe(start.window, start.at) if waits else "starts at once"}}


def _schedule(settings: Settings) -> Schedule:
    """The daemon's schedule (render windows and the full-clip policy) on the wall clock."""
    policy = settings.defer_full_clips
    return Schedule(settings.render_windows, time.time, policy.window if policy else None,
                    policy.longer_than_frames if policy else 0)


def _shot_facts(folder: Path, root: Path, settings: Settings) -> ShotFacts:
    """The shot as the daemon would see it, probed directly (the daemon may not be running)."""
    files = [folder / name for name in sorted(os.listdir(folder)) if not name.startswith(".")]
    media = []
    for path in files:
        if kind_of(path) != "video":
            continue
        row = {"id": None, "path": str(path), "name": path.name,
               "kind": "render" if manifest_path(path).exists() else "original"}
        try:
            row.update(state="ready", probe=probe(path, settings.ffprobe_timeout_seconds).to_dict(), error=None)
        except MediaError as exc:
            row.update(state="unreadable", probe=None, error=exc.reason)
        media.append(row)
    return ShotFacts(folder, root, media, files, set(), settings.allow_hard_links)

