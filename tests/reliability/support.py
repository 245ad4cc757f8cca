"""What the reliability tests share: the daemon in a process of its own, armed faults, checks, figures.

Every scenario records a line of figures (trials, failures, data lost) with `report`; `make
test-reliability` collects them in var/reliability/report.jsonl for docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

from daemon.scan import process_alive
from engine.faults import ENV as FAULTS_ENV
from tests.conftest import CATALOG, PROJECT
from tests.harness import sha, state_of, status_of, wait_for  # noqa: F401 - sha and state_of for the suite

REPORT_ENV = "HOTSHOT_RELIABILITY_REPORT"
# A quick passthrough render of six chunks of the bundled 50-frame clip.
QUICK = {"model": "passthrough", "frame_range": [0, 40], "output_size": 64, "context": {"size": 9, "overlap": 2}}
RENDER_NAME = re.compile(r"_r\d{3,}\.mp4$")


def report(scenario: str, trials: int, failures: int, lost: int, command: str, **figures) -> None:
    """Print a scenario's figures and add them to the report file, when `make test-reliability` asks for one."""
    line = {"scenario": scenario, "trials": trials, "failures": failures, "lost": lost, "command": command, **figures}
    print(f"\nFIGURES {json.dumps(line)}")
    target = os.environ.get(REPORT_ENV)
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        with open(target, "a") as handle:
            handle.write(json.dumps(line) + "\n")


class Faults:
    """The file an armed fault is written to (engine/faults.py)."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "fault"
        self.armed_count = 0

    def arm(self, point: str, n: int, action: str = "kill", argument: str = "self") -> None:
        self.disarm()
        self.armed_count += 1
        self.path.write_text(f"{point} {n} {action} {argument} # arming {self.armed_count}\n")

    def fired(self) -> str | None:
        try:
            return Path(f"{self.path}.fired").read_text()
        except FileNotFoundError:
            return None

    def disarm(self) -> None:
        self.path.unlink(missing_ok=True)
        Path(f"{self.path}.fired").unlink(missing_ok=True)


def config_file(tmp: Path, models_dir: Path, **settings) -> Path:
    """A settings file for a daemon over `tmp/root` with state in `tmp/state`."""
    values = {
        "roots": [str(tmp / "root")], "state_dir": str(tmp / "state"), "models_dir": str(models_dir),
        "catalogs": [str(CATALOG)], "stable_seconds": 0.3, "reconcile_seconds": 2.0, "devices": ["cpu"],
        "log_format": "json", "log_level": "info", "retry_backoff_seconds": 0.0, "status_every_seconds": 0.2,
        "default_model": "passthrough",
    }
    values.update(settings)
    (tmp / "root").mkdir(parents=True, exist_ok=True)
    path = tmp / "hotshot.toml"
    path.write_text("".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items()))
    return path


class DaemonProcess:
    """`hotshot run` in a process (and session) of its own, the way systemd runs it."""

    def __init__(self, config: Path, log: Path, faults: Faults | None = None) -> None:
        self.config = config
        self.log = log
        self.faults = faults
        self.process: subprocess.Popen | None = None
        self.starts = 0
        self.sessions: list[int] = []
        self._log_offset = 0

    @property
    def pid(self) -> int:
        return self.process.pid

    def start(self, *extra: str) -> DaemonProcess:
        env = {**os.environ}
        env.pop(FAULTS_ENV, None)
        if self.faults is not None:
            env[FAULTS_ENV] = str(self.faults.path)
        self._log_offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "a") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "daemon.cli", "run", "--config", str(self.config),
                                             *extra], env=env, cwd=PROJECT, stdout=subprocess.DEVNULL, stderr=log,
                                            start_new_session=True)
        self.starts += 1
        self.sessions.append(self.process.pid)
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def worker_pid(self, timeout: float = 60.0) -> int:
        """The pid of the daemon's (only) worker, once it is ready."""

        def ready() -> int | None:
            pids = [line["pid"] for line in self.log_lines() if line.get("event") == "worker started"]
            return pids[-1] if pids and process_alive(pids[-1]) else None

        return wait_for(ready, timeout, "the worker to start")

    def log_lines(self) -> list[dict]:
        """The log lines of the current run."""
        lines = []
        with open(self.log, "rb") as handle:
            handle.seek(self._log_offset)
            text = handle.read().decode(errors="replace")
        for line in text.splitlines():
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return lines

    def peak_rss_kib(self) -> int | None:
        """The daemon process's peak resident memory (VmHWM), while it runs."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        except OSError:
            return None
        return None

    def wait_dead(self, timeout: float) -> int:
        return self.process.wait(timeout)

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM, as systemd stops it; then make sure nothing of its session is left."""
        code = None
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                code = self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill_session()
        return code

    def kill_session(self) -> None:
        """SIGKILL whatever is left of the daemon's sessions (fork servers, workers, ffmpeg)."""
        for session in self.sessions:
            with _suppress_lookup():
                os.killpg(session, signal.SIGKILL)
        if self.process is not None:
            with _suppress_lookup():
                self.process.wait(10)


class _suppress_lookup:
    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        return kind is not None and issubclass(kind, (ProcessLookupError, PermissionError,
                                                      subprocess.TimeoutExpired))


class TornFileWatcher:
    """Reads every file under its final name while the daemon works: a JSON file must parse, a render must be
    the expected bytes. Anything else was visible half-written."""

    def __init__(self, root: Path, reference: str | None, interval: float = 0.05) -> None:
        self.root = root
        self.reference = reference
        self.interval = interval
        self.seen: dict[tuple, bool] = {}
        self.torn: list[str] = []
        self.checked = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="torn-file-watcher", daemon=True)

    def __enter__(self) -> TornFileWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.scan()

    def scan(self) -> None:
        for path in list(self.root.rglob("*")):
            if path.name.startswith(".") or any(part.startswith(".") for part in path.relative_to(self.root).parts):
                continue
            try:
                stat = path.lstat()
                key = (str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)
                if key in self.seen or not path.is_file():
                    continue
                if path.name.endswith(".json"):
                    json.loads(path.read_bytes())
                elif RENDER_NAME.search(path.name) and self.reference is not None:
                    if sha(path) != self.reference:
                        self.torn.append(f"{path} is not the expected render ({stat.st_size} bytes)")
            except FileNotFoundError:
                continue
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                self.torn.append(f"{path} was visible half-written: {exc}")
            self.seen[key] = True
            self.checked += 1


def temporaries(*folders: Path) -> list[Path]:
    """hotshot's temporary files and folders left anywhere below `folders`."""
    found = []
    for folder in folders:
        if not folder.exists():
            continue
        for path in folder.rglob("*"):
            if path.name.endswith(".part") or ".part" in path.name:
                found.append(path)
    return found


def copy_plate(media: Path, shot: Path, name: str = "chaplin.mp4") -> Path:
    shot.mkdir(parents=True, exist_ok=True)
    tmp = shot / ".plate.mp4.copying"
    shutil.copyfile(media / name, tmp)
    os.replace(tmp, shot / "plate.mp4")
    return shot / "plate.mp4"


def write_json(path: Path, data: dict) -> Path:
    """Write a request the way an editor's save does: a temporary file, renamed into place."""
    tmp = path.with_name(f".{path.name}.saving")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)
    return path


