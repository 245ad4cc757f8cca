"""The web workspace's routes: the page, its JSON API, and files served by database id.

Every read opens the state database read-only; the only writes are a new
`*.render.json` or an uploaded still in a shot folder (as an editor would add
them) and the CLI's own commands (cancel, retry, pause, resume).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from daemon.config import Settings
from daemon.control import COMMANDS, run_command
from daemon.conventions import root_of
from daemon.errors import HotshotError
from daemon.pidfile import daemon_pid
from daemon.store import Store
from daemon.web import queries
from daemon.web.forms import check_request, form_schema, request_name, write_new
from daemon.web.guard import Guard
from daemon.web.media import poster_strip, save_upload
from daemon.web.prompts import PromptRunner

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))


def create_app(settings: Settings, hosts: set[str], token: str | None, config: Path | None = None) -> Starlette:
    """The ASGI application for `settings`, answering to `hosts`, asking for `token` when one is given."""
    prompts = PromptRunner(settings, config)
    thumbs = settings.state_dir / "web" / "posters"

    def store() -> Store | None:
        return Store.open(settings.database, read_only=True) if settings.database.exists() else None

    def page(request: Request) -> Response:
        return templates.TemplateResponse(request, "index.html", {"roots": [str(r) for r in settings.roots]})

    def api_shots(request: Request) -> Response:
        db = store()
        if db is None:
            return JSONResponse({"shots": [], "daemon": {"running": False, "pid": None, "paused": False}})
        try:
            shots = queries.shot_list(db)
            text = request.query_params.get("q", "").strip().lower()
            if text:
                shots = [shot for shot in shots if text in shot["name"].lower()]
            return JSONResponse({"shots": shots, "daemon": queries.daemon_state(db, daemon_pid(settings.state_dir))})
        finally:
            db.close()

    def api_shot(request: Request) -> Response:
        db = store()
        if db is None:
            return _error("there is no state database yet; start the daemon with `hotshot run`", 404)
        try:
            data = queries.timeline(db, request.path_params["shot"])
            if data is None:
                return _error(f"there is no shot {request.path_params['shot']}", 404)
            data["daemon"] = queries.daemon_state(db, daemon_pid(settings.state_dir))
            return JSONResponse(data)
        finally:
            db.close()

    def shot_folder(shot_id: int) -> Path | None:
        db = store()
        if db is None:
            return None
        try:
            shot = db.shot(shot_id)
        finally:
            db.close()
        if shot is None:
            return None
        folder = Path(shot["path"])
        return folder if root_of(folder, settings.roots) and folder.is_dir() else None

    def api_form(request: Request) -> Response:
        try:
            return JSONResponse(form_schema(settings))
        except HotshotError as exc:
            return _error(str(exc), 500)

    async def api_estimate(request: Request) -> Response:
        folder, values = await _request_values(request, shot_folder)
        if folder is None:
            return _error("no such shot", 404)
        return JSONResponse(await run_in_threadpool(check_request, settings, folder, values))

    async def api_generate(request: Request) -> Response:
        folder, values = await _request_values(request, shot_folder)
        if folder is None:
            return _error("no such shot", 404)
        checked = await run_in_threadpool(check_request, settings, folder, values)
        if not checked["ok"]:
            return JSONResponse(checked, status_code=422)
        text = json.dumps(checked["request"], indent=2) + "\n"
        try:
            name = await run_in_threadpool(write_new, folder, request_name(checked["request"]), text.encode())
        except (OSError, HotshotError) as exc:
            return _error(f"cannot write the request into {folder}: {exc}", 500)
        return JSONResponse({**checked, "written": name})

    async def api_upload(request: Request) -> Response:
        folder = await run_in_threadpool(shot_folder, request.path_params["shot"])
        if folder is None:
            return _error("no such shot", 404)
        limit = settings.web_upload_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            return _error(f"the image is {declared} bytes, over the limit of {limit} bytes (web_upload_bytes)", 413)
        data = bytearray()
        async for part in request.stream():
            data += part
            if len(data) > limit:
                return _error(f"the image is over the limit of {limit} bytes (web_upload_bytes)", 413)
        try:
            name = await run_in_threadpool(save_upload, folder, request.query_params.get("name", "upload"),
                                           bytes(data), limit)
        except HotshotError as exc:
            return _error(str(exc), 422)
        return JSONResponse({"written": name})

    async def api_prompt(request: Request) -> Response:
        folder, values = await _request_values(request, shot_folder)
        if folder is None:
            return _error("no such shot", 404)
        contents = await run_in_threadpool(shot_contents, request.path_params["shot"])
        source, reference = values.get("source"), values.get("reference")
        # Only a registered video and a still of this shot, by name: nothing else reaches the child's command line.
        if source not in contents["videos"]:
            return _error(f"choose a video of the shot as the source (got {source!r})", 422)
        if reference is not None and reference not in contents["images"]:
            return _error(f"the reference image {reference!r} is not a still of the shot", 422)
        span = values.get("frame_range")
        if span is not None and not (isinstance(span, list) and len(span) == 2 and all(type(n) is int for n in span)):
            return _error(f"frame_range must be [first, last] (got {span!r})", 422)
        task = prompts.start(folder, source, tuple(span) if span else None, reference)
        return JSONResponse(task.to_dict())

    def shot_contents(shot_id: int) -> dict:
        db = store()
        if db is None:
            return {"videos": [], "images": []}
        try:
            return queries.timeline(db, shot_id) or {"videos": [], "images": []}
        finally:
            db.close()

    def api_prompt_task(request: Request) -> Response:
        task = prompts.get(request.path_params["task"])
        return JSONResponse(task.to_dict()) if task else _error("no such Auto Prompt task", 404)

    def api_command(request: Request) -> Response:
        command = request.path_params["command"]
        job = request.path_params.get("job")
        if command not in COMMANDS or (job is None) != (command in ("pause", "resume")):
            return _error(f"unknown command {command!r}", 404)
        try:
            outcome = run_command(settings, command, None if job is None else str(job), answer_seconds=10.0)
        except HotshotError as exc:
            return _error(str(exc), 409)
        return JSONResponse({"message": outcome.message})

    def api_render_info(request: Request) -> Response:
        path = _located(store, lambda db: queries.manifest_file(db, request.path_params["job"], settings.roots))
        if path is None:
            return _error("this job has no Render Info (yet)", 404)
        try:
            return JSONResponse(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            return _error(f"the Render Info cannot be read: {exc}", 500)

    def file_render_info(request: Request) -> Response:
        path = _located(store, lambda db: queries.manifest_file(db, request.path_params["job"], settings.roots))
        return FileResponse(path, media_type="application/json") if path else _error("not found", 404)

    def file_video(request: Request) -> Response:
        path = _located(store, lambda db: queries.media_file(db, request.path_params["media"], settings.roots))
        if path is None:
            return _error("not found", 404)
        return FileResponse(path, media_type=_video_type(path), headers={"Cache-Control": "no-cache"})

    def file_strip(request: Request) -> Response:
        media_id = request.path_params["media"]
        db = store()
        if db is None:
            return _error("not found", 404)
        try:
            path = queries.media_file(db, media_id, settings.roots)
            probe = (db.media(media_id) or {}).get("probe") or {}
        finally:
            db.close()
        if path is None:
            return _error("not found", 404)
        try:
            tiles = request.query_params.get("tiles", "8")
            poster = poster_strip(path, media_id, probe.get("frame_count"), thumbs,
                                  int(tiles) if tiles.isdigit() else 8, colour=probe.get("colour"))
        except (HotshotError, OSError) as exc:
            return _error(str(exc), 500)
        return FileResponse(poster, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    routes = [
        Route("/", page),
        Route("/api/shots", api_shots),
        Route("/api/shots/{shot:int}", api_shot),
        Route("/api/form", api_form),
        Route("/api/shots/{shot:int}/estimate", api_estimate, methods=["POST"]),
        Route("/api/shots/{shot:int}/generate", api_generate, methods=["POST"]),
        Route("/api/shots/{shot:int}/upload", api_upload, methods=["PUT"]),
        Route("/api/shots/{shot:int}/prompt", api_prompt, methods=["POST"]),
        Route("/api/prompt/{task:int}", api_prompt_task),
        Route("/api/jobs/{job:int}/render-info", api_render_info),
        Route("/api/jobs/{job:int}/{command:str}", api_command, methods=["POST"]),
        Route("/api/daemon/{command:str}", api_command, methods=["POST"]),
        Route("/files/media/{media:int}/video", file_video),
        Route("/files/media/{media:int}/strip.jpg", file_strip),
        Route("/files/jobs/{job:int}/render-info.json", file_render_info),
        Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        prompts.close()

    app = Starlette(routes=routes, lifespan=lifespan)
    return Guard(app, hosts, token)


async def _request_values(request: Request, shot_folder) -> tuple[Path | None, dict]:
    folder = await run_in_threadpool(shot_folder, request.path_params["shot"])
    try:
        body = json.loads(await request.body() or b"{}")
    except json.JSONDecodeError:
        body = {}
    return folder, body if isinstance(body, dict) else {}


def _located(store, find) -> Path | None:
    db = store()
    if db is None:
        return None
    try:
        return find(db)
    finally:
        db.close()


def _video_type(path: Path) -> str:
    return {".mp4": "video/mp4", ".mov": "video/quicktime", ".webm": "video/webm", ".mkv": "video/x-matroska"
            }.get(path.suffix.lower(), "application/octet-stream")


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)
