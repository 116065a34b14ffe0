"""Caption lint: each rule, trigger inference, token counts (and their absence), ``kiln lint``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from kiln.cli import main
from kiln.engine.caption import clip_tokens
from kiln.engine.caption.lint import initial_prompt, lint_dataset
from kiln.engine.caption.triggers import infer_trigger
from kiln.engine.dataset.scan import scan_dataset
from kiln.engine.dataset.selection import set_included
from kiln.engine.dataset.store import Store

LONG = " ".join(["word"] * 80)


def lint(root: Path, **kwargs):
    dataset = scan_dataset(root)
    with Store(dataset.root) as store:
        return lint_dataset(dataset, store, **kwargs)


def rules(report, rule: str) -> list[str]:
    return [finding.file for finding in report.findings if finding.rule == rule]


@pytest.fixture
def build(make_dataset: Callable[..., Path]) -> Callable[[dict[str, str | None]], Path]:
    """A dataset from ``{"10_x/a": "caption" | None}``: an image per key, a caption unless None."""

    def make(spec: dict[str, str | None]) -> Path:
        images = {f"{key}.png": 50.0 for key in spec}
        captions = {f"{key}.txt": text for key, text in spec.items() if text is not None}
        return make_dataset(images, captions)

    return make


def test_missing_empty_orphan_and_non_utf8(build) -> None:
    root = build({"10_x/a": None, "10_x/b": "  \n", "10_x/c": "kilnx, solo"})
    (root / "10_x/gone.txt").write_text("kilnx, orphan")
    (root / "3_captions_only").mkdir()
    (root / "3_captions_only/lost.txt").write_text("kilnx")
    (root / "10_x/d.png").write_bytes((root / "10_x/a.png").read_bytes())
    (root / "10_x/d.txt").write_bytes(b"kilnx, caf\xe9")
    report = lint(root, trigger="kilnx")
    assert rules(report, "missing-caption") == ["10_x/a.png"]
    assert rules(report, "empty-caption") == ["10_x/b.txt"]
    assert rules(report, "orphan-caption") == ["10_x/gone.txt", "3_captions_only/lost.txt"]
    assert rules(report, "not-utf8") == ["10_x/d.txt"]
    missing = next(f for f in report.findings if f.rule == "missing-caption")
    assert missing.id == "missing-caption:10_x/a.png" and "10_x/a.txt" in missing.fix
    assert missing.severity == "error"


def test_missing_trigger_given_or_inferred_per_concept(build) -> None:
    root = build(
        {
            "10_pot/a": "a red pot on a table, kilnpot",
            "10_pot/b": "a blue jar, kilnpot",
            "10_pot/c": "a green bowl",
            "5_sky/a": "kilnsky, night, moon",
            "5_sky/b": "kilnsky, day, sun",
        }
    )
    report = lint(root)
    assert report.triggers["pot"].word == "kilnpot" and report.triggers["pot"].source == "inferred"
    assert (report.triggers["pot"].support, report.triggers["pot"].captions) == (2, 3)
    assert report.triggers["sky"].word == "kilnsky"
    assert rules(report, "missing-trigger") == ["10_pot/c.txt"]
    finding = next(f for f in report.findings if f.rule == "missing-trigger")
    assert "inferred" in finding.message
    assert finding.fix == f"kiln tags {root.resolve()} add kilnpot --position last --concept pot"
    given = lint(root, trigger="kilnsky")
    assert rules(given, "missing-trigger") == ["10_pot/a.txt", "10_pot/b.txt", "10_pot/c.txt"]
    (root / "10_pot/c.txt").write_text("a kilnpot bowl on a green table")  # inside the sentence counts
    assert rules(lint(root), "missing-trigger") == []
    assert rules(lint(root, trigger="kilnsk"), "missing-trigger")[0] == "10_pot/a.txt"  # whole words only
    (root / "5_sky/b.txt").write_text("day, sun")
    sky = lint(root, trigger="kilnsky")
    assert next(f.fix for f in sky.findings if f.file == "5_sky/b.txt").endswith(
        "--position first --concept sky"
    )


def test_trigger_is_not_guessed_when_unclear() -> None:
    assert infer_trigger([["a", "b"], ["c", "d"]], "x") is None  # nothing repeats
    assert infer_trigger([["a", "b"], ["a", "b"]], "x") is None  # a and b tie
    assert infer_trigger([["a", "x"], ["a", "x"]], "x").word == "x"  # the concept's name wins a tie
    assert infer_trigger([["only", "one"]], "x") is None  # too few captions
    # A tagger's tag appended to every caption ends them all, as the trigger starts them: the
    # made-up single word is the trigger, not the phrase.
    appended = [["kilnpot", "a pot", "simple background"], ["kilnpot", "a vase", "simple background"]]
    assert infer_trigger(appended, "x").word == "kilnpot"
    assert infer_trigger([["k", "a"], ["k", "b"], ["c", "d"], ["e", "f"]], "x") is None  # half is not most


def test_commas_inside_the_initial_prompt(build) -> None:
    root = build(
        {
            "10_x/a": "a woman standing, in a neon city, RFKTRCYBR",
            "10_x/b": "a woman with cybernetic arms standing in a neon city, RFKTRCYBR",
            "10_x/c": "RFKTRCYBR, 1girl, solo, long hair",
            "10_x/d": "RFKTRCYBR, a man, walking in the rain",
        }
    )
    report = lint(root, trigger="RFKTRCYBR")
    assert rules(report, "comma-in-prompt") == ["10_x/a.txt", "10_x/d.txt"]
    fixes = {f.file: f.fix for f in report.findings if f.rule == "comma-in-prompt"}
    assert fixes["10_x/a.txt"] == "write it as one phrase: 'a woman standing in a neon city, RFKTRCYBR'"
    assert fixes["10_x/d.txt"] == "write it as one phrase: 'RFKTRCYBR, a man walking in the rain'"
    # Without a trigger, trailing one-word keywords end the prompt.
    assert initial_prompt(["a cat", "on a table", "TECHWEAR", "CYBR"], None) == ["a cat", "on a table"]
    assert initial_prompt(["1girl", "solo", "a cat"], None) == []


def test_over_the_token_window_and_duplicates(build) -> None:
    root = build({"10_x/a": f"kilnx, {LONG}", "10_x/b": "kilnx, solo, Solo, red, red, red"})
    report = lint(root, trigger="kilnx")
    assert rules(report, "over-token-window") == ["10_x/a.txt"]
    over = next(f for f in report.findings if f.rule == "over-token-window")
    assert over.message.startswith("83 CLIP tokens") and "cut 8 token(s)" in over.fix
    assert report.max_tokens == 83
    duplicates = [f.id for f in report.findings if f.rule == "duplicate-tag"]
    assert duplicates == ["duplicate-tag:10_x/b.txt:red", "duplicate-tag:10_x/b.txt:solo"]


def test_token_counts_unavailable_are_reported_not_guessed(build) -> None:
    root = build({"10_x/a": f"kilnx, {LONG}"})
    report = lint(root, trigger="kilnx", tokenizer=None, tokens_message="no vocab: install it")
    assert not report.tokens_available and report.max_tokens is None
    assert rules(report, "over-token-window") == []
    assert report.to_json()["tokens"] == {
        "available": False,
        "message": "no vocab: install it",
        "window": 75,
        "max": None,
    }


def test_tags_in_every_caption_of_a_concept_except_the_trigger(build) -> None:
    root = build(
        {
            "10_x/a": "kilnx, scenery, hill",
            "10_x/b": "kilnx, scenery, hill, sun",
            "10_x/c": "kilnx, Scenery, moon",
            "5_y/a": "kilny, scenery",
            "5_y/b": "kilny, scenery",
        }
    )
    report = lint(root)
    found = [f.id for f in report.findings if f.rule == "tag-everywhere"]
    assert found == ["tag-everywhere:10_x:scenery"]  # 5_y has too few captions to say


def test_excluded_images_are_skipped_unless_all_and_ids_are_stable(build) -> None:
    root = build({"10_x/a": None, "10_x/b": "kilnx"})
    with Store(root.resolve()) as store:
        set_included(store, ["10_x/a.png"], False)
    assert rules(lint(root), "missing-caption") == []
    first = lint(root, include_excluded=True)
    assert rules(first, "missing-caption") == ["10_x/a.png"]
    assert [f.id for f in first.findings] == [f.id for f in lint(root, include_excluded=True).findings]


# --- kiln lint ---------------------------------------------------------------------------


def test_cli_json_shape_and_exit_codes(build, capsys) -> None:
    root = build({"10_x/a": "kilnx, solo, sky", "10_x/b": "kilnx, solo, solo"})
    assert main(["lint", str(root), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"root", "images", "triggers", "tokens", "counts", "findings"}
    assert data["counts"] == {"duplicate-tag": 1}
    assert data["findings"][0] == {
        "id": "duplicate-tag:10_x/b.txt:solo",
        "rule": "duplicate-tag",
        "severity": "warning",
        "file": "10_x/b.txt",
        "message": "'solo' appears 2 times",
        "fix": f"kiln tags {root.resolve()} dedupe --match '10_x/b.*'",
    }
    assert data["triggers"]["x"] == {"word": "kilnx", "source": "inferred", "support": 2, "captions": 2}
    assert data["tokens"]["available"] is True and data["tokens"]["max"] == 6  # kil·n·x , solo , sky
    (root / "10_x/b.txt").write_text("kilnx, solo, moon")
    assert main(["lint", str(root)]) == 0
    out = capsys.readouterr().out
    assert "0 finding(s) in 2 image(s)" in out and "longest caption: 6 of 75 CLIP tokens" in out


def test_cli_text_says_why_token_counts_are_missing(build, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    root = build({"10_x/a": None})
    monkeypatch.setattr(clip_tokens, "tokenizer_dir", lambda: root / "no-tokenizer")
    assert main(["lint", str(root)]) == 1
    out = capsys.readouterr().out
    assert "missing-caption 10_x/a.png" in out and "fix:" in out
    assert "reinstall Kiln" in out
    assert main(["lint", str(root / "nope")]) == 1
