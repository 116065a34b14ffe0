"""Kiln's per-dataset state in ``<dataset>/.kiln/kiln.db`` (SQLite in WAL mode).

It holds the selection (which images are included) and the analysis cache. Deleting it
loses nothing but time. When the dataset folder is read-only the store lives in memory and
says so, so Kiln still opens.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

STATE_FOLDER = ".kiln"
DB_NAME = "kiln.db"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS selection (
    rel_path TEXT PRIMARY KEY,
    included INTEGER NOT NULL,
    note TEXT
);
CREATE TABLE IF NOT EXISTS analysis (
    rel_path TEXT NOT NULL,
    method TEXT NOT NULL,
    exact INTEGER NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    version INTEGER NOT NULL,
    white REAL,
    black REAL,
    error TEXT,
    metrics TEXT,
    PRIMARY KEY (rel_path, method, exact)
);
"""


class Store:
    """Thread-safe access to one dataset's ``kiln.db``.

    One connection guarded by a lock: the TUI's workers and its UI thread share it, and
    SQLite serialises writes anyway.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.path = self.root / STATE_FOLDER / DB_NAME
        self.persistent = True
        self.warning: str | None = None
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(exist_ok=True)
            self._conn = sqlite3.connect(self.path, check_same_thread=False, timeout=10)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            self.persistent = False
            self.warning = (
                f"{self.path}: cannot write Kiln's state ({exc}); the selection and cache "
                "last only for this session"
            )
            self._conn = sqlite3.connect(":memory:", check_same_thread=False)
            self._conn.executescript(_SCHEMA)
        self._conn.execute("PRAGMA synchronous=NORMAL")
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),)
            )

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Run statements in one transaction under the store's lock."""
        with self._lock, self._conn:
            yield self._conn

    def query(self, sql: str, params: Iterable = ()) -> list[tuple]:
        """Run a read query and return all rows."""
        with self._lock:
            return self._conn.execute(sql, tuple(params)).fetchall()

    def close(self) -> None:
        """Close the connection (the WAL is checkpointed by SQLite)."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
