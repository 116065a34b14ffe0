"""Move images (with their captions) into another concept folder, never overwriting a file.

The TUI's "move to concept" on marked rows calls :func:`move_images`. Each image moves with
its caption sidecar; its selection (included or not) and its cached analysis follow it under
the new name (:func:`kiln.engine.dataset.selection.move_file_state`). A name already taken in
the target folder, by an image or by a caption, is never replaced: that image stays where it
is and the result says why.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from kiln.engine.dataset.lock import caption_lock
from kiln.engine.dataset.selection import move_file_state
from kiln.engine.dataset.store import Store
from kiln.engine.errors import UsageError


@dataclass
class MoveResult:
    """What :func:`move_images` did.

    Attributes:
        moved: Old relative path to new relative path, for each image moved.
        skipped: Relative path to the reason, for each image left where it was.
    """

    moved: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def _link_without_replacing(source: Path, target: Path) -> None:
    """Give ``source`` the name ``target`` too; FileExistsError when ``target`` exists.

    A hard link is made atomically and fails on an existing name, so there is no window in
    which a file another program just created could be replaced. Where links are not
    supported (some network and FAT file systems) the name is claimed with O_EXCL first.
    """
    try:
        os.link(source, target)
        return
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
    fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # FileExistsError when taken
    os.close(fd)
    try:
        os.replace(source, target)  # onto the empty file we own
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(target)
        raise
    # os.replace moved it: recreate nothing at the source; the caller's unlink finds none.


def _move_file(source: Path, target: Path) -> None:
    """Move one file without replacing anything at ``target``."""
    _link_without_replacing(source, target)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(source)


def move_images(
    root: Path | str,
    rel_paths: Iterable[str],
    folder: str,
    store: Store,
    caption_extension: str = ".txt",
) -> MoveResult:
    """Move images and their captions into the concept folder ``folder`` directly under ``root``.

    Args:
        root: The dataset folder.
        rel_paths: The images, relative to ``root`` (``10_cat/a.png``).
        folder: The target concept folder's name (``5_dog``); made when missing.
        store: The dataset's state, whose selection and analysis rows follow the images.
        caption_extension: The caption sidecar's extension.

    Raises:
        UsageError: ``folder`` is not one folder name directly under ``root``.
    """
    root = Path(root)
    if not folder or folder in {".", ".."} or "/" in folder or os.sep in folder or folder.startswith("."):
        raise UsageError(f"{folder!r} is not a concept folder name; give one folder directly under {root}")
    target_dir = root / folder
    result = MoveResult()
    with caption_lock(root):
        for rel_path in rel_paths:
            source = root / rel_path
            if Path(rel_path).parent.as_posix() == folder:
                result.skipped[rel_path] = f"already in {folder}/"
                continue
            if not source.is_file():
                result.skipped[rel_path] = "no longer on disk"
                continue
            target_dir.mkdir(exist_ok=True)
            target = target_dir / source.name
            caption = source.with_suffix(caption_extension)
            caption_target = target.with_suffix(caption_extension)
            new_path = f"{folder}/{source.name}"
            if target.exists() or (caption.exists() and caption_target.exists()):
                taken = target if target.exists() else caption_target
                result.skipped[rel_path] = f"{folder}/{taken.name} exists; nothing was overwritten"
                continue
            try:
                _move_file(source, target)
            except FileExistsError:
                result.skipped[rel_path] = f"{new_path} exists; nothing was overwritten"
                continue
            except OSError as exc:
                result.skipped[rel_path] = f"cannot move it ({exc.strerror or exc})"
                continue
            if caption.exists():
                try:
                    _move_file(caption, caption_target)
                except OSError as exc:
                    # Put the image back so image and caption stay together.
                    with contextlib.suppress(OSError):
                        _move_file(target, source)
                    result.skipped[rel_path] = f"cannot move its caption ({exc.strerror or exc})"
                    continue
            move_file_state(store, rel_path, new_path)
            result.moved[rel_path] = new_path
    return result
