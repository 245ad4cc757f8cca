"""Crashes mid-render: the job resumes from its last checkpoint and the output is identical."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import CATALOG
from tests.harness import (
    RunningDaemon,
    chunks_done,
    drain,
    kill_worker,
    settings_for,
    sha,
    status_of,
    wait_for,
    wait_for_state,
    write_request,
)

pytestmark = pytest.mark.usefixtures("worker_kind")  # each test over thread and process workers

REQUEST = {"prompt": "charcoal sketch", "frame_range": [0, 59], "output_size": 96, "steps": 2, "seed": 11,
           "context": {"size": 17, "overlap": 5}}


def prepare(tmp_path, media, name="sh010"):
    shot = tmp_path / "root" / name
    shot.mkdir(parents=True)
    shutil.copyfile(media / "chaplin.mp4", shot / "plate.mp4")
    return shot


@pytest.fixture(scope="module")
def reference(tmp_path_factory, media, models_dir, tiny_spec):
    """The same request rendered without interruption."""
    tmp = tmp_path_factory.mktemp("reference")
    shot = prepare(tmp, media)
    write_request(shot / "r.render.json", **REQUEST)
    drain(settings_for(tmp, models_dir))
    assert status_of(shot / "r.render.json")["state"] == "done"
    return sha(shot / "plate_r001.mp4")


def test_killed_worker_resumes_from_checkpoint(tmp_path, media, models_dir, tiny_spec, reference):
    """kill -9 of the worker after two chunks: the daemon restarts it and the job resumes, byte-identical."""
    settings = settings_for(tmp_path, models_dir)
    shot = prepare(tmp_path, media)
    request = write_request(shot / "r.render.json", **REQUEST)
    with RunningDaemon(settings) as daemon:
        wait_for(lambda: chunks_done(settings.database) >= 2, 120, "two finished chunks")
        kill_worker(daemon)
        status = wait_for_state(request, ("done", "failed"), 180)
    assert status["state"] == "done", status
    assert status["attempts"] == 2
    assert status["outputs"]["chunks_resumed"] >= 2
    assert sha(shot / "plate_r001.mp4") == reference
    manifest = json.loads((shot / "plate_r001.render-info.json").read_text())
    assert sum(chunk["resumed"] for chunk in manifest["chunk_plan"]["chunks"]) >= 2
    assert not [p for p in shot.iterdir() if p.name.startswith(".")]
    assert not any(settings.work_dir.glob("job-*"))


@pytest.mark.slow  # the reliability suite kills the daemon at every step of a render, 100 trials
def test_killed_daemon_resumes_after_restart(tmp_path, media, models_dir, tiny_spec, reference):
    """kill -9 of the whole daemon mid-job (its worker dies with it); a restarted daemon finishes the job."""
    shot = prepare(tmp_path, media)
    request = write_request(shot / "r.render.json", **REQUEST)
    config = tmp_path / "hotshot.toml"
    config.write_text("\n".join([
        f'roots = ["{tmp_path / "root"}"]', f'state_dir = "{tmp_path / "state"}"',
        f'models_dir = "{models_dir}"', f'catalogs = ["{CATALOG}"]', "stable_seconds = 0.3",
        'devices = ["cpu"]', 'log_format = "json"', 'log_level = "warning"', "retry_backoff_seconds = 0",
    ]))
    database = tmp_path / "state" / "hotshot.db"
    command = [sys.executable, "-m", "daemon.cli", "run", "--config", str(config)]
    daemon = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: chunks_done(database) >= 2, 120, "two finished chunks")
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(10)
    finally:
        if daemon.poll() is None:
            daemon.kill()
    time.sleep(0.5)
    assert status_of(request)["state"] == "running"
    finished = subprocess.run(command + ["--drain"], capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-2000:]
    status = status_of(request)
    assert status["state"] == "done", status
    assert status["outputs"]["chunks_resumed"] >= 2
    assert sha(shot / "plate_r001.mp4") == reference
    assert not [p for p in shot.iterdir() if p.name.startswith(".")]


def test_sigterm_checkpoints_and_exits_cleanly(tmp_path, media, models_dir, tiny_spec, reference):
    """SIGTERM: the daemon stops claiming, lets the running chunk finish, exits 0; the job resumes later."""
    shot = prepare(tmp_path, media)
    request = write_request(shot / "r.render.json", **REQUEST)
    env = {**os.environ, "HOTSHOT_MODELS_DIR": str(models_dir), "HOTSHOT_CATALOGS": json.dumps([str(CATALOG)]),
           "HOTSHOT_STABLE_SECONDS": "0.3", "HOTSHOT_DEVICES": '["cpu"]', "HOTSHOT_LOG_FORMAT": "json",
           "HOTSHOT_RETRY_BACKOFF_SECONDS": "0"}
    command = [sys.executable, "-m", "daemon.cli", "run", "--root", str(tmp_path / "root"),
               "--state", str(tmp_path / "state")]
    database = tmp_path / "state" / "hotshot.db"
    daemon = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: chunks_done(database) >= 1, 120, "a finished chunk")
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(60)
    finally:
        if daemon.poll() is None:
            daemon.kill()
    log = daemon.stderr.read()
    assert code == 0, log[-2000:]
    status = status_of(request)
    assert status["state"] == "queued" and "resumes" in status["last_error"]
    assert chunks_done(database) >= 1 and not (shot / "plate_r001.mp4").exists()
    finished = subprocess.run(command + ["--drain"], env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-2000:]
    status = status_of(request)
    assert status["state"] == "done" and status["attempts"] == 1
    assert status["outputs"]["chunks_resumed"] >= 1
    assert sha(shot / "plate_r001.mp4") == reference
