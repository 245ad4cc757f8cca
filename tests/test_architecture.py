"""The engine never imports the daemon: the dependency goes one way."""

from __future__ import annotations

import ast

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


def test_daemon_imports_of_engine_avoid_torch_modules():
    """The daemon process never needs torch: only the worker (and `models check` and `make-tiny`) load it."""
    heavy = {"engine.render", "engine.devices", "engine.models", "engine.backends.wan_vace"}
    offenders = [
        (str(path.relative_to(PROJECT)), name)
        for path in (PROJECT / "daemon").rglob("*.py") if path.name not in ("worker.py", "cli.py", "model_check.py")
        for name in imported_modules(path) if name in heavy
    ]
    assert offenders == []
