"""The runs-folder watcher reports run files (atomic renames included) and nothing else."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from kiln.tui.watch import RunsWatcher


@pytest.mark.parametrize("poll", [False, True], ids=["inotify", "polling"])
def test_reports_run_files_and_ignores_temp_and_other_files(tmp_path: Path, poll: bool) -> None:
    runs = tmp_path / "runs"
    run_dir = runs / "20260301-140500-pot"
    run_dir.mkdir(parents=True)
    seen: set[Path] = set()
    lock = threading.Lock()

    def report(paths: set[Path]) -> None:
        with lock:
            seen.update(paths)

    watcher = RunsWatcher(report, poll=poll)
    watcher.watch([runs, tmp_path / "not-there-yet"])
    try:
        time.sleep(0.3)
        (run_dir / "events.jsonl").write_text("{}\n")
        (run_dir / "notes.md").write_text("mine")
        tmp = run_dir / ".status.json.tmp"
        tmp.write_text("{}")
        os.replace(tmp, run_dir / "status.json")  # an atomic write arrives as a move
        (run_dir / "samples" / "e001").mkdir(parents=True)
        (run_dir / "samples" / "e001" / "00.png").write_bytes(b"png")
        deadline = time.monotonic() + 5
        wanted = {run_dir / "events.jsonl", run_dir / "status.json", run_dir / "samples" / "e001" / "00.png"}
        while time.monotonic() < deadline:
            with lock:
                if wanted <= seen:
                    break
            time.sleep(0.05)
        with lock:
            assert wanted <= seen
            assert not any(path.name in ("notes.md", ".status.json.tmp") for path in seen)
        later = tmp_path / "not-there-yet"
        later.mkdir()
        watcher.watch([later])  # a folder made after the start is watched once asked again
        assert later.resolve() in watcher.watched
    finally:
        watcher.stop()
