"""The daemon's messages: a message no receiver knows is logged as an error and counted, never dropped silently."""

from __future__ import annotations

from structlog.testing import capture_logs

from daemon.messages import FromWorker, Reconcile
from tests.harness import settings_for, ticked_daemon


def test_an_unknown_message_on_the_inbox_or_from_a_worker_is_logged_and_counted(tmp_path, models_dir):
    """The loop handles the messages it knows (a reconcile request) and, for one it has no case for (on the
    inbox, or a worker's report of an unknown kind), logs an error naming it and counts it."""
    settings = settings_for(tmp_path, models_dir)
    with ticked_daemon(settings) as daemon, capture_logs() as logs:
        daemon.inbox.put(Reconcile())
        daemon.inbox.put(("hint", "file", tmp_path))  # the tuple the inbox carried before it had types
        daemon.inbox.put(FromWorker("worker-0", {"type": "progress", "job": 1}))
        daemon.tick()
        unknown = daemon.unknown_messages.count
    errors = [entry for entry in logs if entry["event"] == "unknown message"]
    assert unknown == 2
    assert [entry["receiver"] for entry in errors] == ["daemon", "jobs"]
    assert all(entry["log_level"] == "error" for entry in errors)
