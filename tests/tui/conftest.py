"""Fixtures for Pilot and snapshot tests: private copies of sample_data (analysed or not) and a TEC
working folder. The plain helpers (make_app, wait_for, ...) live in ``tests/tui/helpers.py``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"


@pytest.fixture
def sample_copy(tmp_path: Path) -> Path:
    """A copy of sample_data/ without Kiln state, so tests never touch the repo's files."""
    target = tmp_path / "data"
    shutil.copytree(SAMPLE, target, ignore=shutil.ignore_patterns(".kiln"))
    return target


@pytest.fixture(scope="session")
def analysed_sample(tmp_path_factory) -> Path:
    """sample_data analysed once per session (the template for ``analysed_copy``)."""
    from kiln.engine.analysis.run import analyse_dataset
    from kiln.engine.analysis.tones import DEFAULT_METHOD
    from kiln.engine.dataset.scan import scan_dataset
    from kiln.engine.dataset.store import Store

    target = tmp_path_factory.mktemp("analysed") / "data"
    shutil.copytree(SAMPLE, target, ignore=shutil.ignore_patterns(".kiln"))
    with Store(target) as store:
        analyse_dataset(scan_dataset(target), store, DEFAULT_METHOD, workers=1)
    return target


@pytest.fixture
def analysed_copy(analysed_sample: Path, tmp_path: Path) -> Path:
    """A private copy of sample_data whose analysis cache is filled: the app starts measured,
    with no analysis pool to wait for. copytree keeps mtimes, so the cache stays valid."""
    target = tmp_path / "data"
    shutil.copytree(analysed_sample, target)
    return target


@pytest.fixture
def tec_dir(tmp_path: Path, tiny_folder: Path, letters_file: Path, monkeypatch) -> Path:
    """The working folder of a TEC session: an empty dataset ``data/``, the tiny model ``tiny/``, a
    noisy copy of it ``noisy/`` and ``letters.txt`` (single-token words for the tiny tokenizer).

    It is the current folder, so the form takes these short relative paths, as a user typing
    them would, and screenshots do not show the temporary folder's name.
    """
    from tests.tinytec import folder_variant, with_noise

    (tmp_path / "data").mkdir()
    shutil.copytree(tiny_folder, tmp_path / "tiny")
    folder_variant(tiny_folder, tmp_path / "noisy", with_noise(0.05))
    shutil.copy(letters_file, tmp_path / "letters.txt")
    monkeypatch.chdir(tmp_path)
    return tmp_path
