"""Super-resolution models through the real spandrel: a tiny Real-ESRGAN file is detected as
ESRGAN x4, tiles equal the whole-image output, pickles are refused without the flag, and a
missing spandrel or a broken torchvision gives a one-line fix."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from kiln.engine.errors import ModelError
from kiln.engine.fixup.upscaler import load_upscaler, resize_to
from PIL import Image

from tests.esrgan import write_tiny_esrgan
from tests.imagegen import photo_like


def test_a_real_esrgan_file_loads_as_esrgan_x4_and_upscales_by_four(tiny_esrgan: Path) -> None:
    assert tiny_esrgan.stat().st_size < 1_000_000
    upscaler = load_upscaler(tiny_esrgan)
    assert (upscaler.name, upscaler.scale, upscaler.device.type) == ("ESRGAN", 4, "cpu")
    image = photo_like((50, 30))
    assert upscaler.upscale(image).size == (200, 120)
    rgba = image.convert("RGBA")
    rgba.putalpha(80)
    result = upscaler.upscale(rgba)
    assert result.mode == "RGBA" and result.size == (200, 120)
    assert set(np.unique(np.asarray(result)[..., 3])) == {80}


def test_tiles_with_enough_overlap_equal_the_whole_image(tiny_esrgan: Path) -> None:
    upscaler = load_upscaler(tiny_esrgan)
    pixels = np.asarray(photo_like((70, 45), seed=5), dtype=np.float32) / 255
    upscaler.tile = 0
    whole = upscaler.run(pixels)
    upscaler.tile, upscaler.overlap = 16, 32
    tiled = upscaler.run(pixels)
    assert np.abs(tiled - whole).max() < 1e-5
    # With too little context the seams show: the comparison can fail.
    upscaler.overlap = 1
    assert np.abs(upscaler.run(pixels) - whole).max() > 1e-4


def test_resize_to_runs_the_model_then_lands_on_the_exact_size(tiny_esrgan: Path) -> None:
    upscaler = load_upscaler(tiny_esrgan)
    calls: list[tuple[int, int]] = []
    original = upscaler.upscale

    def counted(image: Image.Image, cancelled=lambda: False) -> Image.Image:
        calls.append(image.size)
        return original(image, cancelled)

    upscaler.upscale = counted  # type: ignore[method-assign]
    assert resize_to(photo_like((40, 30)), (512, 384), upscaler).size == (512, 384)
    assert calls == [(40, 30), (160, 120)]  # 4x, still short, 4x again, then Lanczos down
    assert resize_to(photo_like((40, 30)), (123, 77)).size == (123, 77)


def test_a_pth_is_refused_without_the_pickle_flag(tmp_path: Path, tiny_esrgan: Path) -> None:
    pth = write_tiny_esrgan(tmp_path / "model.pth")
    with pytest.raises(ModelError, match=r"model\.pth: \.pth files can run code .* --allow-pickle"):
        load_upscaler(pth)
    assert load_upscaler(pth, allow_pickle=True).scale == 4


def test_unknown_missing_and_non_model_files_are_named(tmp_path: Path, tiny_esrgan: Path) -> None:
    with pytest.raises(ModelError, match="no such model file"):
        load_upscaler(tmp_path / "absent.safetensors")
    import torch
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(3)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ModelError, match=r"other\.safetensors: spandrel does not recognise it"):
        load_upscaler(tmp_path / "other.safetensors")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ModelError, match="not a model file"):
        load_upscaler(tmp_path / "notes.txt")


def test_without_spandrel_the_error_names_the_extra(monkeypatch, tiny_esrgan: Path) -> None:
    monkeypatch.setitem(sys.modules, "spandrel", None)
    with pytest.raises(ModelError, match=r'pip install "lora-kiln\[upscale\]"'):
        load_upscaler(tiny_esrgan)


def test_where_torchvision_cannot_load_the_stand_in_lets_the_real_spandrel_load(tiny_esrgan: Path) -> None:
    """As on a CPU build of torch beside PyPI's torchvision: the import fails, the tests lend
    spandrel a stand-in for its import only, and ESRGAN still loads and upscales."""
    import subprocess

    code = (
        "import sys; sys.modules['torchvision'] = None\n"
        "from tests.esrgan import import_spandrel_for_tests\n"
        "spandrel = import_spandrel_for_tests()\n"
        "assert sys.modules['torchvision'] is None  # the stand-in was taken away again\n"
        "from kiln.engine.fixup.upscaler import load_upscaler\n"
        f"upscaler = load_upscaler({str(tiny_esrgan)!r})\n"
        "from PIL import Image\n"
        "print(upscaler.name, upscaler.scale, upscaler.upscale(Image.new('RGB', (8, 6))).size)\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ESRGAN 4 (32, 24)"


def test_the_benchmark_runs_and_reports_both_variants() -> None:
    import subprocess

    root = Path(__file__).resolve().parents[2]
    command = [sys.executable, "-m", "bench.fixup", "--size", "48", "--features", "8", "--blocks", "1"]
    command += ["--tile", "24", "--overlap", "16", "--lanczos", "2"]
    done = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "largest difference 0.0000 grey levels" in done.stdout and "images/s" in done.stdout
