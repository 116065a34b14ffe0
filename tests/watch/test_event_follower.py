"""The events reader: partial lines, truncation, replacement, bad lines, a vanished run folder."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from kiln.engine.runs.events import EVENTS_FILE, EventFollower, EventWriter, read_events


def line(kind: str, **fields) -> str:
    return json.dumps({"t": 1.5, "type": kind, **fields}) + "\n"


def append(run_dir: Path, text: str | bytes) -> None:
    data = text.encode() if isinstance(text, str) else text
    with open(run_dir / EVENTS_FILE, "ab") as handle:
        handle.write(data)


def test_reads_only_what_was_written_since_the_last_read(tmp_path: Path) -> None:
    append(tmp_path, line("start") + line("step", step=1, loss=0.5))
    follower = EventFollower(tmp_path)
    assert [e["type"] for e in follower.read().events] == ["start", "step"]
    assert follower.read().events == []
    append(tmp_path, line("step", step=2, loss=0.4))
    read = follower.read()
    assert [e["step"] for e in read.events] == [2]
    assert not read.restarted and not read.missing


def test_partial_last_line_waits_for_its_newline(tmp_path: Path) -> None:
    full = line("step", step=1, loss=0.5)
    append(tmp_path, line("start") + full[:10])
    follower = EventFollower(tmp_path)
    read = follower.read()
    assert [e["type"] for e in read.events] == ["start"] and read.malformed == 0
    append(tmp_path, full[10:-1])
    assert follower.read().events == []
    append(tmp_path, "\n")
    assert [e["step"] for e in follower.read().events] == [1]
    assert follower.malformed == 0


def test_saved_offset_skips_what_was_read(tmp_path: Path) -> None:
    append(tmp_path, line("start") + line("step", step=1, loss=0.5))
    first = EventFollower(tmp_path)
    first.read()
    append(tmp_path, line("step", step=2, loss=0.4))
    again = EventFollower(tmp_path, offset=first.offset, inode=first.inode)
    assert [e["step"] for e in again.read().events] == [2]


def test_truncated_file_restarts_from_zero_and_says_so(tmp_path: Path) -> None:
    append(tmp_path, line("start") + line("step", step=1, loss=0.5) + line("step", step=2, loss=0.4))
    follower = EventFollower(tmp_path)
    follower.read()
    with open(tmp_path / EVENTS_FILE, "r+b") as handle:
        handle.truncate(0)
    append(tmp_path, line("start", name="again"))
    read = follower.read()
    assert read.restarted
    assert [e.get("name") for e in read.events] == ["again"]
    assert follower.restarts == 1


def test_replaced_file_restarts_even_when_longer(tmp_path: Path) -> None:
    append(tmp_path, line("start", name="old"))
    follower = EventFollower(tmp_path)
    follower.read()
    # Rotation: the old file moves away and a new one, already longer, takes its name.
    os.replace(tmp_path / EVENTS_FILE, tmp_path / "events.old")
    append(
        tmp_path, line("start", name="new") + line("step", step=1, loss=0.3) + line("step", step=2, loss=0.2)
    )
    read = follower.read()
    assert read.restarted
    assert [e["type"] for e in read.events] == ["start", "step", "step"]
    assert read.events[0]["name"] == "new"


def test_rewritten_in_place_with_other_content_restarts(tmp_path: Path) -> None:
    append(tmp_path, line("start", name="aaaa"))
    follower = EventFollower(tmp_path)
    follower.read()
    # Same inode, same or larger size, different bytes: an editor or `cp` over it.
    with open(tmp_path / EVENTS_FILE, "r+b") as handle:
        handle.write(line("start", name="bbbb").encode() + line("done").encode())
    read = follower.read()
    assert read.restarted and [e["type"] for e in read.events] == ["start", "done"]


def test_malformed_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    append(
        tmp_path,
        line("start")
        + "not json\n"
        + "[1, 2]\n"
        + json.dumps({"type": "step"})
        + "\n"  # no t
        + json.dumps({"t": 1, "type": 7})
        + "\n"  # type not a string
        + "\n"
        + line("step", step=1, loss=0.5),
    )
    append(tmp_path, b"\xff\xfe broken bytes\n")
    follower = EventFollower(tmp_path)
    read = follower.read()
    assert [e["type"] for e in read.events] == ["start", "step"]
    assert read.malformed == 5 and follower.malformed == 5


def test_missing_file_and_vanished_run_folder_are_reported_not_raised(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    follower = EventFollower(run_dir)
    assert follower.read().missing
    run_dir.mkdir()
    append(run_dir, line("start"))
    assert [e["type"] for e in follower.read().events] == ["start"]
    shutil.rmtree(run_dir)
    read = follower.read()
    assert read.missing and read.events == []
    run_dir.mkdir()
    append(run_dir, line("start", name="fresh"))
    read = follower.read()
    assert read.restarted and read.events[0]["name"] == "fresh"


def test_long_backlog_comes_in_several_reads(tmp_path: Path, monkeypatch) -> None:
    import kiln.engine.runs.events as events

    monkeypatch.setattr(events, "READ_LIMIT_BYTES", 100)
    append(tmp_path, "".join(line("step", step=i, loss=0.1) for i in range(1, 21)))
    follower = EventFollower(tmp_path)
    first = follower.read()
    assert first.more and 0 < len(first.events) < 20
    assert [e["step"] for e in follower.read_all().events][-1] == 20


def test_follows_what_the_event_writer_writes(tmp_path: Path) -> None:
    writer = EventWriter(tmp_path, name="x")
    follower = EventFollower(tmp_path)
    writer.emit("start", total=3)
    assert [e["type"] for e in follower.read().events] == ["start"]
    writer.emit("step", step=1, loss=0.5)
    writer.emit("done", step=1)
    writer.close()
    assert [e["type"] for e in follower.read().events] == ["step", "done"]
    assert [e["type"] for e in read_events(tmp_path)] == ["start", "step", "done"]
