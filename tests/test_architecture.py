"""The engine never imports the daemon: the dependency goes one way."""

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
