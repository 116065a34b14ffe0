"""Pack what ``bench/gpu_checks.sh`` needs on a lent GPU machine into ``.device/`` (git-ignored).

A lent device machine starts bare, reaches no network and gives a session 15 minutes: it has
Python 3.12 with PyTorch, transformers, accelerate, peft and safetensors, but not diffusers,
and no sd-scripts. This script, run here (where pip reaches PyPI), gathers the rest so the
device call only installs from local files and measures:

- ``kiln/``: diffusers at the version Kiln is tested with here, and ``importlib_metadata``
  (diffusers needs it; the device lacks it). Kiln itself is installed there from the working
  tree (``pip install --no-deps --no-build-isolation -e .``), as it is here, with the
  setuptools and wheel of ``build/``.
- ``sd-scripts-wheels/``: sd-scripts' own pins, read from the venv it runs in here
  (``--sd-scripts-python``): transformers, tokenizers, diffusers, accelerate, safetensors,
  huggingface-hub, imagesize, toml, voluptuous, importlib_metadata. The device's torch,
  torchvision, OpenCV and einops serve both sides, so both train on the same kernels.
- ``sd-scripts/``: the checkout's training code (top-level scripts, ``library/``,
  ``networks/``) and ``COMMIT``, the commit it came from.

Binary wheels are taken for CPython 3.12 on manylinux x86-64 (the device's platform); the
ones this kit holds are abi3 or pure Python, so the same files also install here for a trial.

Usage:  python scripts/device_kit.py --sd-scripts /tmp/sd-scripts --sd-scripts-python /tmp/sdsvenv/bin/python
Then, on the device:  run(command="bash bench/gpu_checks.sh peers", carry=[".device"]) (see its header)
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as `python scripts/device_kit.py`: bench/ imports from the root

from bench.sd_scripts_peer import checkout_commit  # noqa: E402

# What the device lacks for Kiln's training path (its torch, transformers, accelerate, peft and
# safetensors are used as they are; see /work/.library/device/KINDS.md's package list).
KILN_PACKAGES = ("diffusers", "importlib_metadata")
# What installs Kiln from the working tree there without build isolation (which would download
# them): the setuptools this checkout is built with here, whatever the device's own is.
BUILD_PACKAGES = {"setuptools": importlib.metadata.version("setuptools"), "wheel": "0.45.1"}
# sd-scripts' imports that its requirements pin, plus diffusers' importlib_metadata.
SD_SCRIPTS_PACKAGES = (
    "transformers",
    "tokenizers",
    "diffusers",
    "accelerate",
    "safetensors",
    "huggingface-hub",
    "imagesize",
    "toml",
    "voluptuous",
    "importlib_metadata",
)
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)
LIMIT_MIB = 48  # the device takes 64 MiB with the working tree (about 7 MiB)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sd-scripts", type=Path, required=True, help="a kohya-ss/sd-scripts checkout")
    parser.add_argument(
        "--sd-scripts-python", type=Path, required=True, help="the python of the venv sd-scripts runs in"
    )
    parser.add_argument("--out", type=Path, default=REPO / ".device", help="default: .device/")
    return parser.parse_args(argv)


def pinned_versions(python: Path, names: tuple[str, ...]) -> dict[str, str]:
    """``{name: version}`` of ``names`` as installed for ``python`` (exits naming a missing one)."""
    code = (
        "import importlib.metadata as m, json, sys; "
        "print(json.dumps({n: m.version(n) for n in sys.argv[1:]}))"
    )
    result = subprocess.run([str(python), "-c", code, *names], capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        sys.exit(f"{python}: cannot read the installed versions ({last}); install sd-scripts' requirements")
    return json.loads(result.stdout)


def download(pins: dict[str, str], folder: Path) -> None:
    """Wheels of exactly ``pins`` for the device's Python and platform into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    platforms = [arg for name in PLATFORMS for arg in ("--platform", name)]
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
        "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(folder),
        *(f"{name}=={version}" for name, version in pins.items()),
    ]  # fmt: skip
    subprocess.run(command, check=True)


def copy_training_code(checkout: Path, target: Path) -> str:
    """sd-scripts' training code (not its docs, configs or tests) and the commit it is at."""
    if not (checkout / "train_network.py").is_file():
        sys.exit(f"{checkout}: no train_network.py; pass --sd-scripts a kohya-ss/sd-scripts checkout")
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for script in checkout.glob("*.py"):
        shutil.copy2(script, target / script.name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("library", "networks"):
        shutil.copytree(checkout / folder, target / folder, ignore=ignore)
    commit = checkout_commit(checkout) or "unknown"
    (target / "COMMIT").write_text(commit + "\n", encoding="utf-8")
    return commit


def size_mib(folder: Path) -> float:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) / 2**20


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.out
    for part in ("kiln", "sd-scripts-wheels", "build"):
        shutil.rmtree(out / part, ignore_errors=True)
    kiln_pins = {name: importlib.metadata.version(name) for name in KILN_PACKAGES}
    peer_pins = pinned_versions(args.sd_scripts_python, SD_SCRIPTS_PACKAGES)
    download(kiln_pins, out / "kiln")
    download(BUILD_PACKAGES, out / "build")
    download(peer_pins, out / "sd-scripts-wheels")
    commit = copy_training_code(args.sd_scripts, out / "sd-scripts")
    manifest = {
        "kiln": kiln_pins,
        "build": BUILD_PACKAGES,
        "sd-scripts": peer_pins,
        "sd-scripts commit": commit,
    }
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    total = size_mib(out)
    print(f"{out}: {total:.1f} MiB ({json.dumps(manifest)})")
    if total > LIMIT_MIB:
        print(
            f"warning: over {LIMIT_MIB} MiB; the device takes 64 MiB with the working tree", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
