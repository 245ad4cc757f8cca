"""Opening the state database, and how rows are read and written: times in UTC, JSON columns decoded."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlite_utils import Database

BUSY_TIMEOUT_SECONDS = 30.0
JSON_COLUMNS = ("probe", "settings", "spec", "estimate", "progress", "outputs", "data")


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def utc_iso(epoch: float) -> str:
    """An epoch time as ISO 8601 in UTC, to the second."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def decode(row: dict | None) -> dict | None:
    if row is None:
        return None
    for column in JSON_COLUMNS:
        if isinstance(row.get(column), str):
            row[column] = json.loads(row[column])
    return row


def encode(values: dict) -> dict:
    return {
        key: json.dumps(value, default=str) if key in JSON_COLUMNS and value is not None else value
        for key, value in values.items()
    }


class Reader:
    """A read-only connection with what the store's queries use (`execute`, `conn`, `close`). Readers such as
    `hotshot status` take this rather than sqlite-utils' `Database`, whose import (numpy with it) would cost
    them more than their queries."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, parameters: Any = None) -> sqlite3.Cursor:
        return self.conn.execute(sql) if parameters is None else self.conn.execute(sql, parameters)

    def close(self) -> None:
        self.conn.close()


def connect(path: Path | None, read_only: bool = False) -> Database | Reader:
    """Open (and for writers, migrate) the database; `None` means in memory. A read-only one is a `Reader`."""
    if path is None:
        conn = sqlite3.connect(":memory:", check_same_thread=False)
    elif read_only:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_SECONDS,
                               check_same_thread=False)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_SECONDS, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
    if read_only:
        return Reader(conn)
    from sqlite_utils import Database

    from daemon.schema import migrations

    db = Database(conn)
    if path is not None:
        db.enable_wal()
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("PRAGMA foreign_keys = ON")
    migrations.apply(db)
    return db
