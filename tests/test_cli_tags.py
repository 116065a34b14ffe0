"""``kiln tags``: dry-run diff, JSON, undo and history from the command line, exit codes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from kiln.cli import main

CAPTIONS = {
    "10_pot/a.txt": "a red pot on a wooden table, kilnpot",
    "10_pot/b.txt": "a jar on a wooden shelf, kilnpot",
    "5_sky/c.txt": "kilnsky, night, moon, night",
}


@pytest.fixture
def root(make_dataset: Callable[..., Path]) -> Path:
    return make_dataset({"10_pot/a.png": 50, "10_pot/b.png": 50, "5_sky/c.png": 50}, CAPTIONS)


def snapshot(root: Path) -> dict[str, str]:
    return {rel: (root / rel).read_text() for rel in CAPTIONS}


def test_dry_run_shows_the_diff_and_writes_nothing(root: Path, capsys) -> None:
    assert main(["tags", str(root), "replace", "wooden", "oak", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "10_pot/a.txt" in out
    assert "- a red pot on a wooden table, kilnpot" in out and "+ a red pot on a oak table, kilnpot" in out
    assert "2 of 3 caption(s) would change (dry run, nothing written)" in out
    assert snapshot(root) == CAPTIONS
    assert not main(["tags", str(root), "history", "--json"])
    assert json.loads(capsys.readouterr().out) == []


def test_json_apply_then_undo_from_a_new_process_state(root: Path, capsys) -> None:
    assert main(["tags", str(root), "dedupe", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["changes"] == [
        {
            "image": "5_sky/c.png",
            "caption": "5_sky/c.txt",
            "before": "kilnsky, night, moon, night",
            "after": "kilnsky, night, moon",
        }
    ]
    assert data["dry_run"] is False and data["undo_step"] == 1 and data["considered"] == 3
    assert main(["tags", str(root), "add", "photo", "--position", "first", "--concept", "pot"]) == 0
    assert (root / "10_pot/b.txt").read_text() == "photo, a jar on a wooden shelf, kilnpot"
    capsys.readouterr()
    assert main(["tags", str(root), "history"]) == 0
    history = capsys.readouterr().out
    assert history.index("add photo (first)") < history.index("dedupe")
    assert main(["tags", str(root), "undo", "--json"]) == 0
    assert sorted(json.loads(capsys.readouterr().out)["restored"]) == ["10_pot/a.txt", "10_pot/b.txt"]
    assert main(["tags", str(root), "undo"]) == 0
    assert "restored 1 caption(s)" in capsys.readouterr().out
    assert snapshot(root) == CAPTIONS
    assert main(["tags", str(root), "undo"]) == 1
    assert "nothing to undo" in capsys.readouterr().err


def test_stats_json_and_filters(root: Path, capsys) -> None:
    assert main(["tags", str(root), "stats", "--json", "--top", "2"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["captions"] == 3
    assert data["tags"] == [{"tag": "kilnpot", "count": 2}, {"tag": "a jar on a wooden shelf", "count": 1}]
    assert data["concepts"]["sky"]["tags"] == [{"tag": "kilnsky", "count": 1}, {"tag": "moon", "count": 1}]
    assert main(["tags", str(root), "remove", "kilnpot", "--match", "10_pot/a.*"]) == 0
    assert (root / "10_pot/a.txt").read_text() == "a red pot on a wooden table"
    assert (root / "10_pot/b.txt").read_text() == CAPTIONS["10_pot/b.txt"]
    assert main(["tags", str(root), "front", "moon", "--with-tag", "moon"]) == 0
    assert (root / "5_sky/c.txt").read_text() == "moon, kilnsky, night, night"
    assert main(["tags", str(root), "sort", "--json", "--dry-run"]) == 0
    assert "stats" not in capsys.readouterr().err


def test_bad_usage_exits_2_and_leaves_captions(root: Path, capsys) -> None:
    for argv in (
        ["tags", str(root)],
        ["tags", str(root), "explode"],
        ["tags", str(root), "add"],
        ["tags", str(root), "add", "x", "--position", "middle"],
    ):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2, argv
    assert main(["tags", str(root), "remove", "(", "--regex"]) == 2
    assert "regex" in capsys.readouterr().err
    assert main(["tags", str(root), "add", " , "]) == 2
    assert main(["tags", str(root / "nope"), "stats"]) == 1
    assert snapshot(root) == CAPTIONS
