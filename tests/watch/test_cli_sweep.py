"""kiln sweep without training: --dry-run, bad sweep files, --report on fake runs."""

from __future__ import annotations

import json
from pathlib import Path

from kiln.cli import main

from tests.runfolders import write_sweep

BASE = '[model]\nbase = "model"\n[dataset]\npath = "data"\n'


def test_dry_run_lists_the_runs_with_their_steps(tmp_path: Path, capsys) -> None:
    (tmp_path / "run.toml").write_text(BASE)
    sweep = tmp_path / "s.toml"
    sweep.write_text(
        'base = "run.toml"\nmax_steps = 1200\n[[runs]]\n"train.unet_lr" = 1e-4\n[[runs]]\n"train.seed" = 7\n'
    )
    assert main(["sweep", str(sweep), "--dry-run", "--json"]) == 0
    out, err = capsys.readouterr()
    data = json.loads(out)
    assert [run["overrides"] for run in data["runs"]] == [{"train.unet_lr": 1e-4}, {"train.seed": 7}]
    assert [run["max_steps"] for run in data["runs"]] == [1200, 1200]
    assert "1200 steps is outside the guide's 500..1000" in err
    assert not (tmp_path / "data" / "runs").exists()  # a dry run makes nothing


def test_unknown_key_is_a_usage_error_naming_it(tmp_path: Path, capsys) -> None:
    (tmp_path / "run.toml").write_text(BASE)
    sweep = tmp_path / "s.toml"
    sweep.write_text('base = "run.toml"\n[grid]\n"network.dim" = [8, 16]\n')
    assert main(["sweep", str(sweep)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown key network.dim" in err


def test_report_on_a_folder_that_is_not_a_sweep_fails_in_one_line(tmp_path: Path, capsys) -> None:
    assert main(["sweep", "--report", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "not a sweep folder" in err and err.count("\n") == 1
    assert main(["sweep"]) == 2


def test_text_report_has_the_table_run_folders_and_a_contact_sheet(tmp_path: Path, capsys) -> None:
    sweep_dir = write_sweep(
        tmp_path, "lr", [({"train.unet_lr": 1e-4}, "done"), ({"train.unet_lr": 3e-4}, "failed")]
    )
    assert main(["sweep", "--report", str(sweep_dir), "--no-cook"]) == 0
    out = capsys.readouterr().out
    assert "sweep lr" in out and "unet_lr" in out and "0.0003" in out and "failed" in out
    assert f"#1 {sweep_dir / '20260303-090001-lr-01'}" in out
    assert f"contact sheet: {sweep_dir / 'contact-sheet.png'}" in out
    assert main(["sweep", "--report", str(sweep_dir), "--json", "--no-sheet"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [run["state"] for run in data["runs"]] == ["done", "failed"] and data["contact_sheet"] is None


def test_gpus_past_the_visible_ones_are_refused_before_a_sweep_folder_exists(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    (tmp_path / "run.toml").write_text(BASE)
    sweep = tmp_path / "s.toml"
    sweep.write_text('base = "run.toml"\n[grid]\n"train.seed" = [1, 2]\n')
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    assert main(["sweep", str(sweep), "--parallel", "2", "--gpus", "0,2"]) != 0
    err = capsys.readouterr().err
    assert "--gpus: there is no GPU 2 here (2 visible: 0, 1)" in err and err.count("\n") == 1
    assert not (tmp_path / "data" / "runs").exists()
