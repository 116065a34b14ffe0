"""Runs and state files under bad inputs and broken state (issue 20, items 5-13; see
docs/reliability.md). Each test fails on the Kiln before the fix: a traceback, a wrong count,
a lost event or a live run called dead. The two-process resume race is in
tests/train/test_run_lock.py (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kiln.cli import main
from kiln.engine.errors import ConfigError, ImageError, RunError
from kiln.engine.runs import runlock
from kiln.engine.runs.events import EventFollower, EventWriter, read_events
from kiln.engine.runs.folders import check_resumable, read_run
from kiln.engine.runs.procinfo import HOST, process_start
from PIL import Image

from tests.runfolders import write_run


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    try:
        code = main(list(args))
    except SystemExit as exc:
        code = int(exc.code)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(err: str) -> str:
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


# ----------------------------------------------------------------- 5: one trainer per run folder


HOLD_LOCK = (
    "import sys, time\n"
    "from kiln.engine.runs import runlock\n"
    "runlock.acquire(sys.argv[1])\n"
    "print('held', flush=True)\n"
    "time.sleep(120)\n"
)


def hold_lock(run_dir: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(run_dir)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "held"
    return process


def test_a_second_lock_on_a_run_folder_is_refused_naming_the_holder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("kiln.engine.runs.folders.EXITING_WAIT_S", 0.3)
    run_dir = write_run(tmp_path, "pot", state="cancelled")
    assert runlock.holder(run_dir) is None
    holder = hold_lock(run_dir)
    try:
        assert runlock.holder(run_dir) == holder.pid
        with pytest.raises(runlock.RunBusy, match=f"being trained by process {holder.pid}"):
            runlock.acquire(run_dir, wait_s=0.2)
        with pytest.raises(runlock.RunBusy, match=f"process {holder.pid}"):
            check_resumable(run_dir)
    finally:
        holder.kill()
        holder.wait()
    assert runlock.holder(run_dir) is None  # the kernel let go with the process
    fd = runlock.acquire(run_dir)
    os.close(fd)


@pytest.mark.slow
def test_a_worker_started_on_a_held_run_exits_2_before_touching_it(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, "pot", state="cancelled")
    before = {name: (run_dir / name).read_bytes() for name in ("events.jsonl", "status.json")}
    holder = hold_lock(run_dir)
    try:
        worker = subprocess.run(
            [sys.executable, "-m", "kiln.engine.runs.worker", str(run_dir), "--resume", "--cpu"],
            capture_output=True,
            text=True,
            timeout=120,
            env={k: v for k, v in os.environ.items() if k != runlock.LOCK_FD_ENV},
        )
    finally:
        holder.kill()
        holder.wait()
    assert worker.returncode == 2, worker.stderr
    assert one_line_error(worker.stderr).startswith("kiln: ") and f"process {holder.pid}" in worker.stderr
    assert {name: (run_dir / name).read_bytes() for name in before} == before


# ------------------------------------------------------------------- 7: output.dir is a file


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    (tmp_path / "model").mkdir()
    data = tmp_path / "data" / "3_pot"
    data.mkdir(parents=True)
    Image.new("RGB", (64, 64)).save(data / "a.png")
    path = tmp_path / "run.toml"
    path.write_text(
        f'[model]\nbase = "{tmp_path / "model"}"\n\n[dataset]\npath = "{tmp_path / "data"}"\n',
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize("flag", ["--set", "--output"])
def test_output_dir_that_is_a_file_is_one_line_exit_2(config_file: Path, flag: str, capsys) -> None:
    target = config_file.parent / "not-a-folder"
    target.write_text("mine\n")
    value = f"output.dir={target}" if flag == "--set" else str(target)
    code, _, err = run_cli(capsys, "train", str(config_file), flag, value, "--cpu")
    assert code == 2
    assert "output.dir" in one_line_error(err) and "not a folder" in err
    assert target.read_text() == "mine\n"
    under = target / "runs"  # a path under a file: the same line, naming the file
    value = f"output.dir={under}" if flag == "--set" else str(under)
    code, _, err = run_cli(capsys, "train", str(config_file), flag, value, "--cpu")
    assert code == 2 and f"{target} is a file" in one_line_error(err)


# ---------------------------------------------------------------- 9: a truncated image


@pytest.fixture
def truncated_dataset(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / "3_pot").mkdir(parents=True)
    Image.new("RGB", (64, 64), (120, 60, 30)).save(root / "3_pot" / "good.png")
    Image.effect_noise((96, 64), 60).convert("RGB").save(root / "3_pot" / "good.jpg", quality=90)
    Image.effect_noise((96, 64), 60).convert("RGB").save(root / "3_pot" / "cut.jpg", quality=90)
    data = (root / "3_pot" / "cut.jpg").read_bytes()
    (root / "3_pot" / "cut.jpg").write_bytes(data[: len(data) // 2])
    Image.new("RGB", (64, 64)).save(root / "3_pot" / "cut.png")
    data = (root / "3_pot" / "cut.png").read_bytes()
    (root / "3_pot" / "cut.png").write_bytes(data[:-30])
    return root


def test_truncated_images_are_left_out_of_calc_with_each_named(truncated_dataset: Path, capsys) -> None:
    for first in ("calc", "dsb"):  # before and after the analysis cache knows the file
        if first == "dsb":
            assert run_cli(capsys, "dsb", str(truncated_dataset), "--json")[0] in (0, 1)
        code, out, err = run_cli(capsys, "calc", str(truncated_dataset), "--json")
        assert code == 0, err
        data = json.loads(out)
        assert data["images"] == 2
        notice = next(w for w in data["warnings"] if w["id"] == "unreadable-images")
        assert "3_pot/cut.jpg" in notice["message"] and "3_pot/cut.png" in notice["message"]
        assert "training set" in notice["message"]


def test_truncated_images_are_left_out_of_the_training_set_and_a_late_one_is_named(
    truncated_dataset: Path,
) -> None:
    from kiln.engine.train.config import config_from_mapping
    from kiln.engine.train.data import load_pixels, training_set

    config = config_from_mapping({"dataset": {"path": str(truncated_dataset)}})
    found = training_set(config.dataset)
    assert sorted(image.rel_path for image in found.images) == ["3_pot/good.jpg", "3_pot/good.png"]
    assert {rel for rel, _ in found.unreadable} == {"3_pot/cut.jpg", "3_pot/cut.png"}
    assert any(w.startswith("3_pot/cut.jpg: truncated") and "not trained" in w for w in found.warnings)
    # A file cut short after the plan was made: the step's error names it.
    image = next(image for image in found.images if image.rel_path == "3_pot/good.jpg")
    data = image.path.read_bytes()
    image.path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=r"^3_pot/good\.jpg: truncated"):
        load_pixels(image)


# ------------------------------------------------------- 10: a partial last line in events.jsonl


def test_a_partial_last_event_line_does_not_swallow_the_next_event(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, "pot", state="cancelled")
    events = run_dir / "events.jsonl"
    complete = len(read_events(run_dir))
    with open(events, "a", encoding="utf-8") as handle:
        handle.write('{"t": 1772373900.0, "type": "step", "st')  # a writer killed mid-line
    assert len(read_events(run_dir)) == complete  # readers leave the partial line alone
    writer = EventWriter(run_dir, name="pot", resume=True, heartbeat_s=0)
    writer.emit("resumed", step=40, total=60, save="step-000040")
    writer.close()
    follower = EventFollower(run_dir)
    after = follower.read_all().events
    assert len(after) == complete + 1 and after[-1]["type"] == "resumed"
    assert follower.malformed == 1  # only the fragment is lost
    assert events.read_bytes().endswith(b"\n")


# ---------------------------------------------- 11: an unreadable status.json of a live run


def live_run(tmp_path: Path, holder: subprocess.Popen | None = None) -> Path:
    run_dir = write_run(tmp_path, "pot", state="cancelled")
    status = json.loads((run_dir / "status.json").read_text())
    status.update(state="running", pid=os.getpid(), host=HOST, proc_start=process_start(os.getpid()))
    status.update(updated=time.time())
    (run_dir / "status.json").write_text(json.dumps(status))
    return run_dir


def test_an_unreadable_status_of_a_live_run_reads_running_from_its_process(tmp_path: Path) -> None:
    run_dir = live_run(tmp_path)
    assert read_run(run_dir).state == "running"
    holder = hold_lock(run_dir)
    try:
        (run_dir / "status.json").write_text('{"state": "running", "st')  # caught mid-write
        info = read_run(run_dir)
        assert info.state == "running" and info.pid == holder.pid and info.error is None
    finally:
        holder.kill()
        holder.wait()
    info = read_run(run_dir)
    assert info.state == "stale" and "status.json is unreadable" in info.error


@pytest.mark.slow
def test_watch_keeps_watching_a_live_run_through_a_corrupt_status(tmp_path: Path) -> None:
    run_dir = live_run(tmp_path)
    holder = hold_lock(run_dir)
    good = (run_dir / "status.json").read_text()
    try:
        (run_dir / "status.json").write_text("{\x00\x00")
        watch = subprocess.Popen(
            [sys.executable, "-m", "kiln.cli", "watch", str(run_dir), "--interval", "0.1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(3)
        assert watch.poll() is None, watch.communicate()[1]  # still watching: the run lives
        (run_dir / "status.json").write_text(good.replace('"running"', '"done"'))
        assert watch.wait(timeout=60) == 0
    finally:
        holder.kill()
        holder.wait()


# ------------------------------------------------- 12: control characters in names


@pytest.mark.parametrize(
    "key, value",
    [("output.name", "pot\nrun"), ("output.name", "pot\x1b[2J"), ("dataset.caption_extension", ".t\txt")],
)
def test_control_characters_in_file_name_keys_are_refused(key: str, value: str) -> None:
    from kiln.engine.train.config import config_from_mapping

    section, _, name = key.partition(".")
    with pytest.raises(ConfigError, match=rf"{key} = .*control character") as caught:
        config_from_mapping({section: {name: value}})
    assert "\n" not in str(caught.value)


def test_a_sweep_name_with_a_newline_is_refused(tmp_path: Path) -> None:
    from kiln.engine.runs.sweep import load_sweep

    (tmp_path / "run.toml").write_text('[model]\nbase = "model"\n[dataset]\npath = "data"\n')
    sweep = tmp_path / "lr.toml"
    sweep.write_text('base = "run.toml"\nname = "lr\\nsweep"\n[grid]\n"train.seed" = [1]\n')
    with pytest.raises(ConfigError, match="name = 'lr\\\\nsweep': must be a plain folder name"):
        load_sweep(sweep)


def test_set_output_name_with_a_newline_is_one_line(config_file: Path, capsys) -> None:
    code, _, err = run_cli(capsys, "train", str(config_file), "--set", 'output.name="a\\nb"', "--cpu")
    assert code == 2 and "output.name" in one_line_error(err)


def test_file_names_with_newlines_are_escaped_in_tables(tmp_path: Path, capsys) -> None:
    from kiln.engine.curate import Row
    from kiln.engine.dataset.captions import read_caption
    from kiln.engine.dataset.scan import scan_dataset
    from kiln.tui.widgets.image_rows import row_cells

    root = tmp_path / "data"
    (root / "3_pot").mkdir(parents=True)
    Image.new("RGB", (64, 64), (200, 200, 200)).save(root / "3_pot" / "two\nlines.png")
    code, out, err = run_cli(capsys, "dsb", str(root))
    assert code in (0, 1), err
    assert "two\\nlines.png" in out and "two\nlines" not in out
    record = scan_dataset(root).images[0]
    row = Row(record=record, analysis=None, included=True, caption=read_caption(record.caption_path))
    cells = [cell.plain for cell in row_cells(row)]
    assert "3_pot/two\\nlines.png" in cells


# ------------------------------------------------------------ 13: kiln runs --runs MISSING


def test_runs_of_a_missing_folder_is_an_error(tmp_path: Path, capsys) -> None:
    code, out, err = run_cli(capsys, "runs", "--runs", str(tmp_path / "nope"))
    assert code == 2 and out == "" and "does not exist" in one_line_error(err)
    (tmp_path / "file").write_text("x")
    code, _, err = run_cli(capsys, "runs", "--runs", str(tmp_path / "file"), "--json")
    assert code == 2 and "is not a folder" in one_line_error(err)
    code, out, _ = run_cli(capsys, "runs", "--runs", str(tmp_path))
    assert code == 0 and "no runs in" in out  # an empty folder is still "no runs"


def test_resume_of_a_run_held_by_another_trainer_names_it(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("kiln.engine.runs.folders.EXITING_WAIT_S", 0.3)
    run_dir = write_run(tmp_path, "pot", state="cancelled")
    holder = hold_lock(run_dir)
    try:
        code, _, err = run_cli(capsys, "resume", str(run_dir), "--detach")
    finally:
        holder.kill()
        holder.wait()
    assert code == 1 and f"being trained by process {holder.pid}" in one_line_error(err)
    with pytest.raises(RunError):
        read_run(tmp_path)
