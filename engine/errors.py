"""Errors the engine raises.

Every error says what was wrong, with the value, and what to do instead. Two
families matter to the caller: `InputError` (the request or the media is at
fault; retrying cannot help) and everything else (possibly transient).
"""

from __future__ import annotations

import errno
from pathlib import Path

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
DISK_FULL_MESSAGES = ("No space left on device", "Disk quota exceeded")


class EngineError(Exception):
    """Root of every error raised by the engine."""

    retryable = True


class InputError(EngineError):
    """The media or the settings are unusable as given; retrying cannot help."""

    retryable = False


class MediaError(InputError):
    """A media file cannot be read as a video."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path} is not a readable video: {reason}")


class FrameRangeError(InputError):
    """A frame range lies outside the clip or is reversed."""

    def __init__(self, first: int, last: int, frame_count: int) -> None:
        self.first, self.last, self.frame_count = first, last, frame_count
        super().__init__(
            f"frame_range [{first}, {last}] is outside the clip, which has {frame_count} frames "
            f"(valid frames are 0 to {frame_count - 1})"
        )


class SettingsError(InputError):
    """A resolved setting cannot be honoured by the engine."""


class ModelError(EngineError):
    """A model cannot be found or loaded."""


class UnknownModelError(ModelError, InputError):
    """The catalog has no entry with this id."""

    def __init__(self, model_id: str, known: list[str]) -> None:
        self.model_id = model_id
        self.known = known
        super().__init__(f"unknown model {model_id!r}; the catalog has: {', '.join(known) or 'nothing'}")


class WeightsMissingError(ModelError, InputError):
    """A catalog entry names weights that are not present."""

    def __init__(self, model_id: str, location: str, hint: str) -> None:
        self.model_id = model_id
        self.location = location
        super().__init__(f"weights for model {model_id!r} are not at {location}: {hint}")


class EncodeError(EngineError):
    """ffmpeg failed while writing an output."""


class DiskFullError(EngineError):
    """A disk filled up while the render wrote to it; once space is freed, a retry resumes the job."""

    def __init__(self, path: str | Path, detail: str = "No space left on device") -> None:
        self.path = Path(path)
        folder = self.path.parent
        while folder.name.startswith(".") and folder.parent != folder:  # name the folder people see
            folder = folder.parent
        super().__init__(f"no space left on the disk holding {folder} while writing {self.path.name} "
                         f"({detail}); free some space there, then `hotshot retry` resumes the job")


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS


class Interrupted(EngineError):
    """The caller asked the render to stop; finished chunks are checkpointed."""

    def __init__(self, reason: str, chunks_done: int) -> None:
        self.reason = reason
        self.chunks_done = chunks_done
        super().__init__(f"render stopped ({reason}) after {chunks_done} finished chunk(s)")


def validation_problems(errors: list[dict], whole: str = "entry") -> str:
    """pydantic's errors as one line: `field.sub: message; ...` (`whole` names a problem of the whole entry).

    The one formatter for settings, catalogs and render windows; requests add the value given
    (daemon/request.py)."""
    return "; ".join(f"{'.'.join(map(str, error['loc'])) or whole}: {error['msg']}" for error in errors)
