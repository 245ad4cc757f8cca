"""`hotshot status` at facility scale: bounded sections, counts from the database, pages and filters."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.cli import main
from daemon.store import Store
from tests.conftest import PROJECT

PRIORITIES = (0, 5, 0, 2, 5, 0, 0, 2, 0, 5, 0, 0)


def add(store: Store, shot: Path, root: Path, name: str, state: str = "queued", **job) -> int:
    """A job of a request `name` in `shot`, recorded as the daemon records one."""
    shot_id = store.shot_id(shot, root)
    path = str(shot / f"{name}.render.json")
    return store.enqueue({"shot_id": shot_id, "path": path, "content_hash": name, "size": 1, "mtime_ns": 1,
                          "raw": "{}"}, {"shot_id": shot_id, "request_path": path, "state": state, **job})


@pytest.fixture
def facility(tmp_path):
    """Four shots: sh010 with twelve queued jobs of mixed priority, of which the first two in line were
    claimed and one of them is done; sh020 with three jobs waiting for a window and two that failed in
    January; sh030 with a job cancelled a year ago; sh040 with eleven jobs cancelled in February."""
    root = tmp_path / "root"
    store = Store.open(tmp_path / "state" / "hotshot.db")
    for index, priority in enumerate(PRIORITIES):
        add(store, root / "sh010", root, f"q{index:02d}", priority=priority, full_clip=index % 2)
    store.claim_next("w0", now=1e10)
    store.finish(store.claim_next("w1", now=1e10).id, {"video": "plate_r001.mp4"}, {})
    for index in range(3):
        add(store, root / "sh020", root, f"w{index}", state="waiting", window="night", start_at=2e9 - index)
    for index in range(2):
        add(store, root / "sh020", root, f"f{index}", state="failed", error="bad request",
            finished_at=f"2026-01-0{index + 2}T00:00:00+00:00")
    add(store, root / "sh030", root, "old", state="cancelled", finished_at="2025-11-30T00:00:00+00:00")
    for index in range(11):
        add(store, root / "sh040", root, f"c{index:02d}", state="cancelled",
            finished_at=f"2026-02-{index + 10}T00:00:00+00:00")
    store.close()
    return tmp_path


def status(capsys, tmp_path: Path, *args: str) -> dict:
    capsys.readouterr()
    assert main(["status", "--json", "--state", str(tmp_path / "state"), *args]) == 0
    return json.loads(capsys.readouterr().out)


def reference(tmp_path: Path, sql: str) -> list:
    store = Store.open(tmp_path / "state" / "hotshot.db", read_only=True)
    try:
        return [tuple(row) if len(row) > 1 else row[0] for row in store.db.execute(sql).fetchall()]
    finally:
        store.close()


def ids(jobs: list[dict]) -> list[int]:
    return [job["job"] for job in jobs]


def test_the_summary_counts_what_the_database_holds_and_shows_bounded_sections(facility, capsys):
    """Counts by state come from the database; the queue shows the first --limit jobs in the order they start,
    recent ends are the newest ends, and only shots with active jobs or recent ends are listed."""
    data = status(capsys, facility, "--limit", "4")
    counted = dict(reference(facility, "SELECT state, COUNT(*) FROM jobs GROUP BY state"))
    assert data["totals"]["jobs"] == counted == {"waiting": 3, "queued": 10, "running": 1, "done": 1, "failed": 2,
                                                 "cancelled": 12}
    assert data["totals"]["in_line"] == 14 and sum(data["totals"]["archived"].values()) == 0
    store = Store.open(facility / "state" / "hotshot.db", read_only=True)
    in_order = [job.id for job in store.queue()]
    store.close()
    assert ids(data["queue"]) == in_order[:4]
    assert data["queue"][0]["state"] == "running" and data["queue"][1]["priority"] == 5
    newest_ends = reference(facility, "SELECT id FROM jobs WHERE finished_at IS NOT NULL "
                                      "ORDER BY finished_at DESC, id DESC LIMIT 10")
    assert ids(data["recent"]) == newest_ends and data["recent"][0]["state"] == "done"
    assert [shot["name"] for shot in data["shots"]] == ["root/sh010", "root/sh020", "root/sh040"]
    assert data["shots"][0]["active"] == {"waiting": 0, "queued": 10, "running": 1}
    assert data["totals"]["shots_with_activity"] == 3
    assert data["page"]["total"] == 29 and len(data["jobs"]) == 4 and data["page"]["next_offset"] == 4


def test_pages_of_a_state_follow_the_order_jobs_start_and_end(facility, capsys):
    """--jobs with --limit and --offset pages through one state in claim order (waiting ones by start time
    after the queued), and finished states newest end first, with the total and the next offset; `finished`
    stands for done, failed and cancelled."""
    queued = [job for job in reference(facility, "SELECT id FROM jobs WHERE state = 'queued' "
                                                 "ORDER BY priority DESC, full_clip, id")]
    data = status(capsys, facility, "--jobs", "queued", "--limit", "4", "--offset", "3")
    assert ids(data["jobs"]) == queued[3:7]
    assert (data["page"]["total"], data["page"]["offset"], data["page"]["next_offset"]) == (10, 3, 7)
    last = status(capsys, facility, "--jobs", "queued", "--limit", "4", "--offset", "8")
    assert ids(last["jobs"]) == queued[8:] and last["page"]["next_offset"] is None
    mixed = status(capsys, facility, "--jobs", "waiting", "--jobs", "queued", "--limit", "20")
    waiting = reference(facility, "SELECT id FROM jobs WHERE state = 'waiting' ORDER BY start_at")
    assert ids(mixed["jobs"]) == queued + waiting and mixed["page"]["total"] == 13
    assert status(capsys, facility, "--jobs", "finished")["page"]["total"] == 15
    ended = status(capsys, facility, "--jobs", "failed,cancelled", "--limit", "3")
    assert [job["finished"] for job in ended["jobs"]] == [f"2026-02-{day}T00:00:00+00:00" for day in (20, 19, 18)]
    assert ended["page"]["total"] == 14


def test_a_shot_filter_shows_that_shot_and_its_jobs(facility, capsys):
    """--shot names a shot as status prints it, by its folder under the root or by its path; its jobs are
    paged and its whole tree shown, even when it has no activity; an unknown shot is refused."""
    data = status(capsys, facility, "--shot", "root/sh020")
    assert data["page"]["total"] == 5 and {job["request"].split("/")[-2] for job in data["jobs"]} == {"sh020"}
    assert [shot["name"] for shot in data["shots"]] == ["root/sh020"]
    waiting = status(capsys, facility, "--shot", "sh020", "--jobs", "waiting")
    assert waiting["page"]["total"] == 3 and {job["state"] for job in waiting["jobs"]} == {"waiting"}
    quiet = status(capsys, facility, "--shot", str(facility / "root" / "sh030"))
    assert ids(quiet["jobs"]) == reference(facility, "SELECT id FROM jobs WHERE request_path LIKE '%/sh030/%'")
    assert main(["status", "--state", str(facility / "state"), "--shot", "sh999"]) == 2
    assert "there is no shot 'sh999'" in capsys.readouterr().err


def test_the_text_view_is_bounded_and_says_how_to_see_more(facility, capsys):
    """The person's view lists the first jobs in line and says how many more there are; a filtered view
    shows the page with its place in the whole."""
    capsys.readouterr()
    assert main(["status", "--state", str(facility / "state"), "--limit", "3"]) == 0
    text = capsys.readouterr().out
    assert "Jobs    3 waiting, 10 queued, 1 running; ended: 1 done, 2 failed, 12 cancelled; archived: 0" in text
    queue = text.split("Queue (in the order jobs start; first 3 of 14)\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert len(queue) == 4 and "… 11 more" in queue[3] and " running " in queue[0]
    assert "root/sh040" in text and "root/sh030" not in text
    assert main(["status", "--state", str(facility / "state"), "--jobs", "queued", "--limit", "2"]) == 0
    text = capsys.readouterr().out
    assert "Jobs (queued; 1-2 of 10, in the order jobs start)" in text and "the same with --offset 2" in text
    with pytest.raises(SystemExit):
        main(["status", "--state", str(facility / "state"), "--jobs", "finshed"])
    assert "'finshed' names no job state" in capsys.readouterr().err


def test_status_starts_without_the_daemons_heavy_imports(facility):
    """`hotshot status` (text and JSON) reads the database without importing what only the daemon needs:
    sqlite-utils with numpy, structlog with rich, APScheduler, torch."""
    probe = ("import sys\nfrom daemon.cli import main\ncode = main(sys.argv[1:])\n"
             "print('LOADED=' + ','.join(name for name in ('numpy', 'sqlite_utils', 'structlog', 'rich', "
             "'apscheduler', 'torch') if name in sys.modules))\nsys.exit(code)")
    for json_flag in ([], ["--json"]):
        done = subprocess.run([sys.executable, "-c", probe, "status", *json_flag, "--state",
                               str(facility / "state")], capture_output=True, text=True, cwd=PROJECT, timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout.rstrip().endswith("LOADED="), done.stdout[-200:]
