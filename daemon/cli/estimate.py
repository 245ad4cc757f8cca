"""`hotshot estimate`: resolve a request file as the daemon would, without queuing it."""

from __future__ import annotations

import time
from pathlib import Path

from daemon.config import Settings
from daemon.conventions import root_of
from daemon.errors import ConfigError, HotshotError, RequestError
from daemon.request import parse_request
from daemon.resolve import load_setup, resolve
from daemon.schedule import Schedule
from daemon.shots import read_shot
from daemon.states import JobState, MediaState
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
            setup = load_setup(settings, settings.device_kind, store.cost_history if store else None)
        except ConfigError as exc:
            raise HotshotError(str(exc)) from exc
        schedule = _schedule(settings)
        try:
            request = parse_request(raw, settings.max_request_bytes)
            schedule.start_of(request)  # the daemon's own check of `when`, before the source is looked at
            shot = read_shot(folder, root, store, settings.allow_hard_links, lambda path: _probed(path, settings))
            resolution = resolve(request, shot, setup)
        except RequestError as exc:
            return {"state": JobState.FAILED, "reason": str(exc)}
    finally:
        if store:
            store.close()
    if resolution.state != JobState.QUEUED:
        return {"state": resolution.state, "reason": resolution.wait_reason}
    first, last = resolution.settings["frame_range"]["value"]
    start = schedule.start_of(request, last - first + 1, resolution.full_clip)
    waits = not schedule.may_start(start.window, start.at)
    return {"state": JobState.QUEUED, "estimate": resolution.estimate, "settings": resolution.settings,
            "start": {"window": start.window, "at": start.at, "waits": waits,
                      "description": schedule.describe(start.window, start.at) if waits else "starts at once"}}


def _schedule(settings: Settings) -> Schedule:
    """The daemon's schedule (render windows and the full-clip policy) on the wall clock."""
    policy = settings.defer_full_clips
    return Schedule(settings.render_windows, time.time, policy.window if policy else None,
                    policy.longer_than_frames if policy else 0)


def _probed(path: Path, settings: Settings) -> dict:
    """A video the database has not recorded, probed as the daemon would (it may not be running)."""
    try:
        return {"state": MediaState.READY, "probe": probe(path, settings.ffprobe_timeout_seconds).to_dict(),
                "error": None}
    except MediaError as exc:
        return {"state": MediaState.UNREADABLE, "probe": None, "error": exc.reason}
