"""Errors the daemon raises; each message says what was wrong and what to do."""

from __future__ import annotations


class HotshotError(Exception):
    """Root of the daemon's errors."""


class ConfigError(HotshotError):
    """The settings cannot be used; the daemon does not start."""


class RequestError(HotshotError):
    """A request cannot be accepted as written. Retrying cannot help; editing it can."""


class UnsupportedSettingError(RequestError):
    def __init__(self, field: str) -> None:
        self.field = field
        super().__init__(f"{field} is not supported yet")


class PathEscapeError(RequestError):
    """A path in a request points outside its shot or its watch root."""

    def __init__(self, field: str, value: str, why: str) -> None:
        self.field, self.value = field, value
        super().__init__(f"{field} {value!r} {why}; name a file inside the shot folder, like \"plate.mov\"")


class SourceChoiceError(RequestError):
    def __init__(self, choices: list[str]) -> None:
        self.choices = choices
        super().__init__(
            f"the shot has {len(choices)} source videos ({', '.join(choices)}); "
            "say which one with \"source\" in the request"
        )


class CommandRefused(HotshotError):
    """An operator command (cancel, retry, ...) cannot be carried out; the message says why."""


class FileRefused(HotshotError):
    """A file in a watch root that hotshot cannot register (its name cannot be stored or cannot have a status
    file beside it); the message says why and what to do. The file alone is refused."""

    def __init__(self, path: str, reason: str) -> None:
        self.path, self.reason = path, reason
        super().__init__(f"{path} is not registered: {reason}")
