"""Stable-file detection with an injected clock: no sleeping, no early ingest."""

from __future__ import annotations

import os

from daemon.stability import StabilityTracker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_file_is_stable_only_after_a_quiet_period(tmp_path):
    clock = Clock()
    tracker = StabilityTracker(2.0, clock)
    path = tmp_path / "plate.mov"
    path.write_bytes(b"a" * 10)
    tracker.observe(path)
    for _ in range(10):
        clock.now += 1.5
        with open(path, "ab") as handle:
            handle.write(b"b")
        assert tracker.poll() == []
    clock.now += 1.0
    assert tracker.poll() == []
    clock.now += 1.0
    ready = tracker.poll()
    assert [(item.path, item.size) for item in ready] == [(path, 20)]
    assert len(tracker) == 0


def test_touching_restarts_the_quiet_period(tmp_path):
    """A touch whose event says so restarts the quiet period at once."""
    clock = Clock()
    tracker = StabilityTracker(2.0, clock)
    path = tmp_path / "r.render.json"
    path.write_text("{}")
    tracker.observe(path)
    clock.now += 1.9
    os.utime(path, ns=(1, 1))
    tracker.observe(path)
    assert tracker.poll() == []
    clock.now += 1.9
    assert tracker.poll() == []
    clock.now += 0.2
    assert len(tracker.poll()) == 1


def test_a_touch_without_an_event_restarts_the_quiet_period_when_seen(tmp_path):
    """A change no event announced (a lost event) is seen when the quiet period would end, and restarts it
    from then: the file is never reported stable early."""
    clock = Clock()
    tracker = StabilityTracker(2.0, clock)
    path = tmp_path / "r.render.json"
    path.write_text("{}")
    tracker.observe(path)
    clock.now += 1.9
    os.utime(path, ns=(1, 1))
    clock.now += 0.2
    assert tracker.poll() == []
    clock.now += 1.9
    assert tracker.poll() == []
    clock.now += 0.1
    assert [item.mtime_ns for item in tracker.poll()] == [1]


def test_a_poll_looks_only_at_files_whose_quiet_period_is_over(tmp_path):
    """Of a thousand files dropped one after another, a poll stats only those due, and returns them in the
    order they arrived."""
    clock = Clock()
    looked: list = []

    def stat(path):
        looked.append(path)
        return os.stat(path)

    tracker = StabilityTracker(2.0, clock, stat)
    paths = []
    for index in range(1000):
        paths.append(tmp_path / f"r{index:04d}.render.json")
        paths[-1].write_text("{}")
        tracker.observe(paths[-1])
        clock.now += 0.001
    looked.clear()
    clock.now += 1.5  # 2.5 s after the first: the first half is due
    ready = tracker.poll()
    assert [item.path for item in ready] == paths[:len(ready)] and 490 <= len(ready) <= 510
    assert looked == [item.path for item in ready]
    clock.now += 1.0
    assert [item.path for item in tracker.poll()] == paths[len(ready):] and len(tracker) == 0


def test_vanished_files_are_forgotten(tmp_path):
    clock = Clock()
    tracker = StabilityTracker(0.0, clock)
    path = tmp_path / "a.mp4"
    path.write_bytes(b"x")
    tracker.observe(path)
    path.unlink()
    assert tracker.poll() == [] and len(tracker) == 0


def test_repeated_events_do_not_restart_an_unchanged_file(tmp_path):
    """An event storm on a file that does not change does not postpone it."""
    clock = Clock()
    tracker = StabilityTracker(2.0, clock)
    path = tmp_path / "a.mp4"
    path.write_bytes(b"x")
    tracker.observe(path)
    for _ in range(1000):
        clock.now += 0.001
        tracker.observe(path)
    clock.now += 1.01
    assert len(tracker.poll()) == 1
