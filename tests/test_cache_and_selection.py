"""The analysis cache and the selection in .kiln/kiln.db."""

from __future__ import annotations

import os
from pathlib import Path

import kiln.engine.analysis.run as run_module
import pytest
from kiln.engine.analysis.run import analyse_dataset
from kiln.engine.dataset.scan import scan_dataset
from kiln.engine.dataset.selection import excluded_paths, included_records, move_folder_state, set_included
from kiln.engine.dataset.store import Store

from tests.imagegen import share_image


def no_decoding(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    def fake(path, method, exact):
        calls.append(str(path))
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(run_module, "analyse_image", fake)
    return calls


def test_reopen_uses_the_cache_without_decoding(make_dataset, monkeypatch) -> None:
    root = make_dataset({"10_a/x.png": 30.0, "10_a/y.png": 70.0})
    with Store(root) as store:
        first = analyse_dataset(scan_dataset(root), store, "luma601", workers=1)
    no_decoding(monkeypatch)
    with Store(root) as store:
        second = analyse_dataset(scan_dataset(root), store, "luma601", workers=1)
    assert first == second
    assert (root / ".kiln" / "kiln.db").is_file()


def test_changed_mtime_or_size_is_recomputed(make_dataset, monkeypatch) -> None:
    root = make_dataset({"10_a/x.png": 30.0, "10_a/y.png": 70.0})
    with Store(root) as store:
        analyse_dataset(scan_dataset(root), store, "luma601", workers=1)
    # Same size, new mtime.
    stat = (root / "10_a/x.png").stat()
    os.utime(root / "10_a/x.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    # New content and size.
    share_image(90.0, (50, 50)).convert("RGB").save(root / "10_a/y.png")
    with Store(root) as store:
        result = analyse_dataset(scan_dataset(root), store, "luma601", workers=1)
    assert result["10_a/y.png"].white == pytest.approx(90.0)
    assert result["10_a/x.png"].white == pytest.approx(30.0)


def test_cache_is_keyed_by_method_and_exactness(make_dataset, monkeypatch) -> None:
    root = make_dataset({"1_a/x.png": 30.0})
    with Store(root) as store:
        analyse_dataset(scan_dataset(root), store, "luma601", workers=1)
        calls: list[str] = []
        real = run_module.analyse_image

        def counting(path, method, exact):
            calls.append(method)
            return real(path, method, exact)

        monkeypatch.setattr(run_module, "analyse_image", counting)
        analyse_dataset(scan_dataset(root), store, "lightness", workers=1)
        analyse_dataset(scan_dataset(root), store, "luma601", exact=True, workers=1)
        analyse_dataset(scan_dataset(root), store, "lightness", workers=1)
    assert calls == ["lightness", "luma601"]


def test_process_pool_gives_the_same_figures(make_dataset) -> None:
    root = make_dataset({f"1_a/{i}.png": float(i * 10) for i in range(8)})
    serial = analyse_dataset(scan_dataset(root), None, "luma601", workers=1)
    pooled = analyse_dataset(scan_dataset(root), None, "luma601", workers=2)
    assert serial == pooled


def test_selection_persists_and_never_touches_files(make_dataset) -> None:
    root = make_dataset({"1_a/x.png": 30.0, "1_a/y.png": 70.0})
    before = sorted(p.name for p in (root / "1_a").iterdir())
    with Store(root) as store:
        set_included(store, ["1_a/x.png"], False)
    with Store(root) as store:
        assert excluded_paths(store) == {"1_a/x.png"}
        assert [r.rel_path for r in included_records(scan_dataset(root).images, store)] == ["1_a/y.png"]
        set_included(store, ["1_a/x.png"], True)
        assert excluded_paths(store) == set()
    assert sorted(p.name for p in (root / "1_a").iterdir()) == before


def test_folder_rename_carries_state(make_dataset) -> None:
    root = make_dataset({"10_cat/x.png": 30.0, "10_catalog/y.png": 70.0})
    with Store(root) as store:
        analyse_dataset(scan_dataset(root), store, "luma601", workers=1)
        set_included(store, ["10_cat/x.png", "10_catalog/y.png"], False)
        move_folder_state(store, "10_cat", "35_cat")
        assert excluded_paths(store) == {"35_cat/x.png", "10_catalog/y.png"}
        paths = {row[0] for row in store.query("SELECT rel_path FROM analysis")}
        assert paths == {"35_cat/x.png", "10_catalog/y.png"}


def test_read_only_dataset_falls_back_to_memory(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "ro"
    root.mkdir()

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "mkdir", refuse)
    store = Store(root)
    assert not store.persistent
    assert "cannot write" in store.warning
    set_included(store, ["a.png"], False)
    assert excluded_paths(store) == {"a.png"}
