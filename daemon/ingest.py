"""Registering stable files: videos become media, requests become jobs.

A video is probed and recorded as an original source or, if hotshot wrote it,
as a render. A request is read, hashed and, if this content is new at this
path, recorded with a job: queued, waiting for its source, or failed with the
reason. Nothing here renders or blocks for long.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import stat
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from daemon.config import Settings
from daemon.conventions import (
    NAME_MAX,
    RENDER_NAME_EXTRA,
    kind_of,
    name_bytes,
    refusal,
    root_of,
    shown,
    status_path,
    storable,
)
from daemon.errors import FileRefused, RequestError
from daemon.request import RenderRequest, parse_request
from daemon.resolve import Setup, resolve
from daemon.schedule import Schedule
from daemon.shots import ShotFacts, is_render, read_shot
from daemon.sources import fixed_identity
from daemon.stability import StableFile
from daemon.states import ErrorKind, Job, JobState, MediaKind, MediaState
from daemon.status_file import write_refusal
from daemon.store import Store, utc_now
from engine import faults
from engine.errors import MediaError
from engine.probe import VideoInfo, probe

log = structlog.get_logger("hotshot.ingest")
# Videos probed side by side when several became stable at once (a sequence drop brings a clip per shot):
# each ffprobe waits on its own process, and one after another they held the loop for most of a drop.
PROBERS = 8
CANCELLED_BY_FIELD = 'cancelled by "cancel": true in the request'
# The first bytes of still images, which an artist may save under a video's name by mistake.
IMAGE_SIGNATURES = {b"\x89PNG\r\n\x1a\n": "PNG", b"GIF87a": "GIF", b"GIF89a": "GIF", b"\xff\xd8\xff": "JPEG",
                    b"II*\x00": "TIFF", b"MM\x00*": "TIFF", b"\x76\x2f\x31\x01": "EXR"}


def not_a_video(path: Path) -> str | None:
    """Why a stable file named like a video is not one and never will be (an image, a file hotshot may not
    read), said at once rather than after `source_wait_seconds`; None when ffprobe should judge it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except PermissionError:
        return "cannot be read by hotshot (permission denied); give the daemon's user read access, then save it again"
    except OSError:
        return None  # gone or replaced meanwhile: its event says so
    try:
        head = os.read(fd, 16)
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    finally:
        os.close(fd)
    for signature, kind in IMAGE_SIGNATURES.items():
        if head.startswith(signature):
            return f"is a {kind} image, not a video, though its name ends in {path.suffix}"
    return None


@dataclass
class Batch:
    """Files registered in one transaction, and what is left to do once it is committed: the status files
    of its jobs and the cancels its requests ask for. Each shot folder is read once per batch."""

    jobs: list[int] = field(default_factory=list)
    cancels: list[str] = field(default_factory=list)
    shots: dict[Path, ShotFacts] = field(default_factory=dict)
    shot_ids: dict[Path, int] = field(default_factory=dict)
    real_folders: dict[Path, str] = field(default_factory=dict)


class Ingest:
    def __init__(self, store: Store, settings: Settings, setup: Setup, clock: Callable[[], float],
                 publish: Callable[[int], None], schedule: Schedule) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.publish = publish
        self.setup = setup
        self.schedule = schedule
        self._batch: Batch | None = None
        self._shots: dict[Path, ShotFacts] | None = None  # shots read once: within a batch, or a revisiting pass
        self._probed: dict[Path, tuple[tuple[int, int, int, int], VideoInfo | MediaError]] = {}

    @contextlib.contextmanager
    def batch(self) -> Iterator[Batch]:
        """Register files in one transaction (a sequence drop is thousands of them); the caller writes the
        batch's status files once it is committed. Until they are written the store notes the first job
        without one (`Store.note_unpublished`), in the same transaction, so a crash loses no status file: the
        next start writes them. The measured costs the estimates are fitted to are read once per batch (no
        render ends within one)."""
        self._batch = batch = Batch()
        try:
            with self._reading_once(batch.shots), self.store.immediate():
                yield batch
        finally:
            self._batch = None

    @contextlib.contextmanager
    def revisiting(self) -> Iterator[None]:
        """Revisit waiting jobs (`revisit`) reading each shot and the measured costs once: a shot's hundred
        requests registered before its video arrived are revisited together when it does."""
        with self._reading_once({}):
            yield

    @contextlib.contextmanager
    def _reading_once(self, shots: dict[Path, ShotFacts]) -> Iterator[None]:
        history = self.setup.history
        self.setup.history = functools.cache(history)
        self._shots = shots
        try:
            yield
        finally:
            self._shots = None
            self.setup.history = history

    # -- stable files ---------------------------------------------------------

    def file_stable(self, stable: StableFile) -> int | None:
        """Register a file that stopped changing, within a `batch()`; return the id of its shot."""
        if self._batch is None:
            raise RuntimeError("files are registered within Ingest.batch(), which writes their status files")
        root = root_of(stable.path, self.settings.roots)
        if root is None:
            return None
        if self._real_folder(stable.path.parent) != str(stable.path.parent):
            # A shot folder (or one above it) is a link: what it leads to is not in the watch root.
            log.warning("ignored: a folder on its way is a link", path=str(stable.path))
            return None
        kind = kind_of(stable.path)
        if not storable(stable.path):
            raise FileRefused(shown(stable.path), "its name, or the name of a folder above it, is not UTF-8 text "
                                                  "(a client with another character set wrote it); rename it")
        if kind == "request" and name_bytes(status_path(stable.path).name) > NAME_MAX:
            raise FileRefused(str(stable.path), f"its status file would be named with "
                                                f"{name_bytes(status_path(stable.path).name)} bytes, more than "
                                                f"file names may have ({NAME_MAX}); shorten the request's name")
        with structlog.contextvars.bound_contextvars(path=str(stable.path)):
            if kind == "video":
                return self.video(stable, root)
            if kind == "request":
                return self.request(stable, root)
        return None

    def file_gone(self, path: Path) -> None:
        if not storable(path):
            return  # never registered
        media = self.store.media_at(path)
        if media is not None and media["state"] != MediaState.MISSING:
            self.store.save_media(path, media["shot_id"], state=MediaState.MISSING, error="the file was removed")
            log.info("media removed", path=str(path))

    def video(self, stable: StableFile, root: Path) -> int:
        path = stable.path
        shot_id = self._shot_id(path.parent, root)
        existing = self.store.media_at(path)
        try:
            st = path.stat()
        except OSError:
            return shot_id  # gone again; its event says so
        identity = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino, "ctime_ns": st.st_ctime_ns}
        if existing and existing["state"] != MediaState.MISSING and all(
                existing[key] in (value, None) for key, value in identity.items()):
            if existing["inode"] is None:
                self.store.save_media(path, shot_id, **identity)
            return shot_id
        job_id = self.store.running_output(shot_id, str(path))
        if job_id is not None:
            # A render's output appears (by rename) before its worker's result reaches the loop. The job's end
            # records it, with its parent, its job and the engine's probe; registering it here first would
            # probe it again and, for that moment, show it without its lineage (a render of it queued then
            # would name the wrong root source). If the job ends otherwise, the next reconcile registers it.
            log.debug("a running job's output: recorded when the job ends", job=job_id)
            return shot_id
        kind = MediaKind.RENDER if is_render(path, existing, self.store.output_paths(shot_id)) else MediaKind.ORIGINAL
        values = {"kind": kind, **identity}
        why = refusal(path, root, st, self.settings.allow_hard_links, folders=False)
        if not why and name_bytes(path.stem) > NAME_MAX - RENDER_NAME_EXTRA:
            why = (f"has a name of {name_bytes(path.name)} bytes; its renders' names add up to "
                   f"{RENDER_NAME_EXTRA} bytes and file names may have {NAME_MAX}: shorten it to at most "
                   f"{NAME_MAX - RENDER_NAME_EXTRA} bytes before the extension")
        if not why:
            why = not_a_video(path)
        if why:
            # Refused until the file changes: requests naming it fail at once instead of waiting for it.
            values.update(state=MediaState.REFUSED, probe=None, error=f"it {why}")
        else:
            ahead = self._probed.pop(path, None)
            found = ahead[1] if ahead and ahead[0] == (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns) \
                else self._probe(path)
            if isinstance(found, MediaError):
                values.update(state=MediaState.UNREADABLE, probe=None, error=found.reason)
            else:
                values.update(state=MediaState.READY, probe=found.to_dict(), error=None)
        faults.reached("ingest")
        self.store.save_media(path, shot_id, **values)
        if self._shots is not None:
            self._shots.pop(path.parent, None)  # the shot's requests resolve against this video
        log.info("media registered", kind=kind, state=values["state"], error=values.get("error"))
        return shot_id

    def probe_ahead(self, paths: list[Path]) -> None:
        """Probe stable videos side by side before they are registered one by one; `video` uses a result
        only if the file has not changed since. Only files `video` would probe are (regular files in their
        root, hard links as allowed, not images)."""
        self._probed.clear()
        if len(paths) < 2:
            return
        with ThreadPoolExecutor(min(PROBERS, len(paths)), thread_name_prefix="prober") as pool:
            for path, found in zip(paths, pool.map(self._probe_ahead, paths), strict=True):
                if found is not None:
                    self._probed[path] = found

    def _probe_ahead(self, path: Path) -> tuple[tuple[int, int, int, int], VideoInfo | MediaError] | None:
        root = root_of(path, self.settings.roots)
        try:
            st = os.lstat(path)
        except OSError:
            return None
        if root is None or not stat.S_ISREG(st.st_mode) or refusal(path, root, st, self.settings.allow_hard_links,
                                                                   folders=False) or not_a_video(path):
            return None
        return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns), self._probe(path)

    def _probe(self, path: Path) -> VideoInfo | MediaError:
        try:
            return probe(path, self.settings.ffprobe_timeout_seconds)
        except MediaError as exc:
            return exc

    # -- requests -------------------------------------------------------------

    def request(self, stable: StableFile, root: Path) -> int:
        path = stable.path
        shot_id = self._shot_id(path.parent, root)
        try:
            raw, refused = self._read_request(path, root)
        except FileNotFoundError:
            return shot_id  # gone again; its event says so
        except OSError as exc:
            raise FileRefused(str(path), f"it cannot be read ({exc.strerror}); give the daemon's user read access, "
                                         "then save it again") from exc
        digest = hashlib.sha256(raw if refused is None else f"not read: {refused}".encode()).hexdigest()
        versions = self.store.request_versions(path)
        if digest in versions:
            self.store.touch_request(versions[digest], stable.size, stable.mtime_ns)
            return shot_id

        job = {"shot_id": shot_id, "request_path": str(path), "created_ts": self.clock()}
        text = raw.decode("utf-8-sig", "replace") if len(raw) <= self.settings.max_request_bytes else ""
        cancel = False
        try:
            if refused is not None:
                raise RequestError(refused)
            request = parse_request(raw, self.settings.max_request_bytes)
            cancel = request.cancel
            if cancel:
                job.update(state=JobState.CANCELLED, error=CANCELLED_BY_FIELD, error_kind=ErrorKind.CANCELLED,
                           priority=request.priority, finished_at=utc_now())
            else:
                job.update(self._resolution(request, path, root, shot_id))
            if job["state"] == JobState.WAITING and job.get("start_at") is None:
                job["wait_deadline"] = job["created_ts"] + self.settings.source_wait_seconds
        except RequestError as exc:
            job.update(state=JobState.FAILED, error=str(exc), error_kind=ErrorKind.REQUEST, finished_at=utc_now())
        request_row = {"shot_id": shot_id, "path": str(path), "content_hash": digest,
                       "size": stable.size, "mtime_ns": stable.mtime_ns, "raw": text}
        job_id = self.store.enqueue(request_row, job, cancels_older=CANCELLED_BY_FIELD if cancel else None,
                                    first_version=not versions)
        batch = self._batch
        if not batch.jobs:
            self.store.note_unpublished(job_id)
        batch.jobs.append(job_id)  # its status file is written once the batch is committed
        if cancel:
            batch.cancels.append(str(path))
        log.info("request registered", job=job_id, state=job["state"], error=job.get("error"))
        return shot_id

    def _read_request(self, path: Path, root: Path) -> tuple[bytes, str | None]:
        """The request's bytes (up to one over the limit), or nothing and why it is not read."""
        # Strings, not paths: this runs for every request of a sequence drop.
        real = os.path.realpath(path) if os.path.islink(path) else os.path.join(self._real_folder(path.parent),
                                                                                path.name)
        if not real.startswith(os.path.join(self._real_folder(root), "")):
            return b"", f"the request file is a link that leads outside the watch root (to {real}); it is not read"
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a pipe would block the daemon until someone wrote
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return b"", "the request is not a regular file (a pipe or a device); save it as a file"
            left, parts = self.settings.max_request_bytes + 1, []
            while left > 0 and (part := os.read(fd, left)):
                parts.append(part)
                left -= len(part)
            return b"".join(parts), None
        finally:
            os.close(fd)

    def _resolution(self, request: RenderRequest, path: Path, root: Path, shot_id: int,
                    seed: int | None = None) -> dict:
        self.schedule.start_of(request)  # a `when` not understood fails at once, before the source is there
        shot = self._shot(path.parent, root)
        resolution = resolve(request, shot, self.setup, seed)
        values = {
            "state": resolution.state,
            "priority": request.priority,
            "full_clip": int(resolution.full_clip),
            "wait_reason": resolution.wait_reason,
        }
        if resolution.state == JobState.QUEUED:
            first, last = resolution.settings["frame_range"]["value"]
            start = self.schedule.start_of(request, last - first + 1, resolution.full_clip)
            source = next((media for media in shot.media if media["id"] == resolution.source_media_id), None)
            values.update(settings=resolution.settings, source_media_id=resolution.source_media_id,
                          estimate=resolution.estimate, wait_deadline=None, window=start.window, start_at=start.at,
                          **fixed_identity(source or self.store.media(resolution.source_media_id)))
            if not self.schedule.may_start(start.window, start.at):
                values.update(state=JobState.WAITING, wait_reason=self.schedule.describe(start.window, start.at))
        return values

    def _real_folder(self, folder: Path) -> str:
        """`os.path.realpath` of a folder, once per batch (it looks at every folder on the way)."""
        real = self._batch.real_folders.get(folder)
        if real is None:
            real = self._batch.real_folders[folder] = os.path.realpath(folder)
        return real

    def _shot(self, folder: Path, root: Path) -> ShotFacts:
        """The shot's facts; within a batch or a revisiting pass read once (listing a folder of a thousand
        requests for each of them made registration quadratic), and read again after a video of it was
        registered."""
        if self._shots is None:
            return read_shot(folder, root, self.store, self.settings.allow_hard_links)
        facts = self._shots.get(folder)
        if facts is None:
            facts = self._shots[folder] = read_shot(folder, root, self.store, self.settings.allow_hard_links)
        return facts

    def _shot_id(self, folder: Path, root: Path) -> int:
        """The shot's id, asked of the store once per batch."""
        shot_id = self._batch.shot_ids.get(folder)
        if shot_id is None:
            shot_id = self._batch.shot_ids[folder] = self.store.shot_id(folder, root)
        return shot_id

    # -- waiting jobs ---------------------------------------------------------

    def revisit(self, job: Job) -> None:
        """Try a waiting job again: its source may have arrived, or its time may be up."""
        request_row = self.store.request(job.request_id)
        path = Path(job.request_path)
        root = root_of(path, self.settings.roots)
        deadline = job.created_ts + self.settings.source_wait_seconds
        try:
            request = parse_request(request_row["raw"].encode(), self.settings.max_request_bytes)
            values = self._resolution(request, path, root, job.shot_id)
        except RequestError as exc:
            values = {"state": JobState.FAILED, "error": str(exc), "error_kind": ErrorKind.REQUEST,
                      "finished_at": utc_now()}
        waits_for_source = values["state"] == JobState.WAITING and values.get("start_at") is None
        if waits_for_source and self.clock() >= deadline:
            values = {"state": JobState.FAILED, "error_kind": ErrorKind.SOURCE, "finished_at": utc_now(),
                      "error": f"gave up after {self.settings.source_wait_seconds:g} s: {values['wait_reason']}"}
        elif waits_for_source:
            values["wait_deadline"] = deadline
        if values["state"] != job.state or values.get("wait_reason") != job.wait_reason:
            self.store.revisit(job.id, values)
            logger = log.warning if values["state"] == JobState.FAILED else log.info
            logger("request revisited", job=job.id, path=str(path), state=values["state"],
                   error=values.get("error"), waiting_for=values.get("wait_reason"))
            self.publish(job.id)


@dataclass
class FailedFile:
    size: int
    mtime_ns: int
    error: str
    retry_at: float
    logged_at: float


class FailedFiles:
    """Files the ingest step could not register. Each fails alone: a request gets a failed status, every
    file a log line naming it (at most once a minute each, so one file's errors never hide another's); it
    is looked at again when it changes, or after RETRY_SECONDS; a drain ends listing them."""

    RETRY_SECONDS = 600.0
    LOG_SECONDS = 60.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.files: dict[Path, FailedFile] = {}

    def failed(self, stable: StableFile, exc: Exception) -> None:
        refused = isinstance(exc, FileRefused)
        error = str(exc) if refused else f"hotshot could not register it ({type(exc).__name__}: {exc})"
        now = self.clock()
        earlier = self.files.get(stable.path)
        logged_at = earlier.logged_at if earlier else float("-inf")
        if now - logged_at >= self.LOG_SECONDS:
            logged_at = now
            log.error("a file could not be registered; it is looked at again when it changes",
                      path=shown(stable.path), error=shown(error), exc_info=not refused)
        if kind_of(stable.path) == "request" and (earlier is None or earlier.error != error):
            write_refusal(stable.path, shown(error))
        self.files[stable.path] = FailedFile(stable.size, stable.mtime_ns, error, now + self.RETRY_SECONDS,
                                             logged_at)

    def registered(self, path: Path) -> None:
        """`path` was registered after all, or is gone: it is not reported any more."""
        self.files.pop(path, None)

    def unchanged(self) -> dict[str, tuple[int, int]]:
        """(size, mtime_ns) by path of the files not to look at again yet: unchanged, retry not due."""
        now = self.clock()
        return {str(path): (failed.size, failed.mtime_ns) for path, failed in self.files.items()
                if now < failed.retry_at}

    def report(self) -> list[dict]:
        return [{"path": shown(path), "error": shown(failed.error)} for path, failed in sorted(self.files.items())]
