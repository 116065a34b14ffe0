"""Kiln's per-dataset state in ``<dataset>/.kiln/kiln.db`` (SQLite in WAL mode).

It holds the selection (which images are included), the analysis cache and the captions'
undo history. Deleting it loses nothing but time and undo. A damaged file (truncated,
overwritten) is moved aside as ``kiln.db.damaged-<time>`` and a fresh one started, with a
warning that says so. When the state cannot be written at all (the dataset folder is
read-only, ``.kiln`` is a file) the store lives in memory and says so, so Kiln still opens;
caption edits then refuse to run, since their undo could not be recorded
(:meth:`Store.require_persistent`).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from kiln.engine.errors import KilnError

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

    def __init__(self, root: Path, create: bool = True) -> None:
        """Open (or make) the dataset's state.

        Args:
            root: The dataset folder.
            create: Make ``.kiln/`` when it is missing. False for a folder that is not (yet)
                a dataset (no images): the state then lives in memory and nothing is written
                there, so pointing Kiln at the wrong folder leaves no trace in it.
        """
        self.root = Path(root)
        self.path = self.root / STATE_FOLDER / DB_NAME
        self.persistent = True
        self.warning: str | None = None
        self.problem: str | None = None
        self._lock = threading.RLock()
        if not create and not self.path.parent.exists():
            self.persistent = False
            self.problem = f"{self.root}: no images, so Kiln keeps no state there (add images first)"
            self._conn = sqlite3.connect(":memory:", check_same_thread=False)
            self._conn.executescript(_SCHEMA)
            self._conn.execute("INSERT INTO meta (key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            return
        try:
            self._conn = self._open_file()
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) or not self.path.is_file():
                self._open_memory(exc)
            else:
                aside = self._move_aside()
                try:
                    self._conn = self._open_file()
                    self.warning = (
                        f"{self.path}: was damaged ({exc}); kept as {aside.name} and started afresh "
                        "(selection, analysis cache and caption undo history begin empty)"
                    )
                except (OSError, sqlite3.Error) as again:
                    self._open_memory(again)
        except OSError as exc:
            self._open_memory(exc)
        self._conn.execute("PRAGMA synchronous=NORMAL")
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),)
            )

    def _open_file(self) -> sqlite3.Connection:
        """Open the database file, waiting out another process that is creating it.

        Two Kiln processes opening a new ``kiln.db`` together race to switch it to WAL, and
        the loser gets "database is locked" at once (the busy timeout does not cover it):
        retry for a while rather than fall back to a memory store and lose the undo record.
        """
        deadline = time.monotonic() + 10.0
        while True:
            try:
                return self._connect()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(exist_ok=True)
        conn = sqlite3.connect(self.path, check_same_thread=False, timeout=10)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
            (verdict,) = conn.execute("PRAGMA quick_check(1)").fetchone()
            if verdict != "ok":
                raise sqlite3.DatabaseError(f"integrity check: {verdict}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _open_memory(self, exc: BaseException) -> None:
        self.persistent = False
        reason = getattr(exc, "strerror", None) or str(exc)
        self.problem = f"{self.path}: cannot write Kiln's state ({reason})"
        self.warning = f"{self.problem}; the selection and cache last only for this session"
        self._conn = sqlite3.connect(":memory:", check_same_thread=False)
        self._conn.executescript(_SCHEMA)

    def _move_aside(self) -> Path:
        """Keep a damaged database for inspection under a new name; drop its WAL files."""
        aside = self.path.with_name(f"{DB_NAME}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(self.path, aside)
        for suffix in ("-wal", "-shm"):
            self.path.with_name(DB_NAME + suffix).unlink(missing_ok=True)
        return aside

    def require_persistent(self, what: str) -> None:
        """Refuse ``what`` (an edit whose undo must be recorded) when the state is in memory.

        Raises:
            KilnError: The state cannot be written; the message names the file and the fix,
                and says nothing was changed.
        """
        if not self.persistent:
            raise KilnError(
                f"{self.problem}; {what} refused, nothing changed: its undo could not be recorded. "
                f"Make {self.path.parent} a writable folder (move away a file of that name)"
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

    def get_meta(self, key: str) -> str | None:
        """A value kept in the ``meta`` table (a form's settings, a choice), or None."""
        rows = self.query("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def set_meta(self, key: str, value: str) -> None:
        """Keep ``value`` under ``key`` in the ``meta`` table (replacing what was there)."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def close(self) -> None:
        """Close the connection (the WAL is checkpointed by SQLite)."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
