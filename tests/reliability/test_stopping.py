"""Stopping `hotshot run` by hand: Ctrl-C in its terminal, a second SIGTERM; and a second daemon on a root.

The daemon runs in a process and session of its own (as a terminal's foreground job or systemd runs it); the
render is paused at a chunk by the fault seam while the signal arrives, ffmpeg's decode of the source alive.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from daemon.config import load_settings
from daemon.errors import ConfigError
from daemon.service import Daemon
from tests.conftest import CATALOG, PROJECT
from tests.harness import status_of, wait_for
from tests.reliability.support import QUICK, DaemonProcess, Faults, config_file, copy_plate, report, sha, write_json

# The first `chunk` point: the first chunk's diffusion, on the render's own thread, before any other stage can
# reach it. The decoder runs at most two chunks and a pipe ahead of diffusion, so here it still has frames of later
# chunks to decode and waits, alive, on its full pipe. (A later hit may come from the store thread while the
# decoder has already read the whole range and exited, and a segment's encoder ends by itself.)
PAUSED_AT = ("chunk", 1)


def paused_render(tmp_path, models_dir, media) -> tuple[DaemonProcess, Faults, object]:
    faults = Faults(tmp_path / "faults")
    config = config_file(tmp_path, models_dir)
    shot = tmp_path / "root" / "sh010"
    copy_plate(media, shot)
    faults.arm(*PAUSED_AT, "pause", "3")
    daemon = DaemonProcess(config, tmp_path / "daemon.log", faults).start()
    request = write_json(shot / "r.render.json", QUICK)
    wait_for(faults.fired, 90, "the render to pause")
    return daemon, faults, request


def decoders_of(parent: int) -> list[int]:
    """The live ffmpeg processes `parent` started that decode a file into a pipe to it: not a segment's encoder
    (which reads a pipe, and ends by itself once its chunk is written), nor the audio's encoder (which reads the
    file into a file of its own, and ends by itself too), nor one that has already exited and waits to be
    reaped."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
                name = open(f"/proc/{entry}/comm").read().strip()
                arguments = open(f"/proc/{entry}/cmdline").read().split("\0")
            except OSError:
                continue
            if int(fields[1]) == parent and name == "ffmpeg" and fields[0] != "Z" and "-i" in arguments \
                    and arguments[arguments.index("-i") + 1] != "pipe:" and "rawvideo" in arguments:
                found.append(int(entry))
    return found


def running(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
def test_ctrl_c_pauses_the_running_job_and_the_next_start_resumes_it(tmp_path, media, models_dir,
                                                                    quick_reference):
    """Ctrl-C (SIGINT to the daemon's whole process group, as a terminal sends it) while a render decodes:
    ffmpeg, in a group of its own, goes on decoding; the daemon exits 0, the job is queued again (not failed
    as a damaged source), and the next start finishes it from its checkpoints, byte-identical to an
    uninterrupted render."""
    daemon, faults, request = paused_render(tmp_path, models_dir, media)
    try:
        decoders = decoders_of(daemon.worker_pid())
        assert decoders, "no ffmpeg decoding the source while the chunk is paused"
        # The terminal signals its foreground process group: the daemon's, which ffmpeg must not be in.
        assert all(os.getpgid(pid) != daemon.pid for pid in decoders), "ffmpeg is in the daemon's process group"
        os.killpg(daemon.pid, signal.SIGINT)
        time.sleep(0.5)
        assert all(running(pid) for pid in decoders), "Ctrl-C reached ffmpeg"
        assert daemon.wait_dead(60) == 0
        status = status_of(request)
        assert status["state"] == "queued", status
        assert "resumes from its last chunk" in status["last_error"], status
        faults.disarm()
        daemon.start("--drain")
        assert daemon.wait_dead(120) == 0
    finally:
        daemon.kill_session()
    done = status_of(request)
    assert done["state"] == "done" and done["outputs"]["chunks_resumed"] >= 1, done
    assert sha(request.with_name("plate_r001.mp4")) == quick_reference
    report("Ctrl-C during a render", 1, 0, 0, "pytest tests/reliability/test_stopping.py -k ctrl_c -m slow")


@pytest.mark.slow
def test_a_second_sigterm_exits_at_once_with_the_job_queued_in_its_status(tmp_path, media, models_dir):
    """SIGTERM, then SIGTERM again while the chunk is still paused: the daemon exits non-zero at once and the
    status file already says the job is queued again (not `running … s left`)."""
    daemon, _faults, request = paused_render(tmp_path, models_dir, media)
    try:
        wait_for(lambda: (status_of(request) or {}).get("state") == "running", 30, "the running status")
        daemon.process.send_signal(signal.SIGTERM)
        time.sleep(1.0)  # the first is taken: the daemon waits for the paused chunk
        daemon.process.send_signal(signal.SIGTERM)
        assert daemon.wait_dead(20) != 0
    finally:
        daemon.kill_session()
    status = status_of(request)
    assert status["state"] == "queued", status
    assert "second signal" in status["last_error"], status


def test_a_second_daemon_on_the_same_root_is_refused_naming_the_first(tmp_path):
    """Two daemons with their own state folders over one watch root would render every request twice into
    the same names: the second refuses to start, naming the host and pid of the first."""
    (tmp_path / "root").mkdir()
    first = Daemon(load_settings(None, roots=[tmp_path / "root"], state_dir=tmp_path / "state1",
                                 catalogs=[CATALOG]))
    try:
        with pytest.raises(ConfigError) as refused:
            Daemon(load_settings(None, roots=[tmp_path / "root"], state_dir=tmp_path / "state2", catalogs=[CATALOG]))
    finally:
        first.store.close()
        first.release_locks()
    message = str(refused.value)
    assert f"watch root {tmp_path / 'root'} is watched by another hotshot daemon (host {socket.gethostname()}, " \
           f"pid {os.getpid()}, state dir {tmp_path / 'state1'}" in message
    later = Daemon(load_settings(None, roots=[tmp_path / "root"], state_dir=tmp_path / "state2", catalogs=[CATALOG]))
    later.store.close()
    later.release_locks()


def test_whatever_writes_to_standard_error_reaches_the_log_as_json(tmp_path):
    """With JSON logs, lines that native code or a child process write to standard error (libpng's errors,
    multiprocessing's resource tracker) come out as JSON log lines too; JSON lines pass unchanged."""
    script = """
import os, subprocess, sys, time
import structlog
from daemon import logs
logs.configure("json", "info", handler=logs.LockedStreamHandler(logs.capture_stderr()))
structlog.get_logger("test").info("a log line")
os.write(2, b"libpng error: IDAT: CRC error\\n")
subprocess.run("echo resource_tracker: There appear to be 1 leaked semaphore objects >&2", shell=True)
os.write(2, b'{"event": "a worker line", "level": "info"}\\n')
time.sleep(0.5)
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=PROJECT, capture_output=True, text=True, timeout=60)
    lines = [json.loads(line) for line in done.stderr.splitlines()]  # every line is JSON
    assert {"a log line", "a worker line"} <= {line["event"] for line in lines}
    outside = [line["line"] for line in lines if line["event"] == "output outside the log"]
    assert outside == ["libpng error: IDAT: CRC error",
                       "resource_tracker: There appear to be 1 leaked semaphore objects"]
