"""Which videos of a shot are originals: the daemon, `hotshot estimate` and `hotshot prompt` share one rule."""

from __future__ import annotations

from daemon.cli.estimate import estimate_request
from daemon.cli.prompt import choose_source
from daemon.conventions import manifest_path
from daemon.store import Store
from tests.harness import settings_for, state_of, tick_until, ticked_daemon, write_request
from tests.helpers import make_clip


def test_daemon_estimate_and_prompt_choose_the_same_source_beside_an_unrecorded_render(tmp_path, models_dir):
    """A render a job wrote before the daemon recorded it (no Render Info beside it yet) is no original: the
    daemon, `hotshot estimate` and `hotshot prompt` all take the plate as the shot's only source."""
    settings = settings_for(tmp_path, models_dir, default_model="passthrough")
    shot = settings.roots[0] / "sh010"
    shot.mkdir()
    make_clip(shot / "plate.mp4", frames=12, size="96x64")
    render = shot / "plate_r001.mp4"
    store = Store.open(settings.database)
    shot_id = store.shot_id(shot, settings.roots[0])
    first = str(shot / "first.render.json")
    job = store.enqueue({"shot_id": shot_id, "path": first, "content_hash": "1", "raw": "{}"},
                        {"shot_id": shot_id, "request_path": first, "state": "queued"})
    store.claim_next("worker-0", now=0.0)
    store.record_render(job, {}, 1, str(render), str(manifest_path(render)))
    store.close()
    make_clip(render, frames=12, size="96x64", source="mandelbrot")  # written; the daemon stopped before recording it
    request = write_request(shot / "r.render.json", output_size=64)

    estimated = estimate_request(settings, request)
    prompted = choose_source(settings, shot, None)
    with ticked_daemon(settings) as daemon:
        tick_until(daemon, lambda: state_of(request) == "queued", what="the request to be queued")
        resolved = daemon.store.latest_job_for(str(request)).settings
    assert estimated["state"] == "queued", estimated
    assert estimated["settings"]["source"]["value"] == prompted.name == resolved["source"]["value"] == "plate.mp4"
