"""The GPU checks' kit (scripts/device_kit.py) and script (bench/gpu_checks.sh): what can go
wrong before a device machine's minutes are spent. The whole script was tried on the CPU with
GPU_CHECKS_SMOKE=1 in a venv laid out as the device's (see bench/RESULTS.md)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "bench" / "gpu_checks.sh"


def _device_kit():
    spec = importlib.util.spec_from_file_location("device_kit", REPO / "scripts" / "device_kit.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


device_kit = _device_kit()


def fake_checkout(root: Path) -> Path:
    checkout = root / "sd-scripts"
    for name in ("train_network.py", "sdxl_train_network.py", "library/train_util.py", "networks/lora.py"):
        (checkout / name).parent.mkdir(parents=True, exist_ok=True)
        (checkout / name).write_text("# code\n")
    for name in (
        "docs/train_network.md",
        "configs/big.json",
        "library/__pycache__/train_util.cpython-311.pyc",
    ):
        (checkout / name).parent.mkdir(parents=True, exist_ok=True)
        (checkout / name).write_text("not needed\n")
    return checkout


def test_the_kit_copies_sd_scripts_training_code_and_names_its_commit(tmp_path: Path) -> None:
    checkout = fake_checkout(tmp_path)
    subprocess.run(["git", "init", "-q", str(checkout)], check=True)
    identity = ["-c", "user.name=k", "-c", "user.email=k@k"]
    subprocess.run(
        ["git", "-C", str(checkout), *identity, "commit", "-q", "--allow-empty", "-m", "x"], check=True
    )
    head = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    target = tmp_path / "kit" / "sd-scripts"
    assert device_kit.copy_training_code(checkout, target) == head
    copied = sorted(str(path.relative_to(target)) for path in target.rglob("*") if path.is_file())
    assert copied == [
        "COMMIT",
        "library/train_util.py",
        "networks/lora.py",
        "sdxl_train_network.py",
        "train_network.py",
    ]
    assert (target / "COMMIT").read_text() == head + "\n"


def test_the_kit_refuses_a_folder_that_is_not_sd_scripts(tmp_path: Path) -> None:
    with pytest.raises(
        SystemExit, match=r"no train_network\.py; pass --sd-scripts a kohya-ss/sd-scripts checkout"
    ):
        device_kit.copy_training_code(tmp_path, tmp_path / "kit")


def test_the_kit_reads_sd_scripts_pins_from_its_interpreter() -> None:
    pins = device_kit.pinned_versions(Path(sys.executable), ("safetensors", "pillow"))
    from importlib.metadata import version

    assert pins == {"safetensors": version("safetensors"), "pillow": version("pillow")}
    with pytest.raises(SystemExit, match="cannot read the installed versions"):
        device_kit.pinned_versions(Path(sys.executable), ("no-such-package-kiln",))


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_the_script_wants_a_part_and_the_kit_before_it_installs_anything(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "OUT": str(tmp_path / "out")}
    usage = subprocess.run(["bash", str(SCRIPT)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert usage.returncode == 2
    assert "usage: bash bench/gpu_checks.sh peers|options|activations" in usage.stderr
    missing = subprocess.run(
        ["bash", str(SCRIPT), "peers"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert missing.returncode == 2
    assert "no kit in .device/: run scripts/device_kit.py here first and carry .device" in missing.stderr
    assert not (tmp_path / "out" / "peers.json").exists()
