"""Seeing what happens: live progress in status files, `hotshot status --watch`, `info`, terminal bars,
and notifications to a webhook and a command."""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import time
from io import StringIO

import pytest
from rich.console import Console

from daemon.cli import main
from daemon.progress import JobBars
from daemon.store import Store
from tests.conftest import CATALOG, PROJECT
from tests.harness import RunningDaemon, drain, settings_for, status_of, wait_for, write_request
from tests.helpers import make_clip
from tests.test_notify import Receiver, receiver  # noqa: F401 - the webhook receiver fixture

pytestmark = pytest.mark.usefixtures("worker_kind")  # each test over thread and process workers

SLOW = {"output_size": 128, "steps": 24, "seed": 5, "frame_range": [0, 40], "context": {"size": 17, "overlap": 5}}
QUICK = {"output_size": 64, "steps": 1, "seed": 3}


def test_the_status_file_follows_the_render_chunk_by_chunk(tmp_path, media, models_dir, tiny_spec):
    """While rendering, the status file shows every chunk with its step, frames, percent, ETA, elapsed time,
    worker and the estimate beside the time now expected; once done, the estimate beside the time taken."""
    settings = settings_for(tmp_path, models_dir)
    shot = settings.roots[0] / "sh010"
    shot.mkdir()
    shutil.copyfile(media / "chaplin.mp4", shot / "plate.mp4")
    request = write_request(shot / "r.render.json", **SLOW)
    seen = []
    with RunningDaemon(settings):
        def record():
            status = status_of(request)
            if status and status["state"] == "running" and status.get("progress"):
                seen.append(status)
            return status and status["state"] in ("done", "failed")

        wait_for(record, 180, "the render to finish")
    done = status_of(request)
    assert done["state"] == "done", done
    chunks = seen[-1]["progress"]["chunks"]
    assert chunks == 4 and {status["progress"]["chunk"] for status in seen} >= set(range(1, chunks + 1))
    middle = next(status for status in seen if status["progress"]["chunk"] == 2)
    progress = middle["progress"]
    assert progress["steps"] == 24 and 0 <= progress["step"] <= 24 and progress["frames_total"] == 41
    assert 0 < progress["percent"] < 100 and progress["eta_seconds"] is not None
    assert progress["elapsed_seconds"] > 0 and middle["worker"] == "worker-0"
    assert middle["message"].startswith("rendering chunk 2/4")
    timing = middle["timing"]
    assert timing["estimate_seconds"] == done["estimate"]["seconds"]
    assert timing["expected_seconds"] >= timing["elapsed_seconds"] > 0
    assert done["timing"]["elapsed_seconds"] == done["outputs"]["seconds"]


def test_status_watch_refreshes_until_interrupted(tmp_path, models_dir):
    """`hotshot status --watch --json` prints a fresh JSON line every interval and exits 0 on Ctrl-C."""
    settings = settings_for(tmp_path, models_dir)
    Store.open(settings.database).close()
    watch = subprocess.Popen(
        [sys.executable, "-m", "daemon.cli", "status", "--watch", "--json", "--interval", "0.2",
         "--state", str(settings.state_dir)], cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # Ctrl-C works, as in a terminal
    try:
        lines = [watch.stdout.readline() for _ in range(3)]
        watch.send_signal(signal.SIGINT)
        code = watch.wait(30)
    finally:
        if watch.poll() is None:
            watch.kill()
        watch.stdout.close()
        watch.stderr.close()
    assert code == 0
    assert [json.loads(line)["daemon"] for line in lines] == [{"running": False, "pid": None, "paused": False}] * 3


def test_info_prints_the_render_info_of_a_job(tmp_path, models_dir, tiny_spec, capsys):
    """`hotshot info 1` finds the Render Info of the render job 1 made and prints it readably."""
    settings = settings_for(tmp_path, models_dir)
    shot = settings.roots[0] / "sh020"
    shot.mkdir()
    make_clip(shot / "plate.mov", frames=12, size="96x64")
    write_request(shot / "r.render.json", **QUICK)
    drain(settings)
    capsys.readouterr()
    assert main(["info", "1", "--state", str(settings.state_dir)]) == 0
    said = capsys.readouterr().out
    assert said.startswith("plate_r001  (plate_r001.mp4, 64x48, 12 frames at 25/1 fps)")
    assert "plate.mov → plate_r001.mp4" in said and "steps            1  (request)" in said
    assert main(["info", "7", "--state", str(settings.state_dir)]) == 2
    assert "there is no job 7" in capsys.readouterr().err


def test_job_bars_show_each_running_job():
    """The terminal display keeps one bar per running job, with its chunk and step, and drops it when it ends."""
    out = StringIO()
    bars = JobBars(Console(file=out, force_terminal=True, width=120))
    with bars:
        bars.update(1, "   1 sh010/r.render.json", {"percent": 40.0, "chunk": 2, "chunks": 4, "step": 3, "steps": 8,
                                                    "phase": "diffusing"})
        bars.update(2, "   2 sh020/r.render.json", {"percent": 5.0, "chunk": 1, "chunks": 4, "step": 1, "steps": 8,
                                                    "phase": "diffusing"})
        bars.bars.refresh()
        drawn = out.getvalue()
        bars.finish(1)
        assert [task.description for task in bars.bars.tasks] == ["   2 sh020/r.render.json"]
    assert "sh010/r.render.json" in drawn and "chunk 2/4 step 3/8" in drawn and "40%" in drawn


def test_run_on_a_terminal_shows_bars_and_readable_logs(tmp_path, media, models_dir, tiny_spec):
    """`hotshot run` with a terminal on stderr draws progress bars and console log lines, not JSON."""
    settings = settings_for(tmp_path, models_dir)
    shot = settings.roots[0] / "sh030"
    shot.mkdir()
    shutil.copyfile(media / "chaplin.mp4", shot / "plate.mp4")
    write_request(shot / "r.render.json", **SLOW)
    env = {**os.environ, "HOTSHOT_MODELS_DIR": str(models_dir), "HOTSHOT_CATALOGS": json.dumps([str(CATALOG)]),
           "HOTSHOT_STABLE_SECONDS": "0.3", "HOTSHOT_DEVICES": '["cpu"]', "HOTSHOT_LOG_FORMAT": "auto",
           "COLUMNS": "140", "TERM": "xterm"}
    leader, follower = pty.openpty()
    run = subprocess.Popen([sys.executable, "-m", "daemon.cli", "run", "--drain", "--root", str(settings.roots[0]),
                            "--state", str(settings.state_dir)], cwd=PROJECT, env=env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=follower)
    os.close(follower)
    screen = b""
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if ready:
                try:
                    screen += os.read(leader, 65536)
                except OSError:
                    break
            elif run.poll() is not None:
                break
        code = run.wait(30)
    finally:
        if run.poll() is None:
            run.kill()
        os.close(leader)
        run.stdout.close()
    text = screen.decode("utf-8", "replace")
    assert code == 0, text[-2000:]
    assert "sh030/r.render.json" in text and "chunk 2/4" in text and "━" in text
    assert "job done" in text and '{"event"' not in text


def test_notifications_for_done_failed_and_cancelled(tmp_path, models_dir, tiny_spec, receiver):  # noqa: F811
    """The root's webhook gets the status JSON of each job that ended (done, failed, cancelled) and its command
    gets the status file's path; a root without notify settings sends nothing."""
    other = tmp_path / "other"
    other.mkdir()
    record = "import sys, pathlib; p = pathlib.Path(sys.argv[1]); p.with_suffix('.seen').write_text(p.name)"
    settings = settings_for(tmp_path, models_dir, roots=[tmp_path / "root", other], notify=[
        {"root": str(tmp_path / "root"), "webhook": receiver.url, "command": [sys.executable, "-c", record]}])
    root = settings.roots[0]
    for name in ("good", "bad", "called-off"):
        (root / name).mkdir(parents=True)
        make_clip(root / name / "plate.mov", frames=8, size="96x64")
    make_clip(other / "plate.mov", frames=8, size="96x64")
    write_request(root / "good" / "r.render.json", **QUICK)
    write_request(root / "bad" / "r.render.json", colour="red", **QUICK)
    write_request(root / "called-off" / "r.render.json", cancel=True, **QUICK)
    write_request(other / "r.render.json", **QUICK)
    drain(settings)
    assert status_of(other / "r.render.json")["state"] == "done"
    bodies = sorted((json.loads(body) for _, _, body in receiver.requests), key=lambda body: body["state"])
    assert [(body["state"], body["request"]) for body in bodies] == [
        ("cancelled", "r.render.json"), ("done", "r.render.json"), ("failed", "r.render.json")]
    assert bodies[1]["outputs"]["video"] == "plate_r001.mp4" and "unknown field 'colour'" in bodies[2]["error"]
    assert {content_type for _, content_type, _ in receiver.requests} == {"application/json"}
    for name in ("good", "bad", "called-off"):
        assert (root / name / "r.render.status.seen").read_text() == "r.render.status.json"
    assert not (other / "r.render.status.seen").exists()
