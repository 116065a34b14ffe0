"""Captioning runs: modes, trigger placement, bad images, cancel, undo, and ``kiln caption``."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from kiln.cli import main
from kiln.engine.caption.autocaption import (
    FAILED,
    SKIPPED,
    UNCHANGED,
    WRITTEN,
    CaptionOptions,
    caption_images,
    compose_caption,
    load_captioner,
)
from kiln.engine.caption.settings import Wd14Settings
from kiln.engine.caption.undo import History
from kiln.engine.dataset.scan import scan_dataset
from kiln.engine.dataset.selection import set_included
from kiln.engine.dataset.store import Store
from kiln.engine.errors import ModelError, UsageError
from PIL import Image

from tests.caption_models import write_wd14_model

WD14_RED = "hakurei reimu (cosplay), red theme, long hair, ^_^"


@pytest.fixture(scope="module")
def wd14_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_wd14_model(tmp_path_factory.mktemp("wd14") / "model")


@pytest.fixture
def red_dataset(tmp_path: Path) -> Path:
    """Three red images, one with a caption, one broken file."""
    folder = tmp_path / "data" / "10_red"
    folder.mkdir(parents=True)
    for name in ("a", "b", "c"):
        Image.new("RGB", (32, 32), (255, 0, 0)).save(folder / f"{name}.png")
    (folder / "b.txt").write_text("hand written", encoding="utf-8")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return tmp_path / "data"


def run(root: Path, options: CaptionOptions, captioner, **kwargs):
    dataset = scan_dataset(root)
    with Store(dataset.root) as store:
        return caption_images(dataset.images, captioner, options, root=dataset.root, store=store, **kwargs)


def test_compose_puts_the_trigger_first_or_last_once() -> None:
    first = CaptionOptions(mode="overwrite", trigger="kilnstyle", trigger_position="first")
    last = CaptionOptions(mode="overwrite", trigger="kilnpot", trigger_position="last")
    assert compose_caption("no humans, sky", None, first) == "kilnstyle, no humans, sky"
    assert compose_caption("a red pot on a table", None, last) == "a red pot on a table, kilnpot"
    assert compose_caption("sky, KilnStyle", None, first) == "sky, KilnStyle"  # present: kept
    append = CaptionOptions(mode="append", trigger="kilnstyle", trigger_position="first")
    assert compose_caption("sky, grass", "kilnstyle, sky, night", append) == "kilnstyle, sky, night, grass"
    assert compose_caption("sky, grass", "sky", append) == "kilnstyle, sky, grass"
    with pytest.raises(UsageError):
        CaptionOptions(mode="replace")
    with pytest.raises(UsageError):
        CaptionOptions(trigger="a, b")


def test_skip_mode_keeps_existing_captions_and_reports_bad_images(
    red_dataset: Path, wd14_model: Path
) -> None:
    tagger = load_captioner("wd14", wd14_model, Wd14Settings(batch_size=2))
    seen = []
    options = CaptionOptions(mode="skip", trigger="kilnred", trigger_position="first")
    result = run(red_dataset, options, tagger, on_outcome=seen.append)
    statuses = {outcome.rel_path: outcome.status for outcome in result.outcomes}
    assert statuses == {
        "10_red/a.png": WRITTEN,
        "10_red/b.png": SKIPPED,
        "10_red/broken.png": FAILED,
        "10_red/c.png": WRITTEN,
    }
    assert seen == result.outcomes  # reported as they happen, one per image
    folder = red_dataset / "10_red"
    assert (folder / "a.txt").read_text() == f"kilnred, {WD14_RED}"
    assert (folder / "b.txt").read_text() == "hand written"
    assert not (folder / "broken.txt").exists()
    error = result.failed[0].error
    assert "\n" not in error and "re-export" in error
    assert sorted(path.name for path in folder.iterdir() if path.name.startswith(".")) == []  # no temp files


def test_overwrite_append_unchanged_and_one_undo_step(red_dataset: Path, wd14_model: Path) -> None:
    tagger = load_captioner("wd14", wd14_model)
    folder = red_dataset / "10_red"
    result = run(
        red_dataset, CaptionOptions(mode="append", trigger="kilnred", trigger_position="last"), tagger
    )
    assert (folder / "b.txt").read_text() == f"hand written, {WD14_RED}, kilnred"
    assert result.step is not None
    again = run(
        red_dataset, CaptionOptions(mode="append", trigger="kilnred", trigger_position="last"), tagger
    )
    assert again.count(UNCHANGED) == 3 and again.step is None  # nothing written: no undo step
    run(red_dataset, CaptionOptions(mode="overwrite"), tagger)
    assert (folder / "b.txt").read_text() == WD14_RED
    with Store(red_dataset.resolve()) as store:
        history = History(store)
        assert [step.description for step in history.steps()] == [
            "caption (wd14, overwrite)",
            "caption (wd14, append)",
        ]
        history.undo()
        assert (folder / "b.txt").read_text() == f"hand written, {WD14_RED}, kilnred"
        history.undo()
    assert (folder / "b.txt").read_text() == "hand written"
    assert not (folder / "a.txt").exists()


def test_append_adds_tags_before_a_trigger_that_ends_the_caption() -> None:
    given = CaptionOptions(mode="append", trigger="kilnpot", trigger_position="first")
    sentence = "a red pot on a wooden table, kilnpot"
    assert compose_caption("simple background, pot", sentence, given) == (
        "a red pot on a wooden table, simple background, pot, kilnpot"
    )
    inferred = CaptionOptions(mode="append")
    assert compose_caption("simple background", sentence, inferred, known_trigger="kilnpot") == (
        "a red pot on a wooden table, simple background, kilnpot"
    )
    assert (
        compose_caption("sky", "kilnpot, a pot", inferred, known_trigger="kilnpot") == "kilnpot, a pot, sky"
    )
    assert compose_caption("sky", "a pot, kilnpot", inferred) == "a pot, kilnpot, sky"  # no trigger known


def test_wd14_append_on_sentence_captions_keeps_the_trigger_last_and_lint_clean(
    tmp_path: Path, wd14_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "data" / "10_pot"
    folder.mkdir(parents=True)
    for index, colour in enumerate(("red", "blue", "green")):
        Image.new("RGB", (32, 32), (255, 0, 0)).save(folder / f"{index}.png")
        (folder / f"{index}.txt").write_text(f"a {colour} pot on a table, kilnpot", encoding="utf-8")
    result = run(tmp_path / "data", CaptionOptions(mode="append"), load_captioner("wd14", wd14_model))
    assert result.count(WRITTEN) == 3
    assert (folder / "0.txt").read_text() == f"a red pot on a table, {WD14_RED}, kilnpot"
    main(["lint", str(tmp_path / "data"), "--json"])  # warnings remain (same tags everywhere)
    report = json.loads(capsys.readouterr().out)
    assert report["triggers"]["pot"]["word"] == "kilnpot"
    assert not [f for f in report["findings"] if f["rule"] == "missing-trigger"]


class FakeCaptioner:
    """A captioner that says which batch it is in, and fails a chosen batch."""

    style = "fake"
    batch_size = 2

    def __init__(self, fail_batch: int | None = None) -> None:
        self.batches: list[int] = []
        self.fail_batch = fail_batch

    def caption_batch(self, images: Sequence[Image.Image]) -> list[str]:
        self.batches.append(len(images))
        if len(self.batches) - 1 == self.fail_batch:
            raise RuntimeError("CUDA out of memory\nlong traceback text")
        return [f"batch {len(self.batches)}" for _ in images]

    def close(self) -> None:
        pass


@pytest.fixture
def five_images(make_dataset: Callable[..., Path]) -> Path:
    return make_dataset({f"1_x/{index}.png": 50 for index in range(5)})


def test_a_failing_batch_costs_only_its_own_images(five_images: Path) -> None:
    result = run(five_images, CaptionOptions(mode="overwrite"), FakeCaptioner(fail_batch=1))
    assert [outcome.status for outcome in result.outcomes] == [WRITTEN, WRITTEN, FAILED, FAILED, WRITTEN]
    assert result.outcomes[2].error == "captioner failed: CUDA out of memory"
    assert (five_images / "1_x/4.txt").read_text() == "batch 3"


def test_should_stop_ends_the_run_between_batches(five_images: Path) -> None:
    captioner = FakeCaptioner()
    result = run(
        five_images, CaptionOptions(mode="overwrite"), captioner, should_stop=lambda: bool(captioner.batches)
    )
    assert result.stopped and captioner.batches == [2]
    assert [outcome.rel_path for outcome in result.outcomes] == ["1_x/0.png", "1_x/1.png"]
    assert not (five_images / "1_x/2.txt").exists()


def test_a_caption_written_during_the_run_is_not_overwritten(five_images: Path) -> None:
    class Meddler(FakeCaptioner):
        def caption_batch(self, images):
            (five_images / "1_x/1.txt").write_text("written by hand meanwhile")
            return super().caption_batch(images)

    result = run(five_images, CaptionOptions(mode="skip"), Meddler())
    assert [outcome.status for outcome in result.outcomes][:2] == [WRITTEN, SKIPPED]
    assert (five_images / "1_x/1.txt").read_text() == "written by hand meanwhile"


def test_an_unusable_model_stops_the_run(five_images: Path) -> None:
    class Broken(FakeCaptioner):
        def caption_batch(self, images):
            raise ModelError("model.onnx: scored 3 tags, selected_tags.csv lists 4")

    with pytest.raises(ModelError, match="scored 3 tags"):
        run(five_images, CaptionOptions(mode="overwrite"), Broken())
    assert not list(five_images.glob("1_x/*.txt"))


def test_append_refuses_a_non_utf8_caption(five_images: Path) -> None:
    raw = b"caf\xe9"
    (five_images / "1_x/0.txt").write_bytes(raw)
    result = run(five_images, CaptionOptions(mode="append"), FakeCaptioner())
    assert result.outcomes[0].status == FAILED and "not valid UTF-8" in result.outcomes[0].error
    assert (five_images / "1_x/0.txt").read_bytes() == raw


# --- kiln caption ----------------------------------------------------------------------


def test_cli_wd14_json_only_included_images_and_exit_1_on_a_bad_image(
    red_dataset: Path, wd14_model: Path, capsys
) -> None:
    with Store(red_dataset.resolve()) as store:
        set_included(store, ["10_red/c.png"], False)
    argv = [
        "caption",
        str(red_dataset),
        "--style",
        "wd14",
        "--model",
        str(wd14_model),
        "--trigger",
        "kilnred",
    ]
    assert main([*argv, "--json", "--rating"]) == 1  # the broken image failed
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert data["counts"] == {"written": 1, "unchanged": 0, "skipped": 1, "failed": 1}
    assert [image["path"] for image in data["images"]] == [
        "10_red/a.png",
        "10_red/b.png",
        "10_red/broken.png",
    ]
    assert data["images"][0]["caption"] == f"kilnred, sensitive, {WD14_RED}"
    assert "broken.png" in captured.err and "re-export" in captured.err
    assert not (red_dataset / "10_red/c.txt").exists()  # excluded
    (red_dataset / "10_red/broken.png").unlink()
    assert main([*argv, "--all", "--mode", "overwrite", "--trigger-position", "last"]) == 0
    assert (red_dataset / "10_red/c.txt").read_text() == f"{WD14_RED}, kilnred"
    assert "written" in capsys.readouterr().out


def test_cli_loads_no_model_when_every_image_is_captioned(
    tmp_path: Path, make_dataset, wd14_model: Path, capsys, monkeypatch
) -> None:
    import kiln.engine.caption.autocaption as autocaption

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded with nothing to caption")

    monkeypatch.setattr(autocaption, "load_captioner", refuse)
    root = make_dataset({"1_x/a.png": 50}, {"1_x/a.txt": "done"})
    argv = ["caption", str(root), "--style", "wd14", "--model", str(wd14_model), "--json"]
    assert main(argv) == 0  # the folder is checked, the model is never loaded
    assert json.loads(capsys.readouterr().out)["counts"]["skipped"] == 1


def test_cli_names_a_missing_model_folder_even_with_nothing_to_caption(
    tmp_path: Path, make_dataset, capsys
) -> None:
    root = make_dataset({"1_x/a.png": 50}, {"1_x/a.txt": "done"})
    argv = ["caption", str(root), "--style", "wd14", "--model", str(tmp_path / "absent")]
    assert main(argv) == 1  # a typo in --model is an error, not a silent success
    assert "no such model folder" in capsys.readouterr().err
    assert main([*argv, "--mode", "overwrite"]) == 1


def test_cli_bad_model_and_bad_usage(red_dataset: Path, tmp_path: Path, capsys) -> None:
    base = ["caption", str(red_dataset), "--style", "wd14"]
    assert main([*base, "--model", str(tmp_path / "none")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such model folder" in err
    nchw = write_wd14_model(tmp_path / "nchw", batch=1, layout="NCHW")
    assert main([*base, "--model", str(nchw)]) == 1
    assert "not [batch, size, size, 3]" in capsys.readouterr().err
    assert (red_dataset / "10_red/b.txt").read_text() == "hand written"
    for argv in (
        [*base, "--model", str(nchw), "--threshold", "1.5"],
        ["caption", str(red_dataset), "--model", "x"],
    ):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
    blip = ["caption", str(red_dataset), "--style", "blip", "--model", "x", "--min-new-tokens", "9"]
    assert main([*blip, "--max-new-tokens", "3"]) == 2
