"""Exact CLIP token counts from the installed vocabulary, and a clear fallback without it."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest
from kiln.engine.caption import clip_tokens
from kiln.engine.caption.clip_tokens import (
    VOCAB_ENV,
    ClipTokenizer,
    TokenizerUnavailable,
    bytes_to_unicode,
    load_tokenizer,
    try_load_tokenizer,
    vocab_path,
)

from kiln import engine

REPO = Path(engine.__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tokenizer() -> ClipTokenizer:
    if vocab_path() is None:
        pytest.fail("the CLIP vocabulary is not installed: pip install --no-deps clip-anytorch")
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

    merges = clip_tokens._read_merges(tokenizer.path)
    (tmp_path / "vocab.json").write_text(json.dumps(tokenizer.encoder))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    reference = CLIPTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))
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


def test_missing_vocabulary_gives_one_line_with_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(VOCAB_ENV, "/nonexistent/bpe_simple_vocab_16e6.txt.gz")
    assert vocab_path() is None
    with pytest.raises(TokenizerUnavailable) as info:
        load_tokenizer()
    message = str(info.value)
    assert "\n" not in message and "pip install --no-deps clip-anytorch" in message
    assert try_load_tokenizer() == (None, message)


def test_env_variable_points_at_a_copy_and_damaged_files_are_refused(
    tokenizer: ClipTokenizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "vocab.txt.gz"
    copy.write_bytes(tokenizer.path.read_bytes())
    monkeypatch.setenv(VOCAB_ENV, str(copy))
    assert vocab_path() == copy
    assert load_tokenizer().ids("a photo of a cat")[1:-1] == [320, 1125, 539, 320, 2368]
    bad = tmp_path / "bad.txt.gz"
    bad.write_bytes(gzip.compress(b"#version\na b\n"))
    monkeypatch.setenv(VOCAB_ENV, str(bad))
    with pytest.raises(TokenizerUnavailable, match="not CLIP's BPE vocabulary"):
        load_tokenizer()


def test_finding_the_vocabulary_imports_neither_clip_nor_torchvision() -> None:
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
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin"},
    )
    loaded = {name.split(".")[0] for name in json.loads(result.stdout)}
    assert not loaded & {"clip", "open_clip", "torch", "torchvision", "transformers"}
