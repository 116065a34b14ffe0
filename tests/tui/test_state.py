"""What the workbench leaves on disk: no ``.kiln/`` in a folder that is not a dataset, the plan
form kept per dataset across restarts, and no library progress bars on stderr."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from kiln.tui.screens.plan import PlanScreen
from kiln.tui.widgets.plan_field import PlanField
from textual.widgets import Checkbox, Select

from tests.tui.helpers import make_app, wait_for

SIZES = [(80, 24), (120, 40)]


@pytest.mark.parametrize("size", SIZES)
async def test_no_state_folder_in_a_folder_that_is_not_a_dataset(tmp_path: Path, size) -> None:
    (tmp_path / "notes.txt").write_text("not a dataset", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    app = make_app(tmp_path)
    async with app.run_test(size=size) as pilot:
        await pilot.press("2")
        await wait_for(pilot, lambda: isinstance(app.screen, PlanScreen))
        await pilot.press("3", "1")
        await pilot.pause(0.7)
    assert not (tmp_path / ".kiln").exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["notes.txt", "sub"]


def test_cli_commands_on_a_folder_that_is_not_a_dataset_leave_no_state(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a dataset", encoding="utf-8")
    for command in ("calc", "dsb", "lint"):
        done = subprocess.run(
            [sys.executable, "-m", "kiln.cli", command, str(tmp_path)],
            capture_output=True,
            text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
            timeout=120,
        )
        assert done.returncode != 0 and "no images" in done.stderr
    assert not (tmp_path / ".kiln").exists()


def field(screen: PlanScreen, key: str) -> str:
    return screen.query_one(f"#field-{key}", PlanField).text


@pytest.mark.parametrize("size", SIZES)
async def test_plan_settings_are_kept_across_restarts(sample_copy: Path, size) -> None:
    app = make_app(sample_copy)
    async with app.run_test(size=size) as pilot:
        await pilot.press("2")
        await wait_for(pilot, lambda: isinstance(app.screen, PlanScreen))
        screen = app.screen
        screen.query_one("#field-batch", PlanField).input.value = "2"
        screen.query_one("#field-epochs", PlanField).input.value = "14"
        screen.query_one("#field-unet_lr", PlanField).input.value = "3e-4"
        screen.query_one("#precision", Select).value = "bf16"
        screen.query_one("#subject", Select).value = "artist-style"
        screen.query_one("#no_upscale", Checkbox).value = True
        await pilot.pause(0.8)
    again = make_app(sample_copy)
    async with again.run_test(size=size) as pilot:
        await pilot.press("2")
        await wait_for(pilot, lambda: isinstance(again.screen, PlanScreen))
        screen = again.screen
        kept = (field(screen, "batch"), field(screen, "epochs"), field(screen, "unet_lr"))
        assert kept == ("2", "14", "3e-4")
        assert screen.query_one("#precision", Select).value == "bf16"
        assert screen.read_inputs().subject == "artist-style"
        assert screen.query_one("#no_upscale", Checkbox).value is True
        assert screen.read_inputs().texts["batch"] == "2"
    # Another dataset starts from the defaults.
    other = sample_copy.parent / "other"
    (other / "3_cat").mkdir(parents=True)
    os.link(sample_copy / "10_kilnpot" / "pot_01.jpg", other / "3_cat" / "a.jpg")
    fresh = make_app(other)
    async with fresh.run_test(size=size) as pilot:
        await pilot.press("2")
        await wait_for(pilot, lambda: isinstance(fresh.screen, PlanScreen))
        assert field(fresh.screen, "epochs") != "14"
        assert fresh.screen.read_inputs().subject is None


@pytest.mark.slow
def test_tiny_model_writes_no_progress_bars(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kiln.cli", "tiny-model", str(tmp_path / "tiny")],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "Writing model shards" not in done.stderr
    assert "it/s" not in done.stderr and "%|" not in done.stderr
