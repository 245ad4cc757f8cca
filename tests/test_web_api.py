"""The web workspace's API, through Starlette's test client against real folders, SQLite and ffmpeg."""

from __future__ import annotations

import io
import json
import shutil

import pytest
from PIL import Image
from starlette.testclient import TestClient

from daemon.cli.estimate import estimate_request
from daemon.errors import HotshotError
from daemon.store import Store
from daemon.web.app import create_app
from daemon.web.guard import allowed_hosts
from daemon.web.server import checked_bind
from tests.harness import settings_for, tick_until, ticked_daemon, write_request

ORIGIN = {"Origin": "http://testserver"}
TOKEN = "a-long-enough-secret-token"


@pytest.fixture
def shot(tmp_path, media, models_dir, tiny_spec):
    """A shot with the Chaplin clip and a queued range request, registered by a daemon that renders nothing."""
    settings = settings_for(tmp_path, models_dir)
    folder = settings.roots[0] / "show" / "sh010"
    folder.mkdir(parents=True)
    shutil.copy(media / "chaplin.mp4", folder / "plate.mp4")
    write_request(folder / "look.render.json", prompt="ink", frame_range=[4, 11], output_size=64, steps=1)
    with ticked_daemon(settings) as daemon:
        tick_until(daemon, lambda: daemon.store.jobs(("queued",)), what="the request to be queued")
    return settings, folder


def client_for(settings, token=None) -> TestClient:
    return TestClient(create_app(settings, allowed_hosts("127.0.0.1", ["testserver"]), token))


def test_shot_list_and_timeline_place_a_job_under_its_source_frames(shot):
    """The shot list counts sources and active jobs; the timeline puts the request's job under frames 4-11 of the
    source, with the state, estimate and message of its status file."""
    settings, folder = shot
    client = client_for(settings)
    shots = client.get("/api/shots").json()["shots"]
    assert [(s["name"], s["sources"], s["renders"], s["active"]) for s in shots] == [("root/show/sh010", 1, 0, 1)]
    assert client.get("/api/shots?q=nothing").json()["shots"] == []
    timeline = client.get(f"/api/shots/{shots[0]['id']}").json()
    tracks = timeline["groups"][0]["tracks"]
    source, job = tracks
    assert (source["name"], source["kind"], source["first"], source["last"]) == ("plate.mp4", "original", 0, 240)
    assert (job["kind"], job["depth"], job["first"], job["last"]) == ("job", 1, 4, 11)
    status = json.loads((folder / "look.render.status.json").read_text())
    assert job["job"]["state"] == status["state"] == "queued"
    assert job["job"]["estimate"] == status["estimate"]


def test_estimate_matches_hotshot_estimate_and_generate_writes_a_new_request(shot):
    """The page's cost is `hotshot estimate`'s for the same request; Generate writes that request into the shot
    atomically under a new name, never over an existing file."""
    settings, folder = shot
    client = client_for(settings)
    shot_id = client.get("/api/shots").json()["shots"][0]["id"]
    values = {"source": "plate.mp4", "frame_range": [8, 19], "prompt": "charcoal", "output_size": 64, "steps": 2}
    checked = client.post(f"/api/shots/{shot_id}/estimate", json=values, headers=ORIGIN).json()
    assert checked["ok"], checked
    reference = folder / ".reference.render.json"  # hidden: the daemon and the page ignore it
    reference.write_text(json.dumps(values))
    expected = estimate_request(settings, reference)
    assert checked["estimate"] == expected["estimate"]
    assert checked["estimate"]["frames"] == 12

    first = client.post(f"/api/shots/{shot_id}/generate", json=values, headers=ORIGIN).json()
    second = client.post(f"/api/shots/{shot_id}/generate", json=values, headers=ORIGIN).json()
    assert (first["written"], second["written"]) == ("plate-f8-19.render.json", "plate-f8-19-2.render.json")
    assert json.loads((folder / first["written"]).read_text()) == values
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")], "no temporary file is left behind"
    listed = client.get(f"/api/shots/{shot_id}").json()["submitted"]
    assert listed == ["plate-f8-19-2.render.json", "plate-f8-19.render.json"]


def test_bad_settings_are_refused_naming_their_field(shot):
    """A wrong value is refused by the request model with the request file's wording, and a setting the model
    does not expose by the resolver; each error is tied to its field and nothing is written."""
    settings, folder = shot
    client = client_for(settings)
    shot_id = client.get("/api/shots").json()["shots"][0]["id"]
    before = sorted(p.name for p in folder.iterdir())
    bad = client.post(f"/api/shots/{shot_id}/generate", headers=ORIGIN,
                      json={"source": "plate.mp4", "steps": 0, "context": {"overlap": "x"}})
    assert bad.status_code == 422
    errors = bad.json()["errors"]
    assert errors["steps"] == "steps: Input should be greater than or equal to 1 (got 0)"
    assert errors["context.overlap"].startswith("context.overlap: Input should be a valid integer")
    refused = client.post(f"/api/shots/{shot_id}/estimate", headers=ORIGIN,
                          json={"source": "plate.mp4", "model": "tiny-wan-v2v", "mask": "plate.mp4"}).json()
    assert list(refused["errors"]) == ["mask"] and "tiny-wan-v2v" in refused["errors"]["mask"]
    assert sorted(p.name for p in folder.iterdir()) == before


def test_settings_fields_follow_the_catalog_capabilities(shot):
    """Every request field is on the form (grouped Basic/Advanced/Context/scheduling), and each model lists the
    capabilities that decide which of them it shows."""
    from daemon.request import Context, RenderRequest

    settings, _ = shot
    form = client_for(settings).get("/api/form").json()
    names = {field["name"] for field in form["fields"]}
    expected = set(RenderRequest.model_fields) - {"preset", "model", "source", "frame_range", "cancel", "context"}
    assert names == expected | {f"context.{name}" for name in Context.model_fields}
    groups = {field["name"]: field["group"] for field in form["fields"]}
    assert (groups["prompt"], groups["steps"], groups["context.size"], groups["when"]) == \
        ("basic", "advanced", "context", "job")
    models = {model["id"]: model for model in form["models"]}
    assert models["tiny-wan-vace"]["capabilities"]["style_frame"] is True
    assert models["tiny-wan-v2v"]["capabilities"]["style_frame"] is False
    assert "style_frame" in form["capability_fields"] and form["needs"]["mask_grow"] == "mask"


def test_files_are_served_by_id_with_ranges_and_posters(shot):
    """A registered video is served by its database id and answers Range requests byte for byte; its poster strip
    is a JPEG of eight frames; an unknown id is not found."""
    settings, folder = shot
    client = client_for(settings)
    shot_id = client.get("/api/shots").json()["shots"][0]["id"]
    media_id = client.get(f"/api/shots/{shot_id}").json()["groups"][0]["tracks"][0]["media"]
    data = (folder / "plate.mp4").read_bytes()
    part = client.get(f"/files/media/{media_id}/video", headers={"Range": "bytes=100-299"})
    assert part.status_code == 206 and part.content == data[100:300]
    assert part.headers["content-range"] == f"bytes 100-299/{len(data)}"
    assert client.get(f"/files/media/{media_id + 99}/video").status_code == 404
    strip = client.get(f"/files/media/{media_id}/strip.jpg")
    image = Image.open(io.BytesIO(strip.content))
    assert image.format == "JPEG" and image.height == 54 and image.width >= 8 * 54
    assert list((settings.state_dir / "web" / "posters").glob(f"{media_id}-*.jpg"))


def test_host_token_and_origin_checks(shot):
    """A foreign Host header is refused (no DNS rebinding); a change without same origin is refused; with a token,
    nothing is served without it, `/?token=` sets a cookie that opens the page, and the Bearer header works for
    changes from scripts."""
    settings, _ = shot
    client = client_for(settings)
    assert client.get("/api/shots", headers={"Host": "evil.example"}).status_code == 421
    assert client.post("/api/daemon/pause").status_code == 403
    assert client.post("/api/daemon/pause", headers={"Origin": "http://evil.example"}).status_code == 403
    guarded = client_for(settings, TOKEN)
    assert guarded.get("/api/shots").status_code == 401
    assert guarded.get("/?token=wrong", follow_redirects=False).status_code == 401
    opened = guarded.get(f"/?token={TOKEN}", follow_redirects=False)
    assert opened.status_code == 303 and "samesite=strict" in opened.headers["set-cookie"].lower()
    assert guarded.get("/api/shots").status_code == 200  # the cookie now rides along
    scripted = client_for(settings, TOKEN)
    answer = scripted.post("/api/daemon/pause", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200 and "paused" in answer.json()["message"]


def test_binding_off_loopback_needs_a_token(tmp_path, models_dir):
    """`hotshot web --bind 0.0.0.0:…` refuses to start without a token, and starts with one."""
    settings = settings_for(tmp_path, models_dir)
    with pytest.raises(HotshotError, match="without a token"):
        checked_bind(settings, "0.0.0.0:8765")
    assert checked_bind(settings, "127.0.0.1:9000")[:2] == ("127.0.0.1", 9000)
    with_token = settings_for(tmp_path, models_dir, web_token=TOKEN)
    assert checked_bind(with_token, "0.0.0.0:8765") == ("0.0.0.0", 8765, TOKEN)


def test_uploads_are_checked_named_safely_and_never_overwrite(shot):
    """An uploaded PNG lands in the shot under a plain name with the extension of what it really is; an existing
    file is not replaced; text posing as an image and an image over the size limit are refused."""
    settings, folder = shot
    client = client_for(settings)
    shot_id = client.get("/api/shots").json()["shots"][0]["id"]
    buffer = io.BytesIO()
    Image.new("RGB", (32, 16), (200, 10, 10)).save(buffer, "PNG")
    png = buffer.getvalue()
    (folder / "painted.png").write_bytes(b"the editor's own file")
    answer = client.put(f"/api/shots/{shot_id}/upload?name=../../pain ted.jpg", content=png, headers=ORIGIN)
    assert answer.json() == {"written": "pain_ted.png"}
    assert Image.open(folder / "pain_ted.png").getpixel((0, 0)) == (200, 10, 10)
    again = client.put(f"/api/shots/{shot_id}/upload?name=painted.png", content=png, headers=ORIGIN).json()
    assert again == {"written": "painted-2.png"}
    assert (folder / "painted.png").read_bytes() == b"the editor's own file"
    fake = client.put(f"/api/shots/{shot_id}/upload?name=x.png", content=b"not an image", headers=ORIGIN)
    assert fake.status_code == 422 and "not a PNG, JPEG or TIFF" in fake.json()["error"]
    small = client_for(settings.model_copy(update={"web_upload_bytes": len(png) - 1}))
    assert small.put(f"/api/shots/{shot_id}/upload?name=x.png", content=png, headers=ORIGIN).status_code == 413


def test_cancel_and_retry_go_through_the_cli_commands(shot):
    """Cancel on a job's track cancels it as `hotshot cancel` does (status file included); Retry queues it again;
    a refused command says why."""
    settings, folder = shot
    client = client_for(settings)
    job_id = Store.open(settings.database, read_only=True).jobs()[0].id
    answer = client.post(f"/api/jobs/{job_id}/cancel", headers=ORIGIN)
    assert answer.status_code == 200 and f"cancelled job {job_id}" in answer.json()["message"]
    assert json.loads((folder / "look.render.status.json").read_text())["state"] == "cancelled"
    again = client.post(f"/api/jobs/{job_id}/cancel", headers=ORIGIN)
    assert again.status_code == 409 and "only those can be cancelled" in again.json()["error"]
    assert client.post(f"/api/jobs/{job_id}/retry", headers=ORIGIN).status_code == 200
    assert json.loads((folder / "look.render.status.json").read_text())["state"] == "queued"


@pytest.mark.slow
def test_auto_prompt_runs_hotshot_prompt_in_a_child_process(shot):
    """Auto Prompt from the page runs `hotshot prompt` in another process and returns its suggestion, which is
    also the `<source>.prompt.txt` that command writes; a source that is not a video of the shot is refused."""
    import time

    settings, folder = shot
    client = client_for(settings)
    shot_id = client.get("/api/shots").json()["shots"][0]["id"]
    refused = client.post(f"/api/shots/{shot_id}/prompt", json={"source": "../x.mp4"}, headers=ORIGIN)
    assert refused.status_code == 422
    task = client.post(f"/api/shots/{shot_id}/prompt", json={"source": "plate.mp4", "frame_range": [0, 23]},
                       headers=ORIGIN).json()
    deadline = time.monotonic() + 300
    while task["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.5)
        task = client.get(f"/api/prompt/{task['id']}").json()
    assert task["state"] == "done", task
    assert task["prompt"] and task["prompt"] == (folder / "plate.prompt.txt").read_text().strip()
