"""Issue 14 item 10: `kiln sweep --report --tec` names only options that exist; a foreground sweep
shows the step progress of the job it runs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from kiln.cli import main

from tests.runfolders import write_run, write_sweep


def sweep_options() -> set[str]:
    from kiln.cli import build_parser

    parser = build_parser(only="sweep")
    sub = next(a for a in parser._actions if a.dest == "command").choices["sweep"]
    return {option for action in sub._actions for option in action.option_strings}


def test_report_tec_notes_name_only_options_that_exist(tmp_path: Path, capsys) -> None:
    sweep = write_sweep(tmp_path, "lr", [({"train.unet_lr": 1e-4}, "done")])
    run_dir = next(path for path in sweep.iterdir() if path.is_dir() and (path / "config.toml").is_file())
    (run_dir / "config.toml").write_text('[output]\nname = "lr-01"\n')  # no model.base
    import torch
    from safetensors.torch import save_file

    (run_dir / "lora").mkdir(exist_ok=True)
    save_file({"x": torch.zeros(1)}, str(run_dir / "lora" / "lr-01-e001.safetensors"), {"ss_epoch": "1"})
    main(["sweep", "--report", str(sweep), "--tec", "--no-sheet", "--no-cook"])
    err = capsys.readouterr().err
    assert "no TEC figure" in err and "model.base" in err
    outside_commands = re.sub(r"`kiln tec[^`]*`", "", err)
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", outside_commands))
    assert named <= sweep_options(), named - sweep_options()


def test_a_foreground_sweep_prints_the_running_jobs_steps(tmp_path: Path, capsys, monkeypatch) -> None:
    from kiln.cli import sweep as sweep_cli

    sweep_dir = tmp_path / "sweep-20260303-090000-lr"
    sweep_dir.mkdir()
    run_dir = write_run(sweep_dir, "lr-01", state="running", steps=60)
    monkeypatch.setattr(sweep_cli, "PROGRESS_EVERY_S", 0.0)

    def fake_queue(folder: Path, parallel: int, should_stop, on_change, **kwargs: Any) -> dict:
        record = {"runs": [{"index": 1, "state": "running", "run_dir": run_dir.name, "config": "c.toml"}]}
        on_change(record)
        assert should_stop() is False
        record["runs"][0]["state"] = "done"
        on_change(record)
        return record

    monkeypatch.setattr("kiln.engine.runs.sweep.run_queue", fake_queue)
    monkeypatch.setattr("kiln.engine.runs.sweep_report.sweep_report", lambda folder: None)
    monkeypatch.setattr(sweep_cli, "print_report", lambda result, sheet: None)
    assert sweep_cli.run_queue_here(sweep_dir, parallel=1, quiet=False) == 0
    err = capsys.readouterr().err
    assert "run 1/1 step 40/60  epoch 3/3  loss" in err
