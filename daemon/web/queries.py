"""Read-only views of the state for the page: the shot list and one shot's timeline.

Each track of the timeline is placed against the frame numbers of the original
source it descends from: a render of frames 24-71 sits under 24-71, and a render
of that render's frames 0-9 sits under 24-33. Job states come from the same
documents as the status files (`status_document`).
"""

from __future__ import annotations

from pathlib import Path

from daemon.conventions import REQUEST_SUFFIX, root_of
from daemon.listing import job_or_archived
from daemon.states import ACTIVE_STATES, MediaKind, MediaState
from daemon.status_file import status_document
from daemon.store import Store


def shot_list(store: Store) -> list[dict]:
    """Every shot with its source and render counts and its active jobs."""
    return [{"id": shot["id"], "name": _shot_name(shot["root"], shot["rel"]), "sources": shot["originals"],
             "renders": shot["renders"], "active": shot["active"]} for shot in store.shot_summaries()]


def _shot_name(root: str, rel: str) -> str:
    return f"{Path(root).name}/{rel}".removesuffix("/.")


def timeline(store: Store, shot_id: int) -> dict | None:
    """A shot's tracks in lineage order, each with its place on its source's frame numbers and its state."""
    shot = store.shot(shot_id)
    if shot is None:
        return None
    media = store.media_in_shot(shot_id)
    jobs = store.jobs_in_shot(shot_id)
    by_id = {job.id: job for job in jobs}
    newest = {job.request_path: job.id for job in jobs}
    children: dict[int | None, list[dict]] = {}
    for item in media:
        parent = item["parent_id"] if item["kind"] == MediaKind.RENDER else None
        children.setdefault(parent, []).append({"media": item, "job": by_id.get(item["job_id"])})
    placed = {item["job_id"] for item in media if item["job_id"]}
    names = {item["name"]: item["id"] for item in media}
    for job in jobs:
        # A job without its render yet (waiting, queued, running, failed, cancelled) is a track of its own
        # under its source; an older version of an edited request is left out.
        if job.id in placed or newest[job.request_path] != job.id:
            continue
        source_name = ((job.settings or {}).get("source") or {}).get("value")
        parent = job.source_media_id or names.get(source_name)
        if parent is None and job.state not in ACTIVE_STATES:
            continue
        children.setdefault(parent, []).append({"media": None, "job": job})

    groups = []
    for entry in children.get(None, []):
        if entry["media"] is None:
            continue  # a job whose source is not known yet has no place on a timeline
        tracks: list[dict] = []
        _walk(entry, 0, 0, children, tracks)
        source = tracks[0]
        groups.append({"source": source["name"], "frames": source["frames"], "fps": source["fps"],
                       "tracks": tracks})
    waiting = [_track(entry, 0, 0) for entry in children.get(None, []) if entry["media"] is None]
    requested = {Path(job.request_path).name for job in jobs}
    return {"id": shot_id, "name": _shot_name(shot["root"], shot["rel"]), "groups": groups,
            "unplaced": waiting, "submitted": _submitted(Path(shot["path"]), requested),
            "images": _images(Path(shot["path"])), "videos": [item["name"] for item in media
                                                               if item["state"] == MediaState.READY]}


def _walk(entry: dict, depth: int, offset: int, children: dict, out: list[dict]) -> None:
    track = _track(entry, depth, offset)
    out.append(track)
    if entry["media"] is None:
        return
    kids = children.get(entry["media"]["id"], [])
    kids.sort(key=lambda kid: kid["job"].id if kid["job"] else 0)
    for kid in kids:
        _walk(kid, depth + 1, track["first"], children, out)


def _track(entry: dict, depth: int, offset: int) -> dict:
    item, job = entry["media"], entry["job"]
    settings: dict = (job.settings if job else None) or {}
    probe = (item or {}).get("probe") or {}
    frames = probe.get("frame_count")
    span = (settings.get("frame_range") or {}).get("value")
    if item is not None and item["kind"] == MediaKind.ORIGINAL:
        first, last = 0, (frames or 1) - 1
    elif span:
        first, last = offset + span[0], offset + span[1]
    else:
        first, last = offset, offset + (frames or 1) - 1
    track = {
        "key": f"m{item['id']}" if item else f"j{job.id}",
        "depth": depth,
        "kind": item["kind"] if item else "job",
        "name": item["name"] if item else Path(job.request_path).name,
        "media": item["id"] if item else None,
        "media_state": item["state"] if item else None,
        "media_error": item["error"] if item else None,
        "first": first,
        "last": last,
        "frames": frames,
        "fps": probe.get("fps"),
        "size": f"{probe['width']}x{probe['height']}" if probe.get("width") else None,
        "job": None,
    }
    if job is not None:
        document = status_document(job)
        document.update(request=Path(job.request_path).name, has_manifest=bool(job.manifest_path),
                        model=(settings.get("model") or {}).get("value"),
                        source=(settings.get("source") or {}).get("value"))
        track["job"] = document
    return track


def _submitted(folder: Path, requested: set[str]) -> list[str]:
    """Request files in the shot that the daemon has not recorded yet (just written by Generate, say)."""
    try:
        names = sorted(path.name for path in folder.iterdir())
    except OSError:
        return []
    return [name for name in names if name.endswith(REQUEST_SUFFIX) and not name.startswith(".")
            and name not in requested]


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".exr")


def _images(folder: Path) -> list[str]:
    """Still images in the shot, for the style and reference frame selectors."""
    try:
        return sorted(path.name for path in folder.iterdir()
                      if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".") and path.is_file())
    except OSError:
        return []


def media_file(store: Store, media_id: int, roots: list[Path]) -> Path | None:
    """A registered video's path, only when it is ready and lies under a watch root."""
    item = store.media(media_id)
    if item is None or item["state"] != MediaState.READY:
        return None
    return _inside(Path(item["path"]), roots)


def manifest_file(store: Store, job_id: int, roots: list[Path]) -> Path | None:
    """A done job's Render Info (archived or not), only when it lies under a watch root."""
    job, _ = job_or_archived(store, job_id)
    if job is None or not job.manifest_path:
        return None
    return _inside(Path(job.manifest_path), roots)


def _inside(path: Path, roots: list[Path]) -> Path | None:
    try:
        real = path.resolve(strict=True)
    except OSError:
        return None
    if root_of(real, roots) is None or not real.is_file():
        return None
    return real


def daemon_state(store: Store, pid: int | None) -> dict:
    return {"running": pid is not None, "pid": pid, "paused": store.flag("paused") == "1"}
