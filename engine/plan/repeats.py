"""Apply a new repeats value the way Kohya reads it: by renaming the concept folder.

``10_cat`` becomes ``35_cat``; a folder Kohya skips for want of a prefix (``cat``) gains
one. The selection and the analysis cache follow the images to their new paths. The
rename never replaces an existing folder.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from kiln.engine.dataset.scan import parse_concept_folder
from kiln.engine.dataset.selection import move_folder_state
from kiln.engine.dataset.store import Store
from kiln.engine.errors import DatasetError, UsageError


def renamed_folder(folder: str, repeats: int) -> str:
    """The folder name that gives ``repeats``: ``renamed_folder("10_cat", 35) == "35_cat"``."""
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise UsageError(f"repeats {repeats!r} must be a whole number, at least 1")
    parsed = parse_concept_folder(folder)
    name = folder if parsed is None else parsed[1]
    return f"{repeats}_{name}"


def rename_concept_repeats(root: Path | str, folder: str, new_repeats: int, store: Store) -> str:
    """Rename the concept folder ``folder`` (directly under ``root``) to carry ``new_repeats``.

    Why: Kohya takes repeats only from folder names, so changing them means renaming, and
    the user's selection and cached analyses must survive it.

    Returns:
        The new folder name (unchanged when it already had ``new_repeats``).

    Raises:
        UsageError: bad repeats or a folder name that is not one folder under the root.
        DatasetError: the folder is missing, the new name exists already, or the rename
            failed (nothing is changed then).
    """
    root = Path(root)
    if not folder or folder in {".", ".."} or "/" in folder or os.sep in folder:
        raise UsageError(f"{folder!r} is not a concept folder name; give one folder directly under {root}")
    new_folder = renamed_folder(folder, new_repeats)
    source, target = root / folder, root / new_folder
    if not source.is_dir():
        raise DatasetError(f"{source}: no such concept folder; rescan the dataset")
    if new_folder == folder:
        return folder
    _rename_without_replacing(source, target)
    try:
        move_folder_state(store, folder, new_folder)
    except Exception as exc:
        # Put the folder back so files and state keep agreeing.
        os.rename(target, source)
        raise DatasetError(
            f"{store.path}: cannot carry the selection over ({exc}); {folder} was left as it was"
        ) from exc
    return new_folder


def _rename_without_replacing(source: Path, target: Path) -> None:
    # Claim the name first: mkdir is atomic and fails if anything has it, and POSIX rename
    # may then replace the empty folder we own. Checking exists() alone would race.
    try:
        target.mkdir()
    except FileExistsError:
        raise DatasetError(
            f"{target}: already exists, so {source.name} cannot become {target.name}; "
            "merge or rename that folder first"
        ) from None
    except OSError as exc:
        raise DatasetError(f"{target}: cannot create it ({exc.strerror}); check permissions") from exc
    try:
        os.rename(source, target)
        return
    except OSError as exc:
        error = exc
    with contextlib.suppress(OSError):
        target.rmdir()
    if os.name == "nt" and isinstance(error, FileExistsError):
        # Windows will not rename onto a folder, even an empty one we own: free the name and
        # rename at once (a far narrower window than checking first).
        try:
            os.rename(source, target)
            return
        except OSError as exc:
            error = exc
    raise DatasetError(
        f"{source}: cannot rename it to {target.name} ({error.strerror}); check permissions"
    ) from error
