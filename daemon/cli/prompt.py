"""`hotshot prompt`: Auto Prompt on demand, the workspace's "Regenerate" button.

It captions frames sampled across a shot's source (and a reference image),
prints the suggested prompt and writes it to `<source>.prompt.txt` in the shot,
ready to paste into a request ("Use Prompt").
"""

from __future__ import annotations

from pathlib import Path

from daemon.config import Settings
from daemon.conventions import kind_of, root_of
from daemon.errors import HotshotError
from daemon.resolve import load_setup
from daemon.shots import originals, read_shot
from daemon.store import Store
from engine.files import write_bytes_atomic


def suggest(settings: Settings, shot: Path, source_name: str | None, reference: Path | None,
            frame_range: tuple[int, int] | None, device: str) -> tuple[Path, object]:
    """Caption the shot's source and write the suggested prompt beside it; return the file and the result."""
    from engine.captions import Captioner
    from engine.controls import count_people
    from engine.devices import resolve_device
    from engine.errors import EngineError
    from engine.probe import probe
    from engine.prompt_writing import suggest_prompt

    setup = load_setup(settings, settings.device_kind)
    if setup.captioner is None:
        raise HotshotError("the model catalog has no [captioner] table; see docs/controls.md")
    source = choose_source(settings, shot, source_name)
    device = resolve_device(device)
    try:
        info = probe(source, settings.ffprobe_timeout_seconds)
        first, last = frame_range or (0, info.frame_count - 1)
        captioner = Captioner.load(setup.captioner, device)
        counter = None
        if setup.controls is not None and setup.controls.pose_detector is not None:
            def counter(frames):
                return count_people(frames, setup.controls, device)
        result = suggest_prompt(source, first, last, captioner, reference=reference, people_counter=counter)
    except EngineError as exc:
        raise HotshotError(str(exc)) from exc
    target = source.with_name(f"{source.stem}.prompt.txt")
    write_bytes_atomic(target, (result.prompt + "\n").encode())
    return target, result


def choose_source(settings: Settings, shot: Path, name: str | None) -> Path:
    """The named video, or the shot's only original by the daemon's rule (daemon/shots.py)."""
    if not shot.is_dir():
        raise HotshotError(f"{shot} is not a shot folder")
    if name is not None:
        path = shot / name
        if not path.is_file() or kind_of(path) != "video":
            raise HotshotError(f"{path} is not a video in the shot")
        return path
    shot = shot.resolve()
    store = Store.open(settings.database, read_only=True) if settings.database.exists() else None
    try:
        found = originals(read_shot(shot, root_of(shot, settings.roots) or shot, store))
    finally:
        if store:
            store.close()
    if len(found) != 1:
        choices = ", ".join(path.name for path in found) or "none"
        raise HotshotError(f"say which source with --source; the shot's sources are: {choices}")
    return found[0]
