"""Broken files get a per-image error, never stop a scan and are never modified."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from kiln.engine.analysis.measure import analyse_image
from kiln.engine.analysis.report import dsb_report
from kiln.engine.dataset.scan import scan_dataset
from kiln.engine.dataset.store import Store
from PIL import Image

from tests.imagegen import share_image


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_zero_bytes(tmp_path: Path) -> None:
    path = tmp_path / "z.png"
    path.write_bytes(b"")
    assert "empty file" in analyse_image(path).error


def test_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "n.jpg"
    path.write_text("hello, I am text")
    assert "not an image" in analyse_image(path).error


def test_truncated_image(tmp_path: Path) -> None:
    full = tmp_path / "full.png"
    share_image(40.0, (200, 200), "RGB").save(full)
    path = tmp_path / "t.png"
    path.write_bytes(full.read_bytes()[:300])
    error = analyse_image(path).error
    assert error is not None and ("truncated" in error or "decode" in error)


def test_decompression_bomb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bomb.png"
    share_image(40.0, (100, 100)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 2x this raises
    assert "bomb guard" in analyse_image(path).error


def test_permission_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "p.png"
    share_image(40.0).save(path)
    if os.geteuid() != 0:
        path.chmod(0)
    else:  # root reads anything: simulate the kernel's answer instead

        def deny(*args, **kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(Image, "open", deny)
    assert "permission denied" in analyse_image(path).error


def test_broken_files_are_left_out_of_the_dsb_and_untouched(tmp_path: Path) -> None:
    root = tmp_path / "d"
    (root / "1_a").mkdir(parents=True)
    share_image(30.0).save(root / "1_a" / "good.png")
    share_image(50.0).save(root / "1_a" / "good2.png")
    (root / "1_a" / "empty.png").write_bytes(b"")
    (root / "1_a" / "text.jpg").write_text("nope")
    before = {p.name: digest(p) for p in (root / "1_a").iterdir()}
    dataset = scan_dataset(root)
    with Store(dataset.root) as store:
        report = dsb_report(dataset, store, "luma601")
    errors = {row.record.rel_path: row.analysis.error for row in report.rows}
    assert errors["1_a/good.png"] is None and errors["1_a/empty.png"] and errors["1_a/text.jpg"]
    assert report.summary.images == 2
    assert report.summary.white == pytest.approx(40.0)
    assert {p.name: digest(p) for p in (root / "1_a").iterdir() if p.is_file()} == before
