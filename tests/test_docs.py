"""The documentation and the code name the same things: request fields, settings and CLI commands."""

from __future__ import annotations

import argparse
import re

from daemon.cli import build_parser
from daemon.config import Settings
from daemon.request import Context, RenderRequest
from tests.conftest import PROJECT

DOCS = PROJECT / "docs"


def table_names(path, section: str, column: int = 0) -> set[str]:
    """The back-quoted names in the first column of the Markdown tables in `section` (a `## ` heading) of `path`."""
    text = path.read_text().split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    names = set()
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) > column and (found := re.fullmatch(r"`([^`]+)`", cells[column])):
            names.add(found.group(1))
    return names


def commands(parser: argparse.ArgumentParser, prefix: str = "") -> set[str]:
    """Every command the parser accepts, sub-commands as `models list`."""
    found = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                nested = commands(sub, f"{prefix}{name} ")
                found |= nested or {f"{prefix}{name}"}
    return found


def test_every_request_field_is_documented_and_every_documented_field_exists():
    """docs/requests.md's table of fields lists exactly the fields a request may have (context ones dotted)."""
    fields = {name for name in RenderRequest.model_fields if name != "context"}
    fields |= {f"context.{name}" for name in Context.model_fields}
    documented = {name for name in table_names(DOCS / "requests.md", "Fields") if re.fullmatch(r"[a-z_.]+", name)}
    assert documented == fields


def test_every_setting_is_documented_and_every_documented_setting_exists():
    """docs/configuration.md's settings table lists exactly the keys of the settings file."""
    assert _settings_table() == set(Settings.model_fields)


def _settings_table() -> set[str]:
    """The names in the settings table: the table whose first row is `roots`."""
    text = (DOCS / "configuration.md").read_text()
    table = text[text.index("| `roots` |"):].split("\n\n", 1)[0]
    return {match.group(1) for match in re.finditer(r"^\| `([a-z_]+)` \|", table, re.MULTILINE)}


def test_every_cli_command_is_in_the_readme_and_every_documented_command_exists():
    """README.md's command table names exactly the commands `hotshot` accepts."""
    documented = set()
    for line in (PROJECT / "README.md").read_text().splitlines():
        for usage in re.findall(r"`hotshot ([a-z][a-z -]*?)(?: [A-Z\[]|`)", line if line.startswith("| `") else ""):
            documented.add(usage.strip())
    assert documented == commands(build_parser())
