"""Tag operations, their selection, and undo that survives a restart."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from kiln.engine.caption import tags
from kiln.engine.caption.tagtext import is_sentence, join_tags, split_tags, tag_key
from kiln.engine.caption.undo import MAX_STEPS, History, UndoConflict
from kiln.engine.dataset.scan import scan_dataset
from kiln.engine.dataset.selection import set_included
from kiln.engine.dataset.store import Store
from kiln.engine.errors import KilnError, UsageError

CAPTIONS = {
    "10_cat/a.txt": "a grey cat sitting on a wooden table, kilncat",
    "10_cat/b.txt": "kilncat, cat ears, long hair, cat ears",
    "10_cat/c.txt": "kilncat,long hair,  smile",
    "5_dog/d.txt": "a dog, solo, long hair",
}
IMAGES = {"10_cat/a.png": 50, "10_cat/b.png": 50, "10_cat/c.png": 50, "5_dog/d.png": 50, "5_dog/e.png": 50}


@pytest.fixture
def root(make_dataset: Callable[..., Path]) -> Path:
    return make_dataset(IMAGES, CAPTIONS)


def text(root: Path, rel: str) -> str:
    return (root / rel).read_text(encoding="utf-8")


def run_edit(root: Path, edit: tags.TagEdit, **select) -> tuple[tags.TagPlan, tags.ApplyResult]:
    dataset = scan_dataset(root)
    with Store(dataset.root) as store:
        records = tags.select_records(dataset, store, **select)
        plan = tags.plan_edit(records, edit)
        return plan, tags.apply_plan(plan, dataset.root, store)


def undo(root: Path, **kwargs):
    with Store(root.resolve()) as store:
        return History(store).undo(**kwargs)


def test_tag_text_helpers() -> None:
    assert split_tags(" a ,b,, c\nd ,") == ["a", "b", "c d"]
    assert join_tags(["a", "b"]) == "a, b"
    assert tag_key("  Long   Hair ") == "long hair"
    assert is_sentence("a grey cat") and is_sentence("three people walking down the road")
    assert not is_sentence("long hair") and not is_sentence("looking at viewer") and not is_sentence("solo")


def test_add_at_first_last_and_index_without_duplicates(root: Path) -> None:
    run_edit(root, tags.add_edit(["smile"], "first"))
    assert text(root, "10_cat/a.txt") == "smile, a grey cat sitting on a wooden table, kilncat"
    assert text(root, "10_cat/c.txt") == "kilncat,long hair,  smile"  # had it: untouched, spacing kept
    run_edit(root, tags.add_edit(["new1, new2"], 1), concepts=["dog"])
    assert text(root, "5_dog/d.txt") == "smile, new1, new2, a dog, solo, long hair"
    run_edit(root, tags.add_edit(["end"], -2), concepts=["dog"])
    assert text(root, "5_dog/d.txt") == "smile, new1, new2, a dog, solo, end, long hair"


def test_add_creates_missing_captions_and_undo_deletes_them(root: Path) -> None:
    plan, _ = run_edit(root, tags.add_edit(["kilndog"]), concepts=["dog"])
    assert text(root, "5_dog/e.txt") == "kilndog"
    assert [change.before for change in plan.changes if change.image == "5_dog/e.png"] == [None]
    assert set(undo(root).restored) == {"5_dog/d.txt", "5_dog/e.txt"}
    assert not (root / "5_dog/e.txt").exists()
    assert text(root, "5_dog/d.txt") == CAPTIONS["5_dog/d.txt"]


def test_remove_exact_ignores_case_and_regex_matches_whole_tags(root: Path) -> None:
    run_edit(root, tags.remove_edit(["Cat Ears", "solo"]))
    assert text(root, "10_cat/b.txt") == "kilncat, long hair"
    assert text(root, "5_dog/d.txt") == "a dog, long hair"
    run_edit(root, tags.remove_edit([r"long \w+"], regex=True))
    assert text(root, "10_cat/b.txt") == "kilncat"
    assert text(root, "10_cat/a.txt") == CAPTIONS["10_cat/a.txt"]  # "long" nowhere whole
    with pytest.raises(UsageError, match="regex"):
        tags.remove_edit(["("], regex=True)


def test_replace_whole_tags_and_inside_sentences_only(root: Path) -> None:
    run_edit(root, tags.replace_edit("cat", "dog"))
    # Inside the BLIP sentence as a whole word; not inside the tag "cat ears" nor "kilncat".
    assert text(root, "10_cat/a.txt") == "a grey dog sitting on a wooden table, kilncat"
    assert text(root, "10_cat/b.txt") == CAPTIONS["10_cat/b.txt"]
    run_edit(root, tags.replace_edit("wooden table", "oak desk"))
    assert text(root, "10_cat/a.txt") == "a grey dog sitting on a oak desk, kilncat"
    run_edit(root, tags.replace_edit("long hair", "short hair"))
    assert text(root, "10_cat/c.txt") == "kilncat, short hair, smile"
    run_edit(root, tags.replace_edit("smile", ""))
    assert text(root, "10_cat/c.txt") == "kilncat, short hair"


def test_regex_replace_applies_inside_every_piece(root: Path) -> None:
    run_edit(root, tags.replace_edit(r"\bcat\b", "feline", regex=True))
    assert text(root, "10_cat/a.txt") == "a grey feline sitting on a wooden table, kilncat"
    assert text(root, "10_cat/b.txt") == "kilncat, feline ears, long hair, feline ears"
    run_edit(root, tags.replace_edit(r"(\w+) hair", r"\1_hair", regex=True))
    assert text(root, "5_dog/d.txt") == "a dog, solo, long_hair"


def test_front_dedupe_and_sort(root: Path) -> None:
    run_edit(root, tags.front_edit(["long hair", "cat ears"]), concepts=["cat"])
    assert text(root, "10_cat/b.txt") == "long hair, cat ears, cat ears, kilncat"
    run_edit(root, tags.dedupe_edit())
    assert text(root, "10_cat/b.txt") == "long hair, cat ears, kilncat"
    dataset = scan_dataset(root)
    with Store(dataset.root) as store:
        records = tags.select_records(dataset, store, concepts=["cat"])
    run_edit(root, tags.sort_edit(tags.frequencies(records)), concepts=["cat"])
    # kilncat in 3 captions, long hair in 2, then the rest in their own order.
    assert text(root, "10_cat/b.txt") == "kilncat, long hair, cat ears"
    assert text(root, "10_cat/a.txt") == "kilncat, a grey cat sitting on a wooden table"


def test_selection_included_all_concept_glob_and_tag(root: Path) -> None:
    dataset = scan_dataset(root)
    with Store(dataset.root) as store:
        set_included(store, ["10_cat/a.png"], False)
        paths = lambda **kw: [r.rel_path for r in tags.select_records(dataset, store, **kw)]  # noqa: E731
        assert "10_cat/a.png" not in paths()
        assert "10_cat/a.png" in paths(include_excluded=True)
        assert paths(concepts=["dog"]) == ["5_dog/d.png", "5_dog/e.png"]
        assert paths(concepts=["10_cat"]) == ["10_cat/b.png", "10_cat/c.png"]
        assert paths(path_glob="*/d.*") == ["5_dog/d.png"]
        assert paths(with_tag="Long Hair") == ["10_cat/b.png", "10_cat/c.png", "5_dog/d.png"]
    run_edit(root, tags.add_edit(["x"]))
    assert text(root, "10_cat/a.txt") == CAPTIONS["10_cat/a.txt"]  # excluded: untouched


def test_stats_count_each_tag_once_per_caption_per_concept(root: Path) -> None:
    dataset = scan_dataset(root)
    stats = tags.tag_stats(dataset.images)
    assert stats.captions == 4
    assert stats.most_common(2) == [("long hair", 3), ("kilncat", 3)] or stats.most_common(2) == [
        ("kilncat", 3),
        ("long hair", 3),
    ]
    assert stats.counts["cat ears"] == 1  # twice in one caption counts once
    data = stats.to_json()
    assert data["concepts"]["cat"]["captions"] == 3 and data["concepts"]["dog"]["captions"] == 1
    assert {"tag": "long hair", "count": 2} in data["concepts"]["cat"]["tags"]


def test_undo_restores_exact_bytes_and_survives_a_restart(root: Path) -> None:
    before = {rel: (root / rel).read_bytes() for rel in CAPTIONS}
    _, result = run_edit(root, tags.add_edit(["zzz"], "first"))
    assert result.step is not None and len(result.written) == 5
    assert text(root, "10_cat/c.txt") == "zzz, kilncat, long hair, smile"
    assert text(root, "5_dog/e.txt") == "zzz"
    # A new Store is a new process as far as the history knows.
    with Store(root.resolve()) as store:
        steps = History(store).steps()
    assert [step.description for step in steps] == ["add zzz (first)"]
    undone = undo(root)
    assert len(undone.restored) == 5
    assert {rel: (root / rel).read_bytes() for rel in CAPTIONS} == before
    assert not (root / "5_dog/e.txt").exists()
    with pytest.raises(KilnError, match="nothing to undo"):
        undo(root)


def test_undo_is_at_least_32_deep(root: Path) -> None:
    original = text(root, "5_dog/d.txt")
    for index in range(33):
        run_edit(root, tags.add_edit([f"t{index}"]), concepts=["dog"], path_glob="*/d.*")
    assert text(root, "5_dog/d.txt").endswith("t31, t32")
    for _ in range(33):
        undo(root)
    assert text(root, "5_dog/d.txt") == original


def test_history_keeps_the_newest_steps_only(root: Path) -> None:
    with Store(root.resolve()) as store:
        history = History(store)
        for index in range(MAX_STEPS + 5):
            history.begin(f"step {index}")
        steps = history.steps()
    assert len(steps) == MAX_STEPS and steps[0].description == f"step {MAX_STEPS + 4}"


def test_undo_never_overwrites_a_later_edit(root: Path) -> None:
    run_edit(root, tags.add_edit(["zzz"]), concepts=["cat"])
    (root / "10_cat/b.txt").write_text("edited by hand", encoding="utf-8")
    with pytest.raises(UndoConflict, match=r"10_cat/b\.txt"):
        undo(root)
    assert text(root, "10_cat/a.txt").endswith("zzz")  # nothing restored
    result = undo(root, force=True)
    assert result.conflicts == ["10_cat/b.txt"] and len(result.restored) == 2
    assert text(root, "10_cat/b.txt") == "edited by hand"
    assert text(root, "10_cat/a.txt") == CAPTIONS["10_cat/a.txt"]


def test_undo_dry_run_keeps_everything(root: Path) -> None:
    run_edit(root, tags.remove_edit(["solo"]))
    result = undo(root, dry_run=True)
    assert result.dry_run and result.restored == ["5_dog/d.txt"]
    assert text(root, "5_dog/d.txt") == "a dog, long hair"
    assert undo(root).restored == ["5_dog/d.txt"]


def test_non_utf8_captions_are_skipped_not_rewritten(root: Path) -> None:
    raw = b"kilncat, caf\xe9"
    (root / "10_cat/c.txt").write_bytes(raw)
    plan, _ = run_edit(root, tags.add_edit(["zzz"]))
    assert ("10_cat/c.png", "c.txt is not valid UTF-8; re-save it as UTF-8") in plan.skipped
    assert (root / "10_cat/c.txt").read_bytes() == raw


def test_apply_refuses_a_caption_changed_since_the_preview(root: Path) -> None:
    dataset = scan_dataset(root)
    with Store(dataset.root) as store:
        plan = tags.plan_edit(tags.select_records(dataset, store), tags.add_edit(["zzz"]))
        (root / "5_dog/d.txt").write_text("changed meanwhile", encoding="utf-8")
        result = tags.apply_plan(plan, dataset.root, store)
    assert [image for image, _ in result.failed] == ["5_dog/d.png"]
    assert text(root, "5_dog/d.txt") == "changed meanwhile"
    assert text(root, "10_cat/c.txt").endswith("zzz")


def test_a_trailing_line_break_is_kept(root: Path) -> None:
    (root / "5_dog/d.txt").write_text("a dog, solo\n", encoding="utf-8")
    run_edit(root, tags.remove_edit(["solo"]))
    assert text(root, "5_dog/d.txt") == "a dog\n"
