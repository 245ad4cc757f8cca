"""Facility scale: every figure of issue 16 beside its goal.

Each part lives in its own module (bench/scale_*.py) with a `figures()` that
builds what it measures itself (through the daemon's own paths where that is
what is measured, directly in SQLite where only the size matters; each row says
which) and returns `Figure` rows. This script runs them in turn and prints one
table.

    .venv/bin/python bench/scale.py            # every part
    .venv/bin/python bench/scale.py status     # parts whose name contains "status"
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from _common import PROJECT  # noqa: F401  (puts the project on the path and configures logging)
from scale_common import Figure

PARTS = sorted(p.stem for p in Path(__file__).parent.glob("scale_*.py") if p.stem != "scale_common")


def main(argv: list[str]) -> int:
    chosen = [p for p in PARTS if not argv or any(a in p for a in argv)]
    rows: list[Figure] = []
    for part in chosen:
        print(f"== {part}", flush=True)
        for row in importlib.import_module(part).figures():
            print(f"   {row.line()}", flush=True)
            rows.append(row)
    print()
    print(f"{'figure':<58} {'measured':>14} {'goal':>14}  met  built")
    for row in rows:
        print(row.line())
    return 0 if all(r.met for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
