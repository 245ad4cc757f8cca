"""Job-end notifications against a real HTTP receiver and real commands, with recorded (not real) retry waits."""

from __future__ import annotations

import json
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from daemon.notify import NotificationQueue, Notifier, NotifySpec

STATUS = {"job": 7, "state": "done", "shot": "sh010", "outputs": ["render/sh010_v001.mp4"], "progress": 1.0}


@dataclass
class Receiver:
    """A webhook endpoint on 127.0.0.1 that answers with `answers` in turn (then 200) and keeps what it got."""

    url: str = ""
    answers: list[int] = field(default_factory=list)
    requests: list[tuple[str, str, bytes]] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    got = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.requests.append((self.path, self.headers["Content-Type"], body))
            self.send_response(got.answers.pop(0) if got.answers else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass  # keep test output clean

    server = HTTPServer(("127.0.0.1", 0), Handler)
    # A short poll interval so shutdown() at the end of each test returns at once.
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), name="test-webhook", daemon=True)
    thread.start()
    got.url = f"http://127.0.0.1:{server.server_port}/hook"
    yield got
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def dead_url() -> str:
    """A URL on a port nobody listens on, so connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


class Waits:
    """A stand-in for time.sleep that records each wait instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def status_path(tmp_path) -> Path:
    path = tmp_path / "sh010.status.json"
    path.write_text(json.dumps(STATUS))
    return path


def test_webhook_receives_the_status_json(receiver, status_path):
    """The webhook gets one POST whose JSON body is the job's status, typed application/json."""
    result = Notifier(NotifySpec(webhook=receiver.url)).notify("done", status_path, STATUS)
    assert (result.attempts, result.http_status, result.error) == (1, 200, None)
    [(path, content_type, body)] = receiver.requests
    assert (path, content_type) == ("/hook", "application/json")
    assert json.loads(body) == STATUS


def test_server_errors_are_retried_with_doubling_waits(receiver, status_path):
    """Two 500s then a 200 take three attempts, waiting backoff, then twice backoff."""
    receiver.answers = [500, 500]
    waits = Waits()
    notifier = Notifier(NotifySpec(webhook=receiver.url, backoff_seconds=0.5), sleep=waits)
    result = notifier.notify("failed", status_path, STATUS)
    assert (result.attempts, result.http_status, result.error) == (3, 200, None)
    assert waits.delays == [0.5, 1.0]
    assert len(receiver.requests) == 3


def test_client_errors_are_not_retried(receiver, status_path):
    """A 404 is reported after one attempt: sending the same request again cannot help."""
    receiver.answers = [404]
    waits = Waits()
    result = Notifier(NotifySpec(webhook=receiver.url), sleep=waits).notify("done", status_path, STATUS)
    assert (result.attempts, result.http_status) == (1, 404)
    assert result.error == f"webhook {receiver.url} answered HTTP 404 after 1 attempt"
    assert waits.delays == [] and len(receiver.requests) == 1


def test_an_unreachable_webhook_gives_up_after_its_retries(dead_url, status_path):
    """Connection refused is retried `retries` times with doubling waits, then reported, not raised."""
    waits = Waits()
    notifier = Notifier(NotifySpec(webhook=dead_url, retries=3), sleep=waits)
    with capture_logs() as logs:
        result = notifier.notify("done", status_path, STATUS)
    assert result.attempts == 4 and result.http_status is None
    assert result.error.startswith(f"webhook {dead_url} unreachable: ")
    assert result.error.endswith("after 4 attempts")
    assert waits.delays == [1.0, 2.0, 4.0]
    assert logs[-1]["event"] == "notification failed" and logs[-1]["error"] == result.error


def test_an_injected_post_replaces_http(status_path):
    """`post` is called with the URL, the JSON body and the timeout, and its status is used."""
    calls = []

    def post(url: str, body: bytes, timeout: float) -> int:
        calls.append((url, json.loads(body), timeout))
        return 204

    notifier = Notifier(NotifySpec(webhook="https://hooks.example/x", timeout_seconds=2.5), post=post)
    assert notifier.notify("done", status_path, STATUS).http_status == 204
    assert calls == [("https://hooks.example/x", STATUS, 2.5)]


def test_command_gets_the_status_file_path(status_path):
    """The command runs without a shell, with the status file's path as its last argument."""
    script = "import sys, pathlib; pathlib.Path(sys.argv[1] + '.seen').write_text('ok')"
    result = Notifier(NotifySpec(command=[sys.executable, "-c", script])).notify("cancelled", status_path, STATUS)
    assert (result.exit_code, result.error) == (0, None)
    assert Path(f"{status_path}.seen").read_text() == "ok"


def test_a_failing_command_is_reported(status_path):
    """A command that exits 3 is reported with its exit code and what it said, not raised."""
    script = "import sys; sys.stderr.write('no display'); sys.exit(3)"
    result = Notifier(NotifySpec(command=[sys.executable, "-c", script])).notify("done", status_path, STATUS)
    assert result.exit_code == 3
    assert result.error == f"command {sys.executable} exited with 3: no display"


def test_a_missing_command_is_reported(tmp_path, status_path):
    """A command that cannot be started is reported, not raised."""
    result = Notifier(NotifySpec(command=[str(tmp_path / "no-such-tool")])).notify("done", status_path, STATUS)
    assert result.exit_code is None
    assert result.error.startswith(f"command {tmp_path / 'no-such-tool'} could not be run")


def test_a_slow_command_is_killed_at_the_timeout(status_path):
    """A command still running at timeout_seconds is killed and reported."""
    spec = NotifySpec(command=[sys.executable, "-c", "import time; time.sleep(60)"], timeout_seconds=0.2)
    result = Notifier(spec).notify("done", status_path, STATUS)
    assert result.exit_code is None
    assert "did not finish within 0.2s and was killed" in result.error


def test_webhook_and_command_both_run(receiver, status_path):
    """With both configured, the command still runs when the webhook fails, and both problems are reported."""
    receiver.answers = [400]
    spec = NotifySpec(webhook=receiver.url, command=[sys.executable, "-c", "raise SystemExit(1)"])
    result = Notifier(spec).notify("done", status_path, STATUS)
    assert (result.http_status, result.exit_code) == (400, 1)
    assert "HTTP 400" in result.error and "exited with 1" in result.error


def test_states_not_asked_for_send_nothing(receiver, status_path):
    """A job ending in a state missing from `on` sends no request and runs no command."""
    script = "import sys, pathlib; pathlib.Path(sys.argv[1] + '.seen').write_text('ok')"
    spec = NotifySpec(webhook=receiver.url, command=[sys.executable, "-c", script], on=["failed"])
    result = Notifier(spec).notify("done", status_path, STATUS)
    assert (result.attempts, result.http_status, result.exit_code, result.error) == (0, None, None, None)
    assert receiver.requests == [] and not Path(f"{status_path}.seen").exists()


def test_success_is_logged(receiver, status_path):
    """A sent notification is logged as "notified" with its state and HTTP status."""
    with capture_logs() as logs:
        Notifier(NotifySpec(webhook=receiver.url)).notify("done", status_path, STATUS)
    assert [(entry["event"], entry["state"], entry["http_status"]) for entry in logs] == [("notified", "done", 200)]


@pytest.mark.parametrize("webhook", ["ftp://files.example/hook", "127.0.0.1:9000/hook", "http://", "http://h:port/x"])
def test_webhooks_must_be_http(webhook):
    """Anything but an http(s) URL with a host is refused with a message naming it."""
    with pytest.raises(ValidationError) as caught:
        NotifySpec(webhook=webhook)
    assert f"webhook {webhook!r} must be an http:// or https:// URL" in str(caught.value)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "notify needs a webhook, a command or both"),
        ({"command": []}, "command"),
        ({"command": ["true"], "on": ["finished"]}, "'done', 'failed' or 'cancelled'"),
        ({"command": ["true"], "retries": -1}, "greater than or equal to 0"),
        ({"command": ["true"], "timeout_seconds": 0}, "greater than 0"),
        ({"command": ["true"], "url": "http://x"}, "Extra inputs are not permitted"),
    ],
)
def test_other_settings_are_checked(fields, message):
    """Missing targets, unknown states, negative retries and unknown keys are refused."""
    with pytest.raises(ValidationError, match=message):
        NotifySpec(**fields)


def test_queue_sends_in_the_background_and_stop_joins(receiver, status_path):
    """Queued notifications are sent on the "hotshot-notify" thread; stop() sends what was queued, then joins."""
    notifications = NotificationQueue()
    notifications.start()
    notifier = Notifier(NotifySpec(webhook=receiver.url), sleep=notifications.wait)
    for state in ("done", "failed"):
        notifications.submit(notifier, state, status_path, {**STATUS, "state": state})
    notifications.stop()
    assert [json.loads(body)["state"] for _, _, body in receiver.requests] == ["done", "failed"]
    assert "hotshot-notify" not in [thread.name for thread in threading.enumerate()]


def test_stop_cuts_retry_waits_short(dead_url, status_path):
    """stop() does not wait out a retry back-off: the remaining retries are dropped and reported."""
    notifications = NotificationQueue()
    notifications.start()
    notifier = Notifier(NotifySpec(webhook=dead_url, backoff_seconds=3600), sleep=notifications.wait)
    with capture_logs() as logs:
        notifications.submit(notifier, "done", status_path, STATUS)
        notifications.stop(timeout=30)
    assert "hotshot-notify" not in [thread.name for thread in threading.enumerate()]
    [failed] = [entry for entry in logs if entry["event"] == "notification failed"]
    assert failed["attempts"] == 1 and "retries dropped as the daemon stops" in failed["error"]


def test_submissions_after_stop_are_dropped(receiver, status_path):
    """Once stopping, the queue logs and drops new notifications instead of sending them."""
    notifications = NotificationQueue()
    notifications.start()
    notifications.stop()
    with capture_logs() as logs:
        notifications.submit(Notifier(NotifySpec(webhook=receiver.url)), "done", status_path, STATUS)
    assert receiver.requests == []
    assert logs[0]["event"] == "notification dropped: the daemon is stopping"
