"""What a shot holds, and which of its videos are originals: one rule for the daemon, `estimate` and `prompt`.

A video is a render when hotshot made it: the database recorded it as one,
some job chose it as its output (even before its Render Info is written), or
a Render Info lies beside it. Every other video in the shot is an original.
`read_shot` gathers what the rule needs (the files on disk, the videos and
outputs the database recorded); a command that runs without the daemon reads
the same database, read-only, and probes the videos it has not recorded.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from daemon.conventions import has_manifest, kind_of_name
from daemon.states import MediaKind, MediaState
from daemon.store import Store


@dataclass
class ShotFacts:
    """What the resolver needs to know about a shot."""

    folder: Path
    root: Path
    media: list[dict]
    videos_on_disk: list[Path]  # files named like videos, not hidden
    output_paths: set[str]
    allow_hard_links: bool = False
    known_originals: dict[frozenset[Path], list[Path]] = field(default_factory=dict, repr=False, compare=False)

    def recorded(self, path: Path) -> dict | None:
        return next((media for media in self.media if media["path"] == str(path)), None)


def is_render(path: Path, recorded: dict | None, output_paths: set[str]) -> bool:
    """Whether hotshot made the video at `path` (see the module's rule)."""
    if recorded is not None and recorded["kind"] == MediaKind.RENDER:
        return True
    return str(path) in output_paths or has_manifest(path)


def originals(shot: ShotFacts, exclude: set[Path] = frozenset()) -> list[Path]:
    """The shot's original videos, by name: recorded ones that are not missing, and videos on disk the database
    has not recorded (yet) that are not renders; less `exclude` (a mask video, say)."""
    key = frozenset(exclude)
    if key in shot.known_originals:  # a batch of a shot's requests asks once, not once a request
        return list(shot.known_originals[key])
    recorded = {Path(media["path"]) for media in shot.media
                if media["kind"] == MediaKind.ORIGINAL and media["state"] != MediaState.MISSING}
    unrecorded = {path for path in shot.videos_on_disk if not path.is_dir() and shot.recorded(path) is None
                  and not is_render(path, None, shot.output_paths)}
    shot.known_originals[key] = found = sorted((recorded | unrecorded) - set(exclude))
    return list(found)


def read_shot(folder: Path, root: Path, store: Store | None, allow_hard_links: bool = False,
              probe_unrecorded: Callable[[Path], dict] | None = None) -> ShotFacts:
    """The facts of the shot in `folder`: its files, and what `store` (if any) recorded of it.

    With `probe_unrecorded` (for commands that may run with no daemon), each video the database has not
    recorded gets a row as the daemon would record it: its kind by `is_render`, and what the function returns
    (`state`, `probe`, `error`).
    """
    try:
        # Only videos matter (a shot of a thousand requests and their status files is not stat'ed file by file).
        videos = sorted(folder / name for name in os.listdir(folder)
                        if not name.startswith(".") and kind_of_name(name) == "video"
                        and os.path.exists(folder / name))  # not a dangling link
    except OSError:
        videos = []
    shot = store.shot_at(folder) if store is not None else None
    media = store.media_in_shot(shot["id"]) if shot else []
    outputs = store.output_paths(shot["id"]) if shot else set()
    facts = ShotFacts(folder, root, media, videos, outputs, allow_hard_links)
    if probe_unrecorded is not None:
        for path in videos:
            if facts.recorded(path) is None:
                kind = MediaKind.RENDER if is_render(path, None, outputs) else MediaKind.ORIGINAL
                media.append({"id": None, "path": str(path), "name": path.name, "kind": kind,
                              **probe_unrecorded(path)})
    return facts
