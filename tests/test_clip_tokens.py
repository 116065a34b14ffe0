"""Exact CLIP token counts from the tokenizer Kiln ships, and one clear line when its files are damaged."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from kiln.engine.caption import clip_tokens
from kiln.engine.caption.clip_tokens import (
    ClipTokenizer,
    TokenizerUnavailable,
    bytes_to_unicode,
    load_tokenizer,
    tokenizer_dir,
    try_load_tokenizer,
)


@pytest.fixture(scope="module")
def tokenizer() -> ClipTokenizer:
    return load_tokenizer()


def test_a_photo_of_a_cat(tokenizer: ClipTokenizer) -> None:
    assert tokenizer.ids("a photo of a cat") == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tokenizer.count("a photo of a cat").tokens == 5


def test_known_counts(tokenizer: ClipTokenizer) -> None:
    assert tokenizer.count("").tokens == 0
    assert tokenizer.count("A  PHOTO\tof a Cat").tokens == 5  # case and spacing do not count
    assert tokenizer.count("kilnstyle, no humans, scenery").tokens == 8  # kil·n·style , no humans , scenery
    assert tokenizer.encode("RFKTRCYBR") == [35529, 74, 635, 1470, 7532]
    assert tokenizer.count("cat " * 75).tokens == 75
    over = tokenizer.count("cat " * 76)
    assert over.tokens == 76 and over.over and not tokenizer.count("cat " * 75).over


def test_matches_transformers_clip_tokenizer_on_the_same_vocabulary(
    tokenizer: ClipTokenizer, tmp_path: Path
) -> None:
    """The trainer tokenizes with transformers' CLIPTokenizer: agree with it id for id."""
    from transformers import CLIPTokenizer

    folder = tokenizer_dir()
    reference = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    texts = [
        "a woman with cybernetic arms standing in a neon city, RFKTRCYBR",
        "1girl, long_hair, (masterpiece:1.2), [blue eyes], ^_^, 0_0",
        "it's a dog's life, don't we'll I'm you're they've she'd",
        "Ünïcödé naïve façade — “quotes” 東京 😀 café\u0301",
        "fish &amp; chips,,, ;; !!! 1234567 ½ ² ﬁ",
        "  tabs\tand\nnewlines  ",
        "x" * 120,
    ]
    for text in texts:
        assert tokenizer.ids(text) == reference(text)["input_ids"], text


def test_bytes_map_is_a_printable_bijection() -> None:
    mapping = bytes_to_unicode()
    assert len(mapping) == 256 and len(set(mapping.values())) == 256
    assert mapping[ord("a")] == "a" and mapping[ord(" ")] == "Ġ"
    assert all(not symbol.isspace() for symbol in mapping.values())


def test_damaged_tokenizer_files_give_one_line_naming_the_file(tmp_path: Path) -> None:
    good, short_merges, broken_vocab = (tmp_path / name for name in ("good", "merges", "vocab"))
    for copy in (good, short_merges, broken_vocab):
        shutil.copytree(tokenizer_dir(), copy)
    assert load_tokenizer(good).ids("a photo of a cat")[1:-1] == [320, 1125, 539, 320, 2368]
    (short_merges / "merges.txt").write_text("#version: 0.2\na b\n", encoding="utf-8")
    with pytest.raises(TokenizerUnavailable, match="not CLIP's BPE merges") as info:
        load_tokenizer(short_merges)
    message = str(info.value)
    assert "\n" not in message and str(short_merges / "merges.txt") in message and "reinstall Kiln" in message
    (broken_vocab / "vocab.json").write_text("{", encoding="utf-8")
    with pytest.raises(TokenizerUnavailable, match=r"vocab\.json"):
        load_tokenizer(broken_vocab)


def test_try_load_gives_the_reason_instead_of_raising(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(clip_tokens, "tokenizer_dir", lambda: tmp_path / "missing")
    tokenizer, reason = try_load_tokenizer()
    assert tokenizer is None and reason is not None and "missing" in reason


def test_tokenizer_needs_no_extra_package_and_imports_no_model_code() -> None:
    code = (
        "import sys, json\n"
        "from kiln.engine.caption.clip_tokens import load_tokenizer\n"
        "load_tokenizer()\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    loaded = {name.split(".")[0] for name in json.loads(result.stdout)}
    assert not loaded & {"clip", "open_clip", "torch", "torchvision", "transformers"}


def test_sdxl_encoders_tokenize_like_the_linted_window(tokenizer: ClipTokenizer, tmp_path: Path) -> None:
    """SDXL's two tokenizers (CLIP-L's, and OpenCLIP's padding with "!") share SD 1.5's BPE: the
    count lint checks against the 75-token window holds for both of SDXL's 77-token windows."""
    from kiln.engine.models.loading import sdxl_config_dir
    from transformers import CLIPTokenizer

    folder = sdxl_config_dir(tmp_path / "sdxl")
    texts = ["kilnstyle, a pot on a table, ^_^", "1girl, long_hair, (masterpiece:1.2)", "cat " * 80]
    for name in ("tokenizer", "tokenizer_2"):
        sdxl = CLIPTokenizer.from_pretrained(str(folder / name))
        for text in texts:
            assert sdxl(text)["input_ids"] == tokenizer.ids(text), (name, text)
            padded = sdxl(text, padding="max_length", max_length=77, truncation=True)["input_ids"]
            assert len(padded) == 77
    assert CLIPTokenizer.from_pretrained(str(folder / "tokenizer_2")).pad_token == "!"
