"""Watch a dataset folder, and runs folders, with watchdog and report changed files.

Only created, modified, moved and deleted *files* are reported; opening and closing files
(which the app's own reads cause) are filtered out so nothing echoes back. An atomic write
(``os.replace``) arrives as a move whose destination is the file, so destinations count
too. inotify sees nothing on NFS and some FUSE mounts: ``poll=True`` uses a polling observer.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from kiln.engine.dataset.scan import IMAGE_EXTENSIONS
from watchdog.events import (
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

WATCHED_EVENTS = [FileCreatedEvent, FileModifiedEvent, FileMovedEvent, FileDeletedEvent]
_IGNORED_PARTS = {".kiln", "runs", "_excluded", "__pycache__"}


class _Handler(FileSystemEventHandler):
    def __init__(
        self, root: Path, extensions: tuple[str, ...], report: Callable[[set[str], dict[str, str]], object]
    ) -> None:
        self.root = root
        self.extensions = extensions
        self.report = report

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            return
        source = self._relative(event.src_path)
        destination = self._relative(event.dest_path) if getattr(event, "dest_path", "") else None
        relevant = {path for path in (source, destination) if path is not None}
        moves = {source: destination} if source and destination else {}
        if relevant:
            self.report(relevant, moves)

    def _relative(self, raw: str | bytes) -> str | None:
        path = Path(raw.decode() if isinstance(raw, bytes) else raw)
        try:
            relative = path.relative_to(self.root)
        except ValueError:
            return None
        parts = relative.parts
        if any(part.startswith(".") or part in _IGNORED_PARTS for part in parts):
            return None
        if not relative.name.lower().endswith(self.extensions):
            return None
        return relative.as_posix()


class DatasetWatcher:
    """Runs an observer thread; ``report`` receives changed relative paths and renames.

    ``report`` is called on the observer's thread: pass something thread-safe such as a
    widget's ``post_message``.
    """

    def __init__(
        self,
        root: Path,
        caption_extension: str,
        report: Callable[[set[str], dict[str, str]], object],
        poll: bool = False,
    ) -> None:
        self.root = Path(root).resolve()
        extensions = (*IMAGE_EXTENSIONS, caption_extension.lower())
        self.observer = PollingObserver(timeout=1.0) if poll else Observer()
        self.observer.schedule(
            _Handler(self.root, extensions, report),
            str(self.root),
            recursive=True,
            event_filter=WATCHED_EVENTS,
        )

    def start(self) -> None:
        """Start watching (returns at once)."""
        self.observer.daemon = True
        self.observer.start()

    def stop(self) -> None:
        """Stop the observer thread."""
        self.observer.stop()
        self.observer.join(timeout=2)


# Files of a run folder whose change the runs section shows (samples and LoRA files by suffix).
RUN_FILES = frozenset({"events.jsonl", "status.json", "train.log", "config.toml", "sweep.json"})
RUN_SUFFIXES = (".png", ".safetensors")


class _RunsHandler(FileSystemEventHandler):
    def __init__(self, report: Callable[[set[Path]], object]) -> None:
        self.report = report

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            return
        paths = {event.src_path}
        if getattr(event, "dest_path", ""):
            paths.add(event.dest_path)
        relevant = set()
        for raw in paths:
            path = Path(raw.decode() if isinstance(raw, bytes) else raw)
            # Atomic writes go through ".name.tmp" files first: only the final name matters.
            if path.name.startswith("."):
                continue
            if path.name in RUN_FILES or path.suffix.lower() in RUN_SUFFIXES:
                relevant.add(path)
        if relevant:
            self.report(relevant)


class RunsWatcher:
    """Watches runs folders (recursively) and reports changed run files.

    ``report`` receives absolute paths of changed ``events.jsonl``, ``status.json``,
    ``train.log``, ``config.toml``, ``sweep.json``, sample PNGs and LoRA files, on the
    observer's thread: pass something thread-safe such as a screen's ``post_message``.
    Folders that do not exist yet are skipped; :meth:`watch` adds them once they do.
    """

    def __init__(self, report: Callable[[set[Path]], object], poll: bool = False) -> None:
        self.observer = PollingObserver(timeout=0.5) if poll else Observer()
        self.observer.daemon = True
        self.handler = _RunsHandler(report)
        self.watched: set[Path] = set()
        self.started = False

    def watch(self, folders: list[Path]) -> None:
        """Watch each existing folder not watched yet (safe to call again with the same list)."""
        for folder in folders:
            folder = Path(folder).resolve()
            if folder in self.watched or not folder.is_dir():
                continue
            try:
                self.observer.schedule(self.handler, str(folder), recursive=True, event_filter=WATCHED_EVENTS)
            except OSError:  # out of inotify watches, or the folder vanished meanwhile
                continue
            self.watched.add(folder)
        if not self.started:
            self.observer.start()
            self.started = True

    def stop(self) -> None:
        """Stop the observer thread."""
        if self.started:
            self.observer.stop()
            self.observer.join(timeout=2)
