"""Fault injection for the reliability tests (tests/reliability/); inert unless `HOTSHOT_FAULTS` is set.

Named points in the daemon and the engine call `reached(point)`. With the
environment variable `HOTSHOT_FAULTS` unset (always, outside the tests) that is
one dictionary lookup and nothing else happens. With it set to a file path, the
file may hold one armed fault, a line

    <point> <n> <action> [<argument>] [# a note, e.g. the trial]

and the n-th time a process reaches <point> after the fault was armed (written),
that process fires it: it renames the file to `<file>.fired` (so exactly one
process fires each armed fault), appends its pid, and then

    kill <pid>|self   sends SIGKILL to that process (`self`: itself)
    hang              stops making progress (sleeps) until it is killed
    pause <seconds>   sleeps that long, then goes on (so a test can act at that exact point)
    enospc            raises OSError(ENOSPC), as a full disk would

Points: `ingest` (the daemon registering a video or a request), `chunk`
(inside a chunk: diffused, checkpointed, encoded), `after-chunks` (after the
last chunk, until the output MP4 is published), `manifest` (writing the Render
Info) and `status` (the daemon writing a status file); besides these kill trials' points, `load` (a worker
loading a model, not from its cache), where a test pauses a load. See docs/reliability.md.
"""

from __future__ import annotations

import errno
import os
import signal
import time

ENV = "HOTSHOT_FAULTS"
POINTS = ("ingest", "chunk", "after-chunks", "manifest", "status")
_hits: dict[str, int] = {}


def armed() -> bool:
    """Whether fault injection is switched on in this process."""
    return bool(os.environ.get(ENV))


def reached(point: str) -> None:
    """A named point was reached: fire the armed fault if it is this point's turn."""
    path = os.environ.get(ENV)
    if path:
        _check(path, point)


def _check(path: str, point: str) -> None:
    try:
        with open(path) as handle:
            text = handle.read()
    except OSError:
        return
    fields = text.split("#", 1)[0].split()
    if len(fields) < 3 or fields[0] != point or not fields[1].isdigit():
        return
    _hits[text] = count = _hits.get(text, 0) + 1
    if count != int(fields[1]):
        return
    try:
        os.rename(path, f"{path}.fired")
    except OSError:
        return  # another process fired it first
    with open(f"{path}.fired", "a") as handle:
        handle.write(f"\nfired by {os.getpid()}\n")
    action, argument = fields[2], fields[3] if len(fields) > 3 else "self"
    if action == "kill":
        os.kill(os.getpid() if argument == "self" else int(argument), signal.SIGKILL)
        if argument == "self":
            time.sleep(60)  # SIGKILL is on its way
    elif action == "hang":
        while True:
            time.sleep(3600)
    elif action == "pause":
        time.sleep(float(argument))
    elif action == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), f"(injected at {point})")


def environment() -> dict[str, str]:
    """The fault variable of this process, to hand to worker processes (forked from a server started earlier)."""
    return {ENV: os.environ[ENV]} if os.environ.get(ENV) else {}


def adopt(variables: dict[str, str]) -> None:
    """Take the daemon's fault variable as this process's own (or none)."""
    if variables.get(ENV):
        os.environ[ENV] = variables[ENV]
    else:
        os.environ.pop(ENV, None)
