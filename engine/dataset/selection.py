"""Which images are included in training. Excluding an image never touches its file."""

from __future__ import annotations

from collections.abc import Iterable

from kiln.engine.dataset.scan import ImageRecord
from kiln.engine.dataset.store import Store


def excluded_paths(store: Store) -> set[str]:
    """Relative paths the user excluded (every other image is included)."""
    return {row[0] for row in store.query("SELECT rel_path FROM selection WHERE included = 0")}


def set_included(store: Store, rel_paths: Iterable[str], included: bool) -> None:
    """Include or exclude images, in one transaction."""
    rows = [(path, int(included)) for path in rel_paths]
    with store.transaction() as conn:
        conn.executemany(
            "INSERT INTO selection (rel_path, included) VALUES (?, ?) "
            "ON CONFLICT(rel_path) DO UPDATE SET included = excluded.included",
            rows,
        )


def move_folder_state(store: Store, old_folder: str, new_folder: str) -> None:
    """Carry selection and cache rows over when a concept folder is renamed."""
    old_prefix, new_prefix = f"{old_folder}/", f"{new_folder}/"
    with store.transaction() as conn:
        for table in ("selection", "analysis"):
            conn.execute(
                f"UPDATE OR REPLACE {table} SET rel_path = ? || substr(rel_path, ?) "
                "WHERE substr(rel_path, 1, ?) = ?",
                (new_prefix, len(old_prefix) + 1, len(old_prefix), old_prefix),
            )


def move_file_state(store: Store, old_path: str, new_path: str) -> None:
    """Carry one image's selection and cached analysis over to its new name after a rename."""
    with store.transaction() as conn:
        for table in ("selection", "analysis"):
            conn.execute(
                f"UPDATE OR REPLACE {table} SET rel_path = ? WHERE rel_path = ?", (new_path, old_path)
            )


def included_records(records: Iterable[ImageRecord], store: Store) -> list[ImageRecord]:
    """The records the user has not excluded, in their given order."""
    excluded = excluded_paths(store)
    return [record for record in records if record.rel_path not in excluded]
