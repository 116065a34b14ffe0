"""An installed (not editable) copy carries every data file: themes, screen CSS, configs."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA_SUFFIXES = {".tcss", ".toml", ".json", ".txt", ".gz"}


def test_wheel_contains_every_package_data_file(tmp_path: Path) -> None:
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
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("lora_kiln-*.whl"))
    members = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        path.relative_to(ROOT).as_posix()
        for package in ("engine", "tui", "themes")
        for path in (ROOT / package).rglob("*")
        if path.suffix in DATA_SUFFIXES and "__pycache__" not in path.parts
    }
    assert {"themes/kiln-dark.toml", "tui/screens/dataset.tcss"} <= expected
    assert expected <= members, sorted(expected - members)
