"""Resume-state saves: atomic folders, checked against their manifest, the last two kept."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from kiln.engine.train.checkpoint import (
    MANIFEST,
    PAYLOAD,
    config_changes,
    latest_complete,
    load_save,
    save_problem,
    saves,
    write_save,
)


def payload(step: int) -> dict:
    return {"state": {"step": step}, "weights": torch.full((4, 4), float(step)), "pair": (torch.ones(2), 3)}


def test_save_round_trips_and_keeps_the_last_two(tmp_path: Path) -> None:
    for step in (2, 4, 6):
        path = write_save(tmp_path, step, payload(step), {"epoch": 1, "config": {"train": {"seed": 1}}})
        assert path.name == f"step-{step:06d}"
    assert [p.name for p in saves(tmp_path)] == ["step-000006", "step-000004"]
    assert not list(tmp_path.glob("tmp-*"))
    loaded = load_save(tmp_path / "step-000006")
    assert loaded["state"] == {"step": 6} and torch.equal(loaded["weights"], torch.full((4, 4), 6.0))
    manifest = json.loads((tmp_path / "step-000006" / MANIFEST).read_text())
    assert manifest["step"] == 6 and manifest["epoch"] == 1 and manifest["files"][PAYLOAD]["bytes"] > 0


def test_damaged_or_unfinished_saves_are_passed_over(tmp_path: Path) -> None:
    write_save(tmp_path, 2, payload(2), {})
    newest = write_save(tmp_path, 4, payload(4), {})
    data = bytearray((newest / PAYLOAD).read_bytes())
    data[-1] ^= 0xFF  # one flipped bit: same size, wrong checksum
    (newest / PAYLOAD).write_bytes(bytes(data))
    assert save_problem(newest) == f"{PAYLOAD} does not match its checksum"
    path, skipped = latest_complete(tmp_path)
    assert path == tmp_path / "step-000002" and skipped == [
        (newest, f"{PAYLOAD} does not match its checksum")
    ]
    (tmp_path / "step-000002" / MANIFEST).unlink()  # as if killed before the manifest
    assert latest_complete(tmp_path)[0] is None
    assert save_problem(tmp_path / "step-000002") == "no manifest (the save did not finish)"
    # A new save of a damaged step replaces it.
    assert save_problem(write_save(tmp_path, 4, payload(4), {})) is None


def test_leftover_tmp_folders_of_dead_writers_are_removed(tmp_path: Path) -> None:
    (tmp_path / "tmp-000008-999999").mkdir(parents=True)
    (tmp_path / "tmp-000008-999999" / PAYLOAD).write_bytes(b"half")
    write_save(tmp_path, 10, payload(10), {})
    assert [p.name for p in tmp_path.iterdir()] == ["step-000010"]


def test_config_changes_name_each_changed_key() -> None:
    saved = {"train": {"unet_lr": 1e-4, "epochs": 10}, "sample": {"prompts": ["a"]}}
    current = {"train": {"unet_lr": 2e-4, "epochs": 10}, "sample": {"prompts": ("a", "b")}}
    assert config_changes(saved, current) == ["sample.prompts", "train.unet_lr"]
    assert (
        config_changes(saved, {"train": {"unet_lr": 1e-4, "epochs": 10}, "sample": {"prompts": ("a",)}}) == []
    )
