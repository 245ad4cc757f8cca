"""The engine never imports the daemon: the dependency goes one way. Every process the engine starts keeps out
of the daemon's process group."""

from __future__ import annotations

import ast
import subprocess
import sys

from tests.conftest import PROJECT


def imported_modules(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def test_engine_does_not_import_daemon():
    offenders = [
        (str(path.relative_to(PROJECT)), name)
        for path in (PROJECT / "engine").rglob("*.py")
        for name in imported_modules(path)
        if name == "daemon" or name.startswith("daemon.")
    ]
    assert offenders == []


def test_the_daemon_process_never_imports_torch():
    """The daemon, its loop and every module it loads stay free of torch and diffusers: only worker
    processes (and the CLI commands that render: prompt, models check, make-tiny) load them. The web workspace
    (`hotshot web`) is as free of them: its Auto Prompt runs `hotshot prompt` in a child process."""
    code = ("import sys, daemon.service, daemon.cli, daemon.cli.estimate, daemon.cli.prompt, daemon.cli.model_check, "
            "daemon.cli.status, daemon.web.app, daemon.web.server, daemon.ray_worker, daemon.ray_actor, "
            "engine.backends.wan_vace, engine.backends.wan_v2v, "
            "engine.backends.animatediff; "
            "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


STARTERS = {"Popen", "run", "call", "check_call", "check_output"}
OWN_GROUP_KEYWORDS = {"process_group", "start_new_session"}


def starts_in_own_group(call: ast.Call) -> bool:
    for keyword in call.keywords:
        if keyword.arg in OWN_GROUP_KEYWORDS:
            return True
        if keyword.arg is None and isinstance(keyword.value, ast.Name) and keyword.value.id == "OWN_GROUP":
            return True
    return False


def test_every_process_the_engine_starts_is_in_a_group_of_its_own():
    """Ctrl-C signals the terminal's whole foreground group, the daemon's and its workers': a process the
    engine starts (every ffmpeg and ffprobe, for decoding, encoding, muxing, audio, probing) runs in a group of
    its own (`**OWN_GROUP` of engine/media_safety.py), so that only hotshot stops it and the running chunk
    can finish. Names every start that does not, and every start by a means the check cannot see into."""
    offenders = []
    for path in (PROJECT / "engine").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            owner = node.func.value.id if isinstance(node.func.value, ast.Name) else None
            where = f"{path.relative_to(PROJECT)}:{node.lineno}"
            if owner == "subprocess" and node.func.attr in STARTERS and not starts_in_own_group(node):
                offenders.append(where)
            elif (owner == "os" and node.func.attr in {"system", "popen"} or node.func.attr.startswith("spawn")
                  or owner == "ffmpeg" and node.func.attr in {"run", "run_async"} or node.func.attr == "run_async"):
                offenders.append(where)
    assert offenders == []
