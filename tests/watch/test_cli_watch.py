"""kiln watch: the compact view fits a 40x8 pane, --once --json, exit codes, bad input."""

from __future__ import annotations

import json
from pathlib import Path

from kiln.cli import main
from kiln.cli.watch import watch_view
from kiln.engine.runs.feed import RunFeed
from kiln.engine.runs.folders import read_run
from kiln.engine.runs.readout import duration, progress_text, rate_text, sparkline
from rich.console import Console

from tests.runfolders import write_run


def render(run_dir: Path, width: int) -> list[str]:
    feed = RunFeed(run_dir)
    feed.poll()
    console = Console(width=width, record=True, color_system=None, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(watch_view(read_run(run_dir), feed.history, width))
    return console.export_text().splitlines()


def test_view_fits_a_40_by_8_pane(tmp_path: Path) -> None:
    run_dir = write_run(
        tmp_path, "a-rather-long-run-name-for-a-pane", state="failed", error="CUDA out of memory"
    )
    lines = render(run_dir, 40)
    assert len(lines) <= 6 and all(len(line) <= 40 for line in lines)
    assert lines[0].startswith("failed e3/3 a-rather-long-run-name") and lines[0].endswith("…")
    assert "40/60" in lines[1]
    assert lines[2].startswith("loss 0.") and any(ch in lines[2] for ch in "▁▂▃▄▅▆▇█")
    assert lines[-1].startswith("failed: CUDA out of memory")


def test_the_view_shows_the_runs_peak_memory(tmp_path: Path) -> None:
    lines = render(write_run(tmp_path, "pot"), 80)
    assert "peak 6.1 GB VRAM" in lines[3]


def test_once_json_prints_status_fields_and_the_last_event(tmp_path: Path, capsys) -> None:
    run_dir = write_run(tmp_path, "pot")
    assert main(["watch", str(run_dir), "--once", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["state"] == "done" and data["step"] == 60 and data["total"] == 60
    assert data["epoch"] == 3 and isinstance(data["loss"], float)
    assert data["it_s"] is None and data["eta_s"] == 0
    assert (data["peak_mb"], data["memory"]) == (6246.4, "vram")
    assert data["last_event"]["type"] == "done" and data["readonly"] is False


def test_watch_exits_with_the_runs_outcome(tmp_path: Path, capsys) -> None:
    assert main(["watch", str(write_run(tmp_path, "ok")), "--interval", "0.05"]) == 0
    failed = write_run(tmp_path, "bad", stamp="20260301-150000", state="failed")
    assert main(["watch", str(failed), "--interval", "0.05"]) == 1
    cancelled = write_run(tmp_path, "stop", stamp="20260301-160000", state="cancelled")
    assert main(["watch", "20260301-16", "--runs", str(tmp_path)]) == 130  # a name prefix works
    assert "cancelled" in capsys.readouterr().out
    assert cancelled.is_dir()


def test_bad_input_is_one_line(tmp_path: Path, capsys) -> None:
    assert main(["watch", "nothing", "--runs", str(tmp_path)]) == 1
    assert capsys.readouterr().err.count("\n") == 1
    assert main(["watch", str(write_run(tmp_path, "ok")), "--json"]) == 2
    assert "--json goes with --once" in capsys.readouterr().err


def test_readout_texts() -> None:
    assert [duration(s) for s in (None, 5, 552, 3 * 3600 + 300, 2 * 86400 + 4 * 3600)] == [
        "-",
        "5s",
        "9m12s",
        "3h05m",
        "2d04h",
    ]
    assert rate_text(2.5) == "2.50it/s" and rate_text(0.25) == "4.0s/it" and rate_text(None) == "-"
    assert progress_text(120, 800) == "120/800 15%" and progress_text(0, 0) == "-"
    assert sparkline([3, 2, 1], 10) == "█▅▁"
    line = sparkline([float(v) for v in range(100, 0, -1)], 20)
    assert len(line) == 20 and line[0] == "█" and line[-1] == "▁"
    assert sparkline([1.0] * 5, 3) == "▅▅▅" and sparkline([], 5) == ""
