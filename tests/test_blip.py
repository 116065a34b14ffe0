"""BLIP captioner from a local folder: offline load, token limits, prefix, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from kiln.cli import main
from kiln.engine.caption.settings import BlipSettings
from kiln.engine.errors import ModelError, UsageError
from PIL import Image

from tests.caption_models import write_tiny_blip

torch = pytest.importorskip("torch")

from kiln.engine.caption.blip import BlipCaptioner, check_blip_folder, resolve_device, strip_prefix  # noqa: E402

IMAGES = [Image.new("RGB", (40, 20), (255, 0, 0)), Image.new("RGB", (16, 30), (0, 0, 255))]


@pytest.fixture(scope="module")
def blip_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_blip(tmp_path_factory.mktemp("blip") / "model")


def test_generates_exactly_max_new_tokens_when_the_model_never_stops(blip_folder: Path) -> None:
    captioner = BlipCaptioner(blip_folder, BlipSettings(beams=2, min_new_tokens=1, max_new_tokens=4))
    assert captioner.device.type == "cpu"
    assert captioner.caption_batch(IMAGES) == ["cat cat cat cat"] * 2
    longer = BlipCaptioner(blip_folder, BlipSettings(beams=1, max_new_tokens=7))
    assert longer.caption_batch(IMAGES[:1]) == [" ".join(["cat"] * 7)]


def test_min_new_tokens_holds_off_an_eager_end(blip_folder: Path) -> None:
    captioner = BlipCaptioner(blip_folder, BlipSettings(beams=1, min_new_tokens=3, max_new_tokens=10))
    with torch.no_grad():
        bias = captioner.model.text_decoder.cls.predictions.bias
        bias[3] = 60.0  # [SEP] now wins every step it is allowed to
    assert captioner.caption_batch(IMAGES[:1]) == ["cat cat cat"]


def test_conditional_prefix_conditions_the_model_and_is_stripped(blip_folder: Path) -> None:
    settings = BlipSettings(beams=1, min_new_tokens=0, max_new_tokens=2, prefix="a picture of")
    captioner = BlipCaptioner(blip_folder, settings)
    prompts: list[list[int]] = []
    generate = captioner.model.generate

    def spy(**kwargs):
        prompts.extend(kwargs["input_ids"].tolist())
        return generate(**kwargs)

    captioner.model.generate = spy
    assert captioner.caption_batch(IMAGES) == ["cat cat", "cat cat"]
    # [CLS] a picture of [SEP], for each image
    assert prompts == [[2, 6, 7, 8, 3]] * 2


def test_strip_prefix_tolerates_case_and_spacing() -> None:
    assert strip_prefix("A  picture of a dog", "a picture of") == "a dog"
    assert strip_prefix("a picture of, a dog", "a picture of") == "a dog"
    assert strip_prefix("a pictures of dogs", "a picture") == "a pictures of dogs"
    assert strip_prefix(" a dog ", "") == "a dog"


def test_folder_errors_name_the_missing_file(tmp_path: Path, blip_folder: Path) -> None:
    with pytest.raises(ModelError, match="no such model folder"):
        check_blip_folder(tmp_path / "nope")
    copy = tmp_path / "copy"
    shutil.copytree(blip_folder, copy)
    (copy / "model.safetensors").rename(copy / "pytorch_model.bin")
    with pytest.raises(ModelError, match=r"only pickle weights.*--allow-pickle"):
        check_blip_folder(copy)
    check_blip_folder(copy, allow_pickle=True)
    (copy / "pytorch_model.bin").unlink()
    with pytest.raises(ModelError, match="no weights"):
        check_blip_folder(copy)
    (copy / "config.json").unlink()
    with pytest.raises(ModelError, match=r"config\.json: missing"):
        BlipCaptioner(copy)


def test_settings_and_device_are_checked() -> None:
    with pytest.raises(UsageError, match="min"):
        BlipSettings(min_new_tokens=9, max_new_tokens=4)
    with pytest.raises(UsageError):
        BlipSettings(beams=0)
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        assert resolve_device("auto").type == "cpu"
        with pytest.raises(UsageError, match="no CUDA device"):
            resolve_device("cuda")


def test_kiln_caption_blip_puts_the_trigger_last(blip_folder: Path, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "data" / "10_red"
    folder.mkdir(parents=True)
    for name in ("a", "b"):
        Image.new("RGBA", (32, 24), (255, 0, 0, 200)).save(folder / f"{name}.png")
    (folder / "b.txt").write_text("hand written", encoding="utf-8")
    argv = [
        "caption",
        str(folder.parent),
        "--style",
        "blip",
        "--model",
        str(blip_folder),
        "--trigger",
        "kilnred",
    ]
    assert main([*argv, "--min-new-tokens", "0", "--max-new-tokens", "3", "--beams", "1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["counts"] == {"written": 1, "unchanged": 0, "skipped": 1, "failed": 0}
    assert data["images"][0] == {
        "path": "10_red/a.png",
        "status": "written",
        "caption": "cat cat cat, kilnred",
        "error": None,
    }
    assert (folder / "a.txt").read_text() == "cat cat cat, kilnred"
    assert (folder / "b.txt").read_text() == "hand written"
