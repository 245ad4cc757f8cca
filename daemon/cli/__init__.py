"""The `hotshot` command line; the modules beside this one serve only its commands.

Commands that do not render (status, info, estimate, presets, models list, cancel, retry, pause,
resume, web) never import torch or diffusers, so they answer at once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import time
from pathlib import Path

from daemon.config import Settings, load_settings
from daemon.errors import HotshotError
from daemon.states import JobState


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return args.handler(args)
    except HotshotError as exc:
        print(f"hotshot: {exc}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, help="settings file (default config/hotshot.toml)")
    common.add_argument("--state", type=Path, dest="state_dir", help="folder for the database and work files")

    parser = argparse.ArgumentParser(prog="hotshot", description="AI video-to-video render daemon for shot folders")
    commands = parser.add_subparsers(metavar="command")

    run = commands.add_parser("run", parents=[common], help="watch the roots and render requests")
    run.add_argument("--root", type=Path, action="append", dest="roots", help="watch root (repeatable)")
    run.add_argument("--drain", action="store_true",
                     help="process everything present, wait for files still being written, then exit")
    run.set_defaults(handler=cmd_run)

    status = commands.add_parser("status", parents=[common],
                                 help="the daemon, job counts, the queue, recent ends and shots with activity; "
                                      "pages of jobs by state or shot")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--watch", action="store_true", help="refresh until Ctrl-C (with --json: one line each)")
    status.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes (default 2)")
    status.add_argument("--shot", action="append", help="one shot's jobs and its whole tree (as status names it, "
                                                        "its folder relative to the root, or its path); repeatable")
    status.add_argument("--jobs", action="append", type=_states, dest="states", metavar="STATE",
                        help="jobs in these states (comma-separated or repeated: waiting, queued, running, done, "
                             "failed, cancelled; active or finished for three of them); --state is the state folder")
    status.add_argument("--archived", action="store_true", help="list archived jobs (see archive_after_days)")
    status.add_argument("--limit", type=_count(1), default=20, help="jobs in line and on a page (default 20)")
    status.add_argument("--offset", type=_count(0), default=0, help="skip this many jobs of the list (paging)")
    status.set_defaults(handler=cmd_status)

    info = commands.add_parser("info", parents=[common], help="print the Render Info of a render")
    info.add_argument("render", help="a render's MP4, its .render-info.json, or the job number that made it")
    info.set_defaults(handler=cmd_info)

    estimate = commands.add_parser("estimate", parents=[common], help="cost estimate of a request, without queuing it")
    estimate.add_argument("request", type=Path, help="a *.render.json file in a shot folder")
    estimate.add_argument("--json", action="store_true", help="machine-readable output")
    estimate.set_defaults(handler=cmd_estimate)

    prompt = commands.add_parser("prompt", parents=[common],
                                 help="suggest a prompt for a shot (Auto Prompt) and write it to <source>.prompt.txt")
    prompt.add_argument("shot", type=Path, help="a shot folder")
    prompt.add_argument("--source", help="the video to describe (default: the shot's only source)")
    prompt.add_argument("--reference", type=Path, help="a reference or style image to describe too")
    prompt.add_argument("--range", type=int, nargs=2, metavar=("FIRST", "LAST"), help="frames to sample from")
    prompt.add_argument("--device", default="auto", help="auto (default), cpu, cuda:0, ...")
    prompt.set_defaults(handler=cmd_prompt)

    frame = commands.add_parser("frame", parents=[common],
                                help="write frame N of a video as PNG (or EXR), to edit and use as a style frame")
    frame.add_argument("source", type=Path, help="a video")
    frame.add_argument("number", type=int, help="the frame, counting from 0 like frame_range")
    frame.add_argument("--exr", action="store_true", help="scene-linear half-float EXR instead of 8-bit PNG")
    frame.add_argument("-o", "--output", type=Path,
                       help="a folder (default: the video's) or a .png/.exr file name; in a folder the file is "
                            "named like image sequences, <stem>.<first_frame_number + N>.<ext>")
    frame.set_defaults(handler=cmd_frame)

    web = commands.add_parser("web", parents=[common], help="serve the Render Video workspace in a browser")
    web.add_argument("--bind", help="HOST:PORT to listen on (default: the web_bind setting, 127.0.0.1:8765)")
    web.set_defaults(handler=cmd_web)

    presets = commands.add_parser("presets", parents=[common], help="the presets a request can name")
    presets.set_defaults(handler=cmd_presets)
    cancel = commands.add_parser("cancel", parents=[common], help="cancel a job, or the active jobs of a request")
    cancel.add_argument("target", help="a job number, or a request file (*.render.json)")
    cancel.set_defaults(handler=cmd_control, command="cancel")
    retry = commands.add_parser("retry", parents=[common],
                                help="queue a failed or cancelled job again; it resumes from its checkpoints")
    retry.add_argument("target", help="a job number, or a request file (its newest job)")
    retry.set_defaults(handler=cmd_control, command="retry")
    pause = commands.add_parser("pause", parents=[common], help="stop starting new jobs; running jobs finish")
    pause.set_defaults(handler=cmd_control, command="pause", target=None)
    resume = commands.add_parser("resume", parents=[common], help="start claiming jobs again after a pause")
    resume.set_defaults(handler=cmd_control, command="resume", target=None)

    models = commands.add_parser("models", help="the model catalog")
    model_commands = models.add_subparsers(metavar="action")
    listing = model_commands.add_parser("list", parents=[common],
                                        help="catalog entries and whether weights are present")
    listing.set_defaults(handler=cmd_models_list)
    check = model_commands.add_parser("check", parents=[common], help="load a model and render a 2-frame smoke test")
    check.add_argument("id", help="catalog id")
    check.add_argument("--device", default="auto", help="auto (default), cpu, cuda:0, ...")
    check.set_defaults(handler=cmd_models_check)
    tiny = model_commands.add_parser("make-tiny", parents=[common], help="build the tiny test models offline")
    tiny.add_argument("ids", nargs="*", help="tiny model ids (default: every tiny model in the catalog)")
    tiny.add_argument("--force", action="store_true", help="rebuild even if present")
    tiny.set_defaults(handler=cmd_models_make_tiny)
    random = model_commands.add_parser("make-random", parents=[common],
                                       help="build a full-size model with random weights (several GB)")
    random.add_argument("id", help="a catalog id with `random_weights = true`, e.g. wan-vace-1_3b-random")
    random.add_argument("--force", action="store_true", help="rebuild even if present")
    random.set_defaults(handler=cmd_models_make_random)
    return parser


def _states(text: str) -> list[JobState]:
    """Job states, comma-separated; `active` and `finished` stand for their three states."""
    from daemon.states import ACTIVE_STATES, FINISHED_STATES

    groups = {"active": ACTIVE_STATES, "finished": FINISHED_STATES}
    words = [word.strip() for word in text.split(",") if word.strip()]
    try:
        return [state for word in words for state in (groups[word] if word in groups else (JobState(word),))]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} names no job state; states: "
                                         f"{', '.join(state.value for state in JobState)}, or active, finished"
                                         ) from None


def _count(least: int):
    def parse(text: str) -> int:
        if not text.isdigit() or int(text) < least:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least {least}")
        return int(text)
    return parse


def settings_from(args: argparse.Namespace) -> Settings:
    return load_settings(args.config, state_dir=args.state_dir, roots=getattr(args, "roots", None))


def cmd_run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    from daemon import logs
    from daemon.service import Daemon

    bars = None
    if sys.stderr.isatty() and settings.log_format in ("auto", "console"):
        from daemon.progress import JobBars

        bars = JobBars()
    handler = bars.log_handler() if bars else None
    if handler is None and (settings.log_format == "json" or (settings.log_format == "auto"
                                                                and not sys.stderr.isatty())):
        handler = logs.LockedStreamHandler(logs.capture_stderr())  # one JSON object per line, whoever writes
    logs.configure(settings.log_format, settings.log_level, handler=handler)
    daemon = Daemon(settings, display=bars)
    with bars or contextlib.nullcontext():
        code = daemon.run(drain=args.drain)
    if daemon.start_again:
        from daemon.ray_cluster import start_again

        start_again()
    if args.drain:
        print(drain_summary(settings, daemon.finished))
    return code


def drain_summary(settings: Settings, finished: list[int]) -> str:
    from daemon.listing import job_or_archived
    from daemon.store import Store

    store = Store.open(settings.database, read_only=True)
    try:
        lines = []
        for job_id in dict.fromkeys(finished):
            job, _ = job_or_archived(store, job_id)  # a short archive_after_days may have archived it already
            request = Path(job.request_path)
            if job.state == JobState.DONE:
                folder = request.parent
                outputs = job.outputs
                lines.append(f"done    {request}\n        output:      {folder / outputs['video']}"
                             f"\n        Render Info: {folder / outputs['render_info']}")
                if outputs.get("image_sequence"):
                    lines.append(f"        sequence:    {folder / outputs['image_sequence']}")
            else:
                lines.append(f"{job.state:<7} {request}\n        {job.error}")
        return "\n".join(lines) if lines else "nothing new to render"
    finally:
        store.close()


def cmd_status(args: argparse.Namespace) -> int:
    from daemon.cli.status import status_data, status_text
    from daemon.listing import JobFilter
    from daemon.pidfile import daemon_pid
    from daemon.states import FINISHED_STATES
    from daemon.store import Store

    settings = settings_from(args)
    if not settings.database.exists():
        print(f"no state yet: {settings.database} does not exist (start the daemon with `hotshot run`)")
        return 0
    states = tuple(dict.fromkeys(state for group in args.states or [] for state in group))
    if args.archived and set(states) - set(FINISHED_STATES):
        raise HotshotError(f"archived jobs are finished: --jobs {', '.join(sorted(set(states) - set(FINISHED_STATES)))}"
                           f" never matches with --archived; use {', '.join(FINISHED_STATES)}")
    paged = bool(states or args.shot or args.archived or args.offset)
    clear = args.watch and not args.json and sys.stdout.isatty()
    if args.watch:
        signal.signal(signal.SIGTERM, _interrupt)  # a supervisor's stop ends the watch as Ctrl-C does
    try:
        while True:
            store = Store.open(settings.database, read_only=True)
            try:
                shots = None
                if args.shot:
                    shots = [shot for name in args.shot for shot in _shots_named(store, name)]
                wanted = JobFilter(states=states, shot_ids=tuple(shot["id"] for shot in shots) if shots else None,
                                   archived=args.archived, limit=args.limit, offset=args.offset)
                data = status_data(store, daemon_pid(settings.state_dir), wanted, shots)
            finally:
                store.close()
            if args.json:
                text = json.dumps(data, default=str) if args.watch else json.dumps(data, indent=2, default=str)
            else:
                text = status_text(data, settings.roots, paged)
            print(("\x1b[H\x1b[2J" if clear else "") + text + ("" if clear or not args.watch or args.json else "\n"),
                  flush=True)
            if not args.watch:
                return 0
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0


def _shots_named(store, name: str) -> list[dict]:
    from daemon.listing import shots_named

    found = shots_named(store, name)
    if not found:
        raise HotshotError(f"there is no shot {name!r}; name it as `hotshot status` prints it (root/shot), by its "
                           "folder relative to its root, or by its path")
    return found


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def cmd_control(args: argparse.Namespace) -> int:
    """cancel, retry, pause, resume: through the running daemon, or on the database when none runs."""
    from daemon import logs
    from daemon.control import run_command

    settings = settings_from(args)
    logs.configure(settings.log_format, "warning")
    target = args.target
    if target is not None and not target.isdigit():
        path = Path(target).expanduser().resolve()
        if path.name.endswith(".render.status.json"):
            path = path.with_name(path.name.removesuffix(".render.status.json") + ".render.json")
        target = str(path)
    print(run_command(settings, args.command, target).message)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    path = Path(args.render)
    if args.render.isdigit() and not path.exists():
        path = manifest_of_job(settings_from(args), int(args.render))
    elif path.suffix != ".json":
        path = path.with_name(path.stem + ".render-info.json")
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise HotshotError(f"no Render Info at {path}") from None
    except json.JSONDecodeError as exc:
        raise HotshotError(f"{path} is not valid JSON: {exc}") from None
    print(describe_manifest(manifest))
    return 0


def manifest_of_job(settings: Settings, job_id: int) -> Path:
    from daemon.store import Store

    if not settings.database.exists():
        raise HotshotError(f"no state yet: {settings.database} does not exist")
    from daemon.listing import job_or_archived

    store = Store.open(settings.database, read_only=True)
    try:
        job, _ = job_or_archived(store, job_id)
    finally:
        store.close()
    if job is None:
        raise HotshotError(f"there is no job {job_id}")
    if job.state != JobState.DONE or not job.manifest_path:
        raise HotshotError(f"job {job_id} is {job.state}; only a done job has a Render Info")
    return Path(job.manifest_path)


def describe_manifest(manifest: dict) -> str:
    out = manifest.get("output", {})
    lineage = manifest.get("lineage", {})
    model = manifest.get("model", {})
    lines = [f"{manifest.get('render_id')}  ({out.get('video')}, {out.get('width')}x{out.get('height')}, "
             f"{out.get('frames')} frames at {out.get('fps')} fps)",
             f"  from     {' → '.join(lineage.get('chain', []))}  frames {manifest.get('frame_range')}",
             f"  output   {out.get('output_codec', 'h264')} ({out.get('codec')}), timecode "
             f"{out.get('timecode') or 'none'}",
             f"  model    {model.get('id')} ({model.get('backend')}, {model.get('dtype')} on {model.get('device')})"]
    for name, entry in (manifest.get("settings") or {}).items():
        lines.append(f"  {name:<16} {json.dumps(entry.get('value'))}  ({entry.get('from')})")
    plan = manifest.get("chunk_plan", {})
    lines.append(f"  chunks   {len(plan.get('chunks', []))} of {plan.get('context_size', {}).get('used')} frames, "
                 f"overlap {plan.get('context_overlap', {}).get('used')}")
    for name in ("style_frame", "reference_frame"):
        if manifest.get(name):
            lines.append(f"  {name:<16} {manifest[name]['from']} (sha256 {manifest[name]['sha256'][:12]}…)")
    for keyframe in manifest.get("keyframes") or []:
        lines.append(f"  keyframe {keyframe['frame']:<7} {keyframe['from']} (sha256 {keyframe['sha256'][:12]}…)")
    timeline = manifest.get("timeline") or {}
    if timeline.get("interpolation"):
        lines.append(f"  interpolation    {timeline['frames_diffused_in_range']} frames diffused, "
                     f"{timeline['frames_interpolated']} interpolated")
    if manifest.get("image_sequence"):
        sequence = manifest["image_sequence"]
        lines.append(f"  sequence {sequence['folder']}/ {sequence['first_file']} … {sequence['last_file']}")
    if manifest.get("mask"):
        mask = manifest["mask"]
        lines.append(f"  mask     {mask['from']} ({mask['kind']}, grow {mask['grow']}, feather {mask['feather']})")
    hashes = [f"source {manifest.get('source', {}).get('sha256', '')[:12]}…"] \
        + [f"{role} {entry['sha256'][:12] + '…' if entry.get('sha256') else 'not found'}"
           for role, entry in (manifest.get("weights") or {}).items()]
    if manifest.get("source", {}).get("sha256"):
        lines.append(f"  sha256   {', '.join(hashes)}")
    timing = manifest.get("timing", {})
    lines.append(f"  time     {timing.get('seconds')} s (estimate {timing.get('estimate_seconds')} s)")
    if timing.get("parts"):
        lines.append("  parts    " + ", ".join(f"{name.replace('_', ' ')} {seconds:.1f} s"
                                               for name, seconds in timing["parts"].items() if seconds))
    lines += [f"  warning  {warning}" for warning in manifest.get("warnings", [])]
    return "\n".join(lines)


def cmd_estimate(args: argparse.Namespace) -> int:
    from daemon.cli.estimate import estimate_request

    settings = settings_from(args)
    result = estimate_request(settings, args.request)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0 if result["state"] == JobState.QUEUED else 1
    if result["state"] != JobState.QUEUED:
        print(f"{args.request.name}: {result['state']}: {result['reason']}")
        return 1
    estimate, settings_used = result["estimate"], result["settings"]
    first, last = settings_used["frame_range"]["value"]
    print(f"{args.request.name}: {settings_used['source']['value']} frames {first}-{last} "
          f"({estimate['frames']} frames) with {settings_used['model']['value']}")
    print(f"  {estimate['chunks']} chunk(s), {estimate['frames_to_diffuse']} frames to diffuse at "
          f"{estimate['width']}x{estimate['height']}, {estimate['steps']} steps, cfg {settings_used['cfg']['value']}")
    basis = f"fitted from {estimate['samples']} measured render(s)" if estimate["samples"] else \
        "from the catalog's calibration (no render of this model measured yet)"
    print(f"  estimate: {estimate['seconds']} GPU-seconds on {estimate['device']} "
          f"(likely {estimate['seconds_low']}-{estimate['seconds_high']} s; {basis}; {estimate['credits']} credits)")
    parts = ", ".join(f"{name.replace('_', ' ')} {value:.1f} s" for name, value in estimate["parts"].items() if value)
    print(f"  parts: {parts}")
    for warning in estimate.get("warnings", []):
        print(f"  warning: {warning}")
    print(f"  start: {result['start']['description']}")
    return 0


def cmd_frame(args: argparse.Namespace) -> int:
    from engine.errors import EngineError
    from engine.stills import export_frame

    settings = settings_from(args)
    try:
        written = export_frame(args.source, args.number, args.output or args.source.parent,
                               "exr" if args.exr else None, settings.first_frame_number)
    except EngineError as exc:
        raise HotshotError(str(exc)) from exc
    except OSError as exc:
        raise HotshotError(f"cannot write the frame: {exc}") from exc
    print(written)
    return 0


def cmd_prompt(args: argparse.Namespace) -> int:
    from daemon import logs
    from daemon.cli.prompt import suggest

    settings = settings_from(args)
    logs.configure(settings.log_format, "warning")
    logs.route_ml_libraries()
    target, result = suggest(settings, args.shot, args.source, args.reference,
                             tuple(args.range) if args.range else None, args.device)
    print(result.prompt)
    print(f"\nnegative prompt: {result.negative_prompt}")
    if result.dropped_terms:
        print(f"dropped (no people in the shot): {', '.join(result.dropped_terms)}")
    print(f"people: {'yes' if result.people else 'no'} (from {result.people_from}); "
          f"frames described: {', '.join(map(str, result.frames))}")
    print(f"written to {target}")
    return 0


def cmd_web(args: argparse.Namespace) -> int:
    from daemon.web.server import serve

    return serve(settings_from(args), args.bind, args.config)


def cmd_presets(args: argparse.Namespace) -> int:
    from daemon.presets import load_presets

    settings = settings_from(args)
    for preset in load_presets(settings.presets_file).values():
        state = "" if preset.available else f"  [not available: {preset.unavailable}]"
        print(f"{preset.name}{state}\n  {preset.description}")
        for key, value in preset.values.items():
            print(f"    {key} = {json.dumps(value)}")
    return 0


def cmd_models_list(args: argparse.Namespace) -> int:
    from engine.catalog import CatalogError, load_catalog

    settings = settings_from(args)
    try:
        catalog = load_catalog(settings.catalogs, settings.models_dir)
    except CatalogError as exc:
        raise HotshotError(str(exc)) from exc
    for spec in catalog.values():
        if spec.weights_present():
            present = "present"
        elif spec.tiny:
            present = "missing: built on first use, or now with `hotshot models make-tiny`"
        elif spec.random_weights:
            present = f"missing: build it with `hotshot models make-random {spec.id}`"
        elif spec.hub:
            present = "not downloaded: fetched from the hub on first use (needs internet)"
        else:
            present = "missing"
        exposes = [name for name in ("style_frame", "reference_frame", "keyframes", "mask", "strength")
                   if getattr(spec.capabilities, name)]
        if spec.capabilities.controlnets:
            exposes.append("controlnets: " + "/".join(spec.capabilities.controlnets))
        if spec.accelerator:
            exposes.append("low_step")
        if not (spec.capabilities.prompt and spec.capabilities.sampling):
            exposes.append("no " + " or ".join(name for name, has in (("prompt", spec.capabilities.prompt),
                                                                       ("steps/cfg/seed", spec.capabilities.sampling))
                                               if not has))
        print(f"{spec.id:<24} {spec.backend:<16} {spec.name}\n{'':<24} weights: {spec.weights} [{present}]"
              f"\n{'':<24} exposes: {', '.join(exposes) or 'prompt, steps, cfg, seed only'}")
    return 0


def cmd_models_check(args: argparse.Namespace) -> int:
    from daemon import logs
    from daemon.cli.model_check import smoke_test

    settings = settings_from(args)
    logs.configure(settings.log_format, "warning")
    logs.route_ml_libraries()
    print(smoke_test(settings, args.id, args.device))
    return 0


def cmd_models_make_tiny(args: argparse.Namespace) -> int:
    from daemon import logs
    from daemon.resolve import load_setup
    from engine.captions import make_tiny_captioner
    from engine.controls import make_tiny_controls
    from engine.models import make_tiny

    settings = settings_from(args)
    logs.configure(settings.log_format, "warning")
    logs.route_ml_libraries()
    setup = load_setup(settings, "cpu")
    ids = args.ids or [spec.id for spec in setup.catalog.values() if spec.tiny]
    for model_id in ids:
        spec = setup.catalog.get(model_id)
        if spec is None or not spec.tiny:
            raise HotshotError(f"{model_id!r} is not a tiny model in the catalog; only tiny-* models can be built")
        print(f"{model_id}: {make_tiny(spec, force=args.force)}")
    if not args.ids:
        if setup.controls is not None:
            for path in make_tiny_controls(setup.controls, force=args.force):
                print(f"controls: {path}")
        if setup.captioner is not None and setup.captioner.tiny:
            print(f"{setup.captioner.id}: {make_tiny_captioner(setup.captioner, force=args.force)}")
    return 0


def cmd_models_make_random(args: argparse.Namespace) -> int:
    from daemon import logs
    from daemon.resolve import load_setup
    from engine.models import make_random

    settings = settings_from(args)
    logs.configure(settings.log_format, "warning")
    logs.route_ml_libraries()
    spec = load_setup(settings, "cpu").catalog.get(args.id)
    if spec is None or not spec.random_weights:
        raise HotshotError(f"{args.id!r} is not a random-weights model in the catalog (`random_weights = true`)")
    print(f"{args.id}: {make_random(spec, force=args.force)}")
    return 0
