"""Undo for batch caption edits, kept in the dataset's ``.kiln/kiln.db`` so it survives restarts.

Every batch operation (a tag edit over many captions, an auto-captioning run) is one step:
for each caption file it touched, the bytes before and after. Undo restores a step only
where the file still holds what the step wrote, so an edit made since is never lost. The
before-state is stored *before* a file is written: a crash between the two leaves a step
whose file already equals its before-state, which undo simply skips.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from kiln.engine.dataset.captions import CaptionError, read_only_reason
from kiln.engine.dataset.lock import caption_lock
from kiln.engine.dataset.store import Store
from kiln.engine.errors import KilnError
from kiln.engine.fsutil import atomic_write_bytes

MAX_STEPS = 64
"""Steps kept; older ones are dropped (the issue asks for at least 32)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS caption_steps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    description TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS caption_step_files (
    step INTEGER NOT NULL,
    path TEXT NOT NULL,
    before BLOB,
    after BLOB,
    PRIMARY KEY (step, path)
);
"""


@dataclass(frozen=True)
class FileChange:
    """One caption file's content before and after an edit; None means the file is absent."""

    path: str
    before: bytes | None
    after: bytes | None


@dataclass(frozen=True)
class StepInfo:
    """A step as listed for the user."""

    id: int
    created: float
    description: str
    files: int


@dataclass
class UndoResult:
    """What an undo did.

    Attributes:
        step: The undone step.
        restored: Files put back to their earlier content.
        unchanged: Files that already held their earlier content.
        conflicts: Files edited since the step; left as they are.
        dry_run: Nothing was written.
    """

    step: StepInfo
    restored: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    dry_run: bool = False


class UndoConflict(KilnError):
    """Some files changed since the step; undoing would overwrite those edits."""


def _ensure_schema(store: Store) -> None:
    with store.transaction() as conn:
        conn.executescript(_SCHEMA)


class History:
    """The undo steps of one dataset (paths are relative to the dataset root, posix style)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.root = store.root
        _ensure_schema(store)

    def begin(self, description: str) -> int:
        """Open a new, empty step and return its id; older steps beyond the limit are dropped."""
        with self.store.transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO caption_steps (created, description) VALUES (?, ?)", (time.time(), description)
            )
            assert cursor.lastrowid is not None  # an INSERT always sets it
            step = cursor.lastrowid
            old = [
                row[0]
                for row in conn.execute(
                    "SELECT id FROM caption_steps ORDER BY id DESC LIMIT -1 OFFSET ?", (MAX_STEPS,)
                )
            ]
            for step_id in old:
                conn.execute("DELETE FROM caption_step_files WHERE step = ?", (step_id,))
                conn.execute("DELETE FROM caption_steps WHERE id = ?", (step_id,))
        return step

    def record(self, step: int, changes: list[FileChange]) -> None:
        """Add files to a step, in one transaction (call before writing them)."""
        with self.store.transaction() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO caption_step_files (step, path, before, after) VALUES (?, ?, ?, ?)",
                [(step, change.path, change.before, change.after) for change in changes],
            )

    def discard_if_empty(self, step: int) -> None:
        """Drop a step that recorded no file (a run that changed nothing is not an undo step)."""
        with self.store.transaction() as conn:
            sql = "SELECT COUNT(*) FROM caption_step_files WHERE step = ?"
            (count,) = conn.execute(sql, (step,)).fetchone()
            if count == 0:
                conn.execute("DELETE FROM caption_steps WHERE id = ?", (step,))

    def steps(self) -> list[StepInfo]:
        """Steps, newest first."""
        rows = self.store.query(
            "SELECT s.id, s.created, s.description, COUNT(f.path) FROM caption_steps s "
            "LEFT JOIN caption_step_files f ON f.step = s.id GROUP BY s.id ORDER BY s.id DESC"
        )
        return [StepInfo(id=row[0], created=row[1], description=row[2], files=row[3]) for row in rows]

    def files(self, step: int) -> list[FileChange]:
        """The files of a step, by path."""
        rows = self.store.query(
            "SELECT path, before, after FROM caption_step_files WHERE step = ? ORDER BY path", (step,)
        )
        return [FileChange(path=row[0], before=_bytes(row[1]), after=_bytes(row[2])) for row in rows]

    def undo(self, *, force: bool = False, dry_run: bool = False) -> UndoResult:
        """Undo the newest step.

        Args:
            force: Restore the files that still hold the step's result even when others were
                edited since (those keep their edits and are listed as conflicts).
            dry_run: Report what would happen; write nothing, keep the step.

        Raises:
            KilnError: There is nothing to undo.
            UndoConflict: Files were edited since the step and ``force`` is not set.
        """
        with caption_lock(self.root):
            return self._undo_locked(force=force, dry_run=dry_run)

    def _undo_locked(self, *, force: bool, dry_run: bool) -> UndoResult:
        steps = self.steps()
        if not steps:
            raise KilnError(f"{self.root}: nothing to undo (no caption edits are recorded)")
        step = steps[0]
        result = UndoResult(step=step, dry_run=dry_run)
        plan: list[FileChange] = []
        for change in self.files(step.id):
            current = current_bytes(self.root / change.path)
            if read_only_reason(self.root / change.path) is not None and current != change.before:
                result.conflicts.append(change.path)  # the user made it read-only since: theirs
            elif current == change.before:
                result.unchanged.append(change.path)
            elif current == change.after:
                plan.append(change)
            else:
                result.conflicts.append(change.path)
        if result.conflicts and not force and not dry_run:
            shown = ", ".join(result.conflicts[:3]) + (" ..." if len(result.conflicts) > 3 else "")
            raise UndoConflict(
                f"cannot undo '{step.description}': {len(result.conflicts)} caption(s) changed since "
                f"({shown}); pass --force to undo the rest and keep those edits"
            )
        if dry_run:
            result.restored = [change.path for change in plan]
            return result
        for change in plan:
            target = self.root / change.path
            if change.before is None:
                target.unlink(missing_ok=True)
            else:
                atomic_write_bytes(target, change.before)
            result.restored.append(change.path)
        with self.store.transaction() as conn:
            conn.execute("DELETE FROM caption_step_files WHERE step = ?", (step.id,))
            conn.execute("DELETE FROM caption_steps WHERE id = ?", (step.id,))
        return result


def current_bytes(path: Path) -> bytes | None:
    """A caption file's bytes now, None when it does not exist (what a step stores)."""
    try:
        return path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return None
    except OSError as exc:
        raise CaptionError(
            f"{path}: cannot read the caption ({exc.strerror or exc}); fix its permissions (chmod u+r)"
        ) from exc


def _bytes(value: bytes | memoryview | None) -> bytes | None:
    return None if value is None else bytes(value)


def relative(root: Path, path: Path) -> str:
    """A caption's key in the history: its path relative to the dataset root, posix style."""
    return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
