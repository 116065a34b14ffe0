"""An installed (not editable) copy is one ``kiln`` package carrying every data file."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

# Builds and installs the wheel in subprocesses.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
DATA_SUFFIXES = {".tcss", ".toml", ".json", ".txt", ".gz"}
IMAGE_SUFFIXES = {".jpg", ".png", ".webp"}


def build_wheel(folder: Path) -> Path:
    """Build Kiln's wheel into ``folder`` (no dependencies, no network) and return its path."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(folder),
        ],
        check=True,
        capture_output=True,
    )
    return next(folder.glob("lora_kiln-*.whl"))


def test_wheel_contains_every_package_data_file(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    members = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        "kiln/" + path.relative_to(ROOT).as_posix()
        for package in ("engine", "tui", "themes", "sample_data")
        for path in (ROOT / package).rglob("*")
        if path.suffix in DATA_SUFFIXES | IMAGE_SUFFIXES and "__pycache__" not in path.parts
    }
    assert {"kiln/themes/kiln-dark.toml", "kiln/tui/screens/dataset.tcss"} <= expected
    assert expected <= members, sorted(expected - members)


def test_wheel_installs_one_import_name_and_the_licence(tmp_path: Path) -> None:
    names = zipfile.ZipFile(build_wheel(tmp_path)).namelist()
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == {"kiln"}
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)
    modules = {name for name in names if name.endswith(".py")}
    assert {
        "kiln/__main__.py",
        "kiln/cli/__init__.py",
        "kiln/engine/runs/worker.py",
        "kiln/tui/app.py",
    } <= modules
