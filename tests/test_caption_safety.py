"""Caption edits under concurrency and broken state: nothing lost, nothing unrecorded (issue 20).

Concurrent edits run as real processes; broken state (a damaged ``kiln.db``, ``.kiln`` a file,
read-only or unreadable captions, a caption that is a folder) is made on disk.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from kiln.cli import main
from kiln.engine.caption import tags
from kiln.engine.caption.undo import History
from kiln.engine.curate import Curation
from kiln.engine.dataset.captions import CaptionError
from kiln.engine.dataset.lock import CaptionsBusy, caption_lock
from kiln.engine.dataset.scan import scan_dataset
from kiln.engine.dataset.store import Store

CAPTIONS = {
    "10_pot/a.txt": "a red pot on a wooden table, kilnpot",
    "10_pot/b.txt": "a jar on a wooden shelf, kilnpot",
    "5_sky/c.txt": "kilnsky, night, moon",
}


@pytest.fixture
def root(make_dataset: Callable[..., Path]) -> Path:
    return make_dataset({"10_pot/a.png": 50, "10_pot/b.png": 50, "5_sky/c.png": 50}, CAPTIONS)


def texts(root: Path) -> dict[str, str]:
    return {rel: (root / rel).read_text() for rel in CAPTIONS}


def tags_process(root: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "kiln", "tags", str(root), *args, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_concurrent_tag_edits_all_land_and_all_undo(make_dataset: Callable[..., Path]) -> None:
    count = 60
    images = {f"10_pot/{index:03d}.png": 50.0 for index in range(count)}
    captions = {f"10_pot/{index:03d}.txt": f"pot {index}, kilnpot" for index in range(count)}
    root = make_dataset(images, captions)
    rounds = 4
    for round_ in range(rounds):
        first, second = f"A{round_}", f"B{round_}"
        processes = [tags_process(root, "add", first), tags_process(root, "add", second)]
        outputs = [process.communicate(timeout=120) for process in processes]
        for process, (out, err) in zip(processes, outputs, strict=True):
            assert process.returncode == 0, err
            report = json.loads(out)
            assert len(report["changes"]) == count and report["failed"] == [] and report["undo_step"]
        for rel, original in captions.items():
            pieces = (root / rel).read_text().split(", ")
            assert pieces[: len(original.split(", "))] == original.split(", ")
            for done in range(round_ + 1):
                assert f"A{done}" in pieces and f"B{done}" in pieces, (rel, pieces)
    with Store(root) as store:
        assert len(History(store).steps()) == 2 * rounds
    for _ in range(2 * rounds):
        assert main(["tags", str(root), "undo"]) == 0
    assert {rel: (root / rel).read_text() for rel in captions} == captions


def test_a_second_writer_waits_for_the_lock_and_then_plans_on_fresh_captions(root: Path) -> None:
    dataset = scan_dataset(root)
    released, holding = threading.Event(), threading.Event()

    def hold() -> None:
        with caption_lock(root):
            holding.set()
            released.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(5)
    process = tags_process(root, "add", "late")
    time.sleep(0.5)
    assert process.poll() is None  # waiting on the lock, nothing written yet
    assert texts(root) == CAPTIONS
    released.set()
    holder.join()
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert all(text.endswith(", late") for text in texts(root).values())
    assert dataset.root == root.resolve()


def test_a_lock_held_too_long_is_named_with_its_pid(root: Path) -> None:
    code = (
        "import sys, time\n"
        "from kiln.engine.dataset.lock import caption_lock\n"
        "with caption_lock(sys.argv[1]):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(30)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(root)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(CaptionsBusy, match=f"pid {holder.pid}"), caption_lock(root, wait_s=0.2):
            pass
    finally:
        holder.kill()
        holder.wait()
    with caption_lock(root, wait_s=5):  # released by the kernel when its holder died
        pass


def test_a_damaged_database_is_kept_aside_and_the_edit_still_has_its_undo(root: Path, capsys) -> None:
    kiln_dir = root / ".kiln"
    kiln_dir.mkdir()
    (kiln_dir / "kiln.db").write_bytes(b"this is not a database" * 100)
    assert main(["tags", str(root), "add", "X"]) == 0
    assert all(text.endswith(", X") for text in texts(root).values())
    assert [path.name.startswith("kiln.db.damaged-") for path in kiln_dir.glob("kiln.db.damaged-*")] == [True]
    assert main(["tags", str(root), "undo"]) == 0
    assert texts(root) == CAPTIONS


def test_an_edit_whose_undo_cannot_be_recorded_changes_nothing(root: Path, capsys) -> None:
    (root / ".kiln").write_text("a file where Kiln's folder should be")
    assert main(["tags", str(root), "add", "X"]) == 1
    err = capsys.readouterr().err
    assert "undo could not be recorded" in err and "nothing changed" in err and len(err.splitlines()) == 1
    assert texts(root) == CAPTIONS


def test_read_only_captions_are_skipped_with_a_message(root: Path, capsys) -> None:
    locked = root / "10_pot/a.txt"
    locked.chmod(0o444)
    assert main(["tags", str(root), "add", "X"]) == 0
    out = capsys.readouterr().out
    assert "a.txt is read-only" in out and "2 of 3 caption(s) changed" in out
    assert locked.read_text() == CAPTIONS["10_pot/a.txt"] and locked.stat().st_mode & 0o777 == 0o444
    curation = Curation(root)
    try:
        with pytest.raises(CaptionError, match="read-only"):
            curation.save_caption("10_pot/a.png", "edited")
    finally:
        curation.close()
    assert locked.read_text() == CAPTIONS["10_pot/a.txt"]


def test_unreadable_captions_give_one_line_in_lint_stats_and_edits(
    root: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = Path.read_bytes

    def read_bytes(path: Path) -> bytes:
        if path.name == "b.txt":
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    for args in (["lint"], ["tags", "stats"], ["tags", "add", "X"]):
        assert main([args[0], str(root), *args[1:]]) == 1, args
        err = capsys.readouterr().err
        assert "b.txt: cannot read the caption (Permission denied)" in err and len(err.splitlines()) == 1
    assert texts(root) == CAPTIONS  # refused before anything was written


def test_a_caption_that_is_a_folder_is_named_and_skipped(root: Path, capsys) -> None:
    (root / "10_pot/b.txt").unlink()
    (root / "10_pot/b.txt").mkdir()
    assert main(["tags", str(root), "add", "X", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {
        "image": "10_pot/b.png",
        "reason": "b.txt is a folder, not a caption file; rename or remove it",
    } in (report["skipped"])
    assert (root / "10_pot/b.txt").is_dir()


def test_apply_reports_only_what_it_wrote(root: Path) -> None:
    dataset = scan_dataset(root)
    with Store(dataset.root) as store:
        plan = tags.plan_edit(dataset.images, tags.add_edit(["X"]))
        (root / "10_pot/a.txt").write_text("changed meanwhile")
        result = tags.apply_plan(plan, dataset.root, store)
    assert result.written == ["10_pot/b.png", "5_sky/c.png"]
    assert [image for image, _ in result.failed] == ["10_pot/a.png"]
    assert (root / "10_pot/a.txt").read_text() == "changed meanwhile"
    assert os.path.exists(root / ".kiln" / "captions.lock")


def test_temp_files_of_a_killed_edit_are_removed_on_the_next_run_and_only_those(root: Path) -> None:
    ours = root / "10_pot" / ".a.txt.kiln-k1ll3d00.tmp"
    theirs = root / "10_pot" / ".a.txt.swp.tmp"
    ours.write_text("half a caption")
    theirs.write_text("an editor's file")
    assert main(["tags", str(root), "add", "X"]) == 0
    assert not ours.exists() and theirs.exists()


def test_new_files_get_the_users_umask_not_0600(tmp_path: Path) -> None:
    from kiln.engine.fsutil import atomic_write_bytes

    previous = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "lora.safetensors", b"x")
        os.umask(0o027)
        atomic_write_bytes(tmp_path / "other", b"y")
    finally:
        os.umask(previous)
    assert (tmp_path / "lora.safetensors").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "other").stat().st_mode & 0o777 == 0o640
