"""Auto Prompt from the page: `hotshot prompt` in a child process, so the web process never loads torch."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from daemon.config import Settings

KEEP_SECONDS = 600.0
TIMEOUT_SECONDS = 900.0


@dataclass
class PromptTask:
    id: int
    shot: str
    source: str
    state: str = "running"  # running | done | failed
    prompt: str | None = None
    error: str | None = None
    started: float = field(default_factory=time.monotonic)
    process: subprocess.Popen | None = None

    def to_dict(self) -> dict:
        return {"id": self.id, "source": self.source, "state": self.state, "prompt": self.prompt,
                "error": self.error, "seconds": round(time.monotonic() - self.started, 1)}


class PromptRunner:
    """Runs one `hotshot prompt` per request and keeps its answer for the page to collect."""

    def __init__(self, settings: Settings, config: Path | None) -> None:
        self.settings = settings
        self.config = config
        self.tasks: dict[int, PromptTask] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def start(self, shot: Path, source: str, frame_range: tuple[int, int] | None = None,
              reference: str | None = None) -> PromptTask:
        command = [sys.executable, "-m", "daemon.cli", "prompt", str(shot), "--source", source,
                   "--state", str(self.settings.state_dir)]
        if self.config is not None:
            command += ["--config", str(self.config)]
        if frame_range:
            command += ["--range", str(frame_range[0]), str(frame_range[1])]
        if reference:
            command += ["--reference", str(shot / reference)]
        with self._lock:
            self._forget_old()
            task = PromptTask(next(self._ids), str(shot), source)
            self.tasks[task.id] = task
        # The child reads the same catalogs and models as this process, whatever mix of file, environment
        # and flags gave them here (the environment outranks the settings file).
        env = {**os.environ, "HOTSHOT_MODELS_DIR": str(self.settings.models_dir),
               "HOTSHOT_CATALOGS": json.dumps([str(path) for path in self.settings.catalogs])}
        task.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, env=env)
        threading.Thread(target=self._collect, args=(task, shot), name=f"prompt-{task.id}", daemon=True).start()
        return task

    def _collect(self, task: PromptTask, shot: Path) -> None:
        try:
            out, err = task.process.communicate(timeout=TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            task.process.kill()
            out, err = task.process.communicate()
            task.state, task.error = "failed", f"Auto Prompt took over {TIMEOUT_SECONDS:g} s and was stopped"
            return
        if task.process.returncode != 0:
            task.state = "failed"
            task.error = (err.strip().splitlines() or [f"exit status {task.process.returncode}"])[-1]
            task.error = task.error.removeprefix("hotshot: ")
            return
        # `hotshot prompt` writes the suggestion to <source>.prompt.txt; read it from there, not from its chatter.
        target = shot / f"{Path(task.source).stem}.prompt.txt"
        try:
            task.prompt = target.read_text().strip()
        except OSError:
            task.prompt = (out.strip().split("\n\n", 1) or [""])[0]
        task.state = "done"

    def get(self, task_id: int) -> PromptTask | None:
        return self.tasks.get(task_id)

    def _forget_old(self) -> None:
        now = time.monotonic()
        for task_id in [t.id for t in self.tasks.values() if t.state != "running" and now - t.started > KEEP_SECONDS]:
            del self.tasks[task_id]

    def close(self) -> None:
        for task in self.tasks.values():
            if task.process is not None and task.process.poll() is None:
                task.process.kill()
