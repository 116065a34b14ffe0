"""WD14 tagger: preprocessing as the reference taggers (BGR, white centred padding), tag choice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from kiln.engine.caption.images import rgb_on_white
from kiln.engine.caption.settings import Wd14Settings
from kiln.engine.caption.wd14 import Wd14Tagger, model_input, pad_to_square, written_name
from kiln.engine.errors import ModelError
from PIL import Image

from tests.caption_models import WD14_SIZE, write_wd14_model


@pytest.fixture(scope="module")
def dynamic_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_wd14_model(tmp_path_factory.mktemp("wd14") / "dynamic", batch=None)


@pytest.fixture(scope="module")
def fixed_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_wd14_model(tmp_path_factory.mktemp("wd14") / "fixed", batch=1)


RED = Image.new("RGB", (30, 30), (255, 0, 0))
BLUE_WIDE = Image.new("RGB", (200, 100), (0, 0, 255))
BLACK_TALL = Image.new("RGB", (100, 200), (0, 0, 0))


def names(model: Path, image: Image.Image, **settings) -> list[str]:
    return Wd14Tagger(model, Wd14Settings(**settings)).tag_images([image])[0].names()


def test_session_gives_size_names_and_batch(dynamic_model: Path, fixed_model: Path) -> None:
    dynamic = Wd14Tagger(dynamic_model, Wd14Settings(batch_size=5))
    assert (dynamic.size, dynamic.input_name, dynamic.output_name) == (
        WD14_SIZE,
        "input_1:0",
        "predictions_sigmoid",
    )
    assert (dynamic.fixed_batch, dynamic.batch_size) == (None, 5)
    fixed = Wd14Tagger(fixed_model, Wd14Settings(batch_size=5))
    assert (fixed.fixed_batch, fixed.batch_size) == (1, 1)


def test_red_image_is_fed_in_bgr_order(dynamic_model: Path) -> None:
    tags = names(dynamic_model, RED)
    assert "red theme" in tags and "blue theme" not in tags
    pixels = model_input(RED, 8)
    assert pixels.dtype == np.float32 and pixels.shape == (8, 8, 3)
    assert pixels[0, 0].tolist() == [0.0, 0.0, 255.0]  # B, G, R on the 0..255 scale


def test_tall_image_is_padded_with_white_and_centred(dynamic_model: Path) -> None:
    # The model tags white_border only when the left quarter of its input is white.
    assert "white border" in names(dynamic_model, BLACK_TALL)
    # A wide image padded top and bottom has no white left quarter.
    assert "white border" not in names(dynamic_model, BLUE_WIDE)
    square = np.asarray(pad_to_square(BLACK_TALL))
    assert square.shape == (200, 200, 3)
    assert (square[:, :50] == 255).all() and (square[:, 150:] == 255).all() and (square[:, 50:150] == 0).all()


def test_transparent_pixels_become_white(tmp_path: Path, dynamic_model: Path) -> None:
    path = tmp_path / "clear.png"
    Image.new("RGBA", (40, 40), (0, 0, 0, 0)).save(path)
    image = rgb_on_white(path)
    assert image.mode == "RGB" and image.getpixel((3, 3)) == (255, 255, 255)
    half = tmp_path / "half.png"
    Image.new("RGBA", (4, 4), (0, 0, 0, 128)).save(half)
    assert rgb_on_white(half).getpixel((0, 0)) == (127, 127, 127)
    assert {"red theme", "blue theme", "white border"} <= set(names(dynamic_model, image))


def test_thresholds_rating_and_character_tags(dynamic_model: Path) -> None:
    default = names(dynamic_model, RED)
    assert default == ["hakurei reimu (cosplay)", "red theme", "long hair", "^_^"]
    assert "low confidence" in names(dynamic_model, RED, general_threshold=0.25)
    assert "hatsune miku" in names(dynamic_model, RED, character_threshold=0.8)
    # Rating by argmax: red drives "sensitive" above "general"; only one rating is written.
    assert names(dynamic_model, RED, rating=True)[0] == "sensitive"
    with_rating = names(dynamic_model, BLUE_WIDE, rating=True)
    assert with_rating[0] == "general" and "sensitive" not in with_rating


def test_underscores_kaomoji_parentheses_and_undesired(dynamic_model: Path) -> None:
    settings = Wd14Settings()
    assert written_name("long_hair", settings) == "long hair"
    assert written_name("^_^", settings) == "^_^"
    assert written_name("hakurei_reimu_(cosplay)", Wd14Settings(escape_parentheses=True)) == (
        "hakurei reimu \\(cosplay\\)"
    )
    assert written_name("long_hair", Wd14Settings(remove_underscores=False)) == "long_hair"
    tags = names(dynamic_model, RED, undesired=("long_hair", "Hakurei Reimu (cosplay)"))
    assert tags == ["red theme", "^_^"]


def test_fixed_and_dynamic_batches_agree(dynamic_model: Path, fixed_model: Path) -> None:
    images = [RED, BLUE_WIDE, BLACK_TALL]
    dynamic = Wd14Tagger(dynamic_model, Wd14Settings(batch_size=2))
    fixed = Wd14Tagger(fixed_model, Wd14Settings(batch_size=2))
    calls: list[int] = []
    real_run = dynamic.session.run

    class Spy:
        def run(self, outputs, feeds):
            calls.append(len(next(iter(feeds.values()))))
            return real_run(outputs, feeds)

    dynamic.session = Spy()  # type: ignore[assignment]
    assert dynamic.caption_batch(images) == fixed.caption_batch(images)
    assert calls == [2, 1]  # batched by the setting, the last batch short


def test_a_fixed_batch_above_one_is_filled_and_trimmed(tmp_path: Path, dynamic_model: Path) -> None:
    images = [RED, BLUE_WIDE, BLACK_TALL]
    fixed = Wd14Tagger(write_wd14_model(tmp_path / "two", batch=2), Wd14Settings(batch_size=8))
    assert (fixed.fixed_batch, fixed.batch_size) == (2, 2)
    assert fixed.caption_batch(images) == Wd14Tagger(dynamic_model).caption_batch(images)


def test_model_folder_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such model folder"):
        Wd14Tagger(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match=r"model\.onnx: missing"):
        Wd14Tagger(tmp_path / "empty")
    no_csv = write_wd14_model(tmp_path / "nocsv", tags_csv=False)
    with pytest.raises(ModelError, match=r"selected_tags\.csv: missing"):
        Wd14Tagger(no_csv)
    short = write_wd14_model(tmp_path / "short")
    lines = (short / "selected_tags.csv").read_text().splitlines()
    (short / "selected_tags.csv").write_text("\n".join(lines[:-2]) + "\n")
    with pytest.raises(ModelError, match=r"scores 12 tags but selected_tags\.csv lists 10"):
        Wd14Tagger(short)
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "model.onnx").write_bytes(b"not a model")
    (garbage / "selected_tags.csv").write_text("tag_id,name,category,count\n0,a,0,1\n")
    with pytest.raises(ModelError, match="onnxruntime cannot load it"):
        Wd14Tagger(garbage)


def test_nchw_export_is_refused_with_the_shape(tmp_path: Path) -> None:
    model = write_wd14_model(tmp_path / "nchw", batch=1, layout="NCHW")
    with pytest.raises(ModelError, match=r"input shape \[1, 3, 24, 24\] is not \[batch, size, size, 3\]"):
        Wd14Tagger(model)
