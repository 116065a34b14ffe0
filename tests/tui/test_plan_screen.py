"""Pilot tests for the plan screen: results as you type, reverse mode, validation, the dataset
source following the selection, the folder rename and section switching."""

from __future__ import annotations

from pathlib import Path

from kiln.engine.dataset.selection import excluded_paths
from kiln.engine.plan.saved import load_plan_settings
from kiln.tui.screens.dataset import DatasetScreen
from kiln.tui.screens.plan import PlanScreen
from kiln.tui.screens.rename import RenameConceptScreen
from kiln.tui.widgets.dsb_gauge import DsbGauge
from kiln.tui.widgets.image_table import ImageTable
from kiln.tui.widgets.plan_field import PlanField
from textual import events
from textual.binding import Binding
from textual.widgets import DataTable, Input, Select

from tests.tui.helpers import analysed, make_app, wait_for

SIZE = (120, 40)


async def open_plan(pilot) -> PlanScreen:
    """Switch to the plan section and wait for its first count of the dataset."""
    await pilot.press("2")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, PlanScreen) and pilot.app.screen.outcome.ok)
    return pilot.app.screen


async def type_into(pilot, key: str, text: str) -> None:
    """Focus a field, clear it and type ``text`` key by key, as a user would."""
    pilot.app.screen.query_one(f"#{key}", Input).focus()
    await pilot.pause()
    await pilot.press("ctrl+u", *text)


async def put(pilot, **values: str) -> None:
    """Set fields the way a paste would (one change each): for tests about results, not keys."""
    for key, value in values.items():
        pilot.app.screen.query_one(f"#{key}", Input).value = value
    await pilot.pause()


def field(screen: PlanScreen, key: str) -> PlanField:
    return screen.query_one(f"#field-{key}", PlanField)


def message(screen: PlanScreen, key: str) -> str:
    """The validation message under a field ('' when it has none)."""
    widget = field(screen, key)
    return str(widget.query_one(".message").content) if widget.has_class("-invalid") else ""


def shown(screen: PlanScreen, key: str) -> str:
    """The value shown in place of a field's input ('' when the input is shown)."""
    widget = field(screen, key)
    return str(widget.query_one(".shown").content) if widget.has_class("-shown") else ""


def text_of(screen: PlanScreen, selector: str) -> str:
    return " ".join(str(screen.query_one(selector).content).split())


def rows(screen: PlanScreen, table: str) -> list[list[str]]:
    data = screen.query_one(f"#{table}", DataTable)
    return [[str(cell) for cell in data.get_row_at(index)] for index in range(data.row_count)]


async def test_typing_the_guides_numbers_gives_88_steps_per_epoch_and_792_and_advice(
    analysed_copy: Path,
) -> None:
    app = make_app(analysed_copy)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_plan(pilot)
        await pilot.press("ctrl+t")  # typed source
        for key, value in (("images", "10"), ("repeats", "35"), ("batch", "4"), ("epochs", "9")):
            await type_into(pilot, key, value)
        plan = screen.outcome.plan
        assert (plan.steps_per_epoch, plan.total_steps, plan.plain_total_steps) == (88, 792, 787.5)
        headline = text_of(screen, "#headline")
        assert "88 steps per epoch · 792 steps in all" in headline
        assert "10 images × 35 repeats = 350 samples per epoch; batch 4 → 88 batches; 9 epochs" in headline
        explain = text_of(screen, "#explain")
        assert "Plain formula 787.5" in explain
        assert "350 samples = 87 batches of 4 + a short one of 2" in explain
        assert rows(screen, "buckets") == [["all images", "10", "350", "88"]]
        warnings = text_of(screen, "#warnings")
        assert "epochs-below-10" in warnings and "steps-per-epoch-low" in warnings
        assert "batch-above-2-final" in warnings
        # One more keystroke moves everything at once.
        await type_into(pilot, "epochs", "10")
        assert "88 steps per epoch · 880 steps in all" in text_of(screen, "#headline")
        assert "epochs-below-10" not in text_of(screen, "#warnings")
        # bf16 asks the GPU once (in a worker: the real probe imports torch).
        calls = []
        screen.bf16_supported = lambda: calls.append(1) or False
        screen.query_one("#precision", Select).value = "bf16"
        await wait_for(pilot, lambda: "bf16-unsupported" in text_of(screen, "#warnings"))
        await type_into(pilot, "batch", "2")
        assert calls == [1] and "bf16-unsupported" in text_of(screen, "#warnings")


async def test_reverse_mode_solves_35_repeats_for_3500_steps(analysed_copy: Path) -> None:
    app = make_app(analysed_copy)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_plan(pilot)
        await pilot.press("ctrl+t")
        assert not field(screen, "target").display  # no target while counting steps
        screen.query_one("#solve", Select).focus()
        await pilot.press("enter", "down", "enter")  # "repeats for target"
        assert screen.query_one("#solve", Select).value == "repeats"
        assert field(screen, "target").display
        await type_into(pilot, "target", "3500")
        await type_into(pilot, "images", "10")
        assert shown(screen, "repeats") == "35 solved"
        assert screen.outcome.plan.total_steps == 3500
        assert text_of(screen, "#headline").startswith("35 repeats reach 3500 steps")
        # Solving epochs instead: the typed repeats count, the epochs are solved.
        screen.query_one("#solve", Select).value = "epochs"
        await pilot.pause()
        await put(pilot, repeats="35", batch="4")
        assert shown(screen, "epochs") == "40 solved" and shown(screen, "repeats") == ""
        assert screen.outcome.plan.total_steps == 3520


async def test_bad_values_get_inline_messages_and_never_crash(analysed_copy: Path) -> None:
    app = make_app(analysed_copy)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_plan(pilot)
        await pilot.press("ctrl+t")
        await type_into(pilot, "images", "ten")
        await type_into(pilot, "batch", "0")
        await put(pilot, repeats="-3", epochs="1.5", resolution="big", unet_lr="fast")
        assert message(screen, "images") == "'ten' is not a whole number; type e.g. 4"
        assert message(screen, "repeats") == "-3 is too small: type at least 1"
        assert message(screen, "batch") == "0 is too small: type at least 1"
        assert "not a whole number" in message(screen, "epochs")
        assert "not a resolution" in message(screen, "resolution")
        assert "not a number" in message(screen, "unet_lr")
        assert screen.outcome.plan is None
        assert text_of(screen, "#headline").startswith("No plan yet: fix images, repeats, batch, epochs")
        assert not screen.query_one("#buckets").display
        await put(pilot, images="2", repeats="1", epochs="10", resolution="2048")
        assert "above max_bucket_reso 1024" in message(screen, "resolution")
        await put(pilot, resolution="512x768", unet_lr="1e-4", batch="4")
        assert message(screen, "batch").startswith("batch 4 is larger than the 2 sample(s) of an epoch")
        assert message(screen, "images") == message(screen, "repeats") == message(screen, "resolution") == ""
        await type_into(pilot, "batch", "2")
        assert message(screen, "batch") == "" and screen.outcome.plan.total_steps == 10
        await put(pilot, te_lr="1/0")
        assert "divisor must be above 0" in message(screen, "te_lr")
        await put(pilot, te_lr="1/5")
        assert str(field(screen, "te_lr").query_one(".message").content) == "= 2e-05"


async def test_dataset_source_counts_included_images_per_bucket_and_follows_toggles(
    analysed_copy: Path,
) -> None:
    app = make_app(analysed_copy)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_plan(pilot)
        assert shown(screen, "images") == "12 included"
        assert rows(screen, "buckets") == [["448x576", "6", "60", "60"], ["576x448", "6", "30", "30"]]
        assert rows(screen, "concepts") == [
            ["10_kilnpot", "10", "6", "60", ""],
            ["5_kilnstyle", "5", "6", "30", ""],
        ]
        assert screen.outcome.plan.total_steps == 900
        await put(pilot, repeats="20")  # what if every folder had 20
        assert screen.outcome.plan.items_per_epoch == 240
        assert rows(screen, "concepts")[1][-1] == "→ 20"
        await put(pilot, resolution="384")
        await wait_for(
            pilot, lambda: screen.load_spec is not None and screen.load_spec.target_size == (384, 384)
        )
        assert [row[0] for row in rows(screen, "buckets")] == ["320x448", "448x320"]
        # Back on the dataset screen, one image goes out; the plan follows on return.
        await put(pilot, repeats="", resolution="512")
        await pilot.press("escape", "1")
        assert isinstance(app.screen, DatasetScreen)
        await pilot.press("space")  # 10_kilnpot/pot_01.jpg out
        assert not app.curation.rows["10_kilnpot/pot_01.jpg"].included
        await pilot.press("2")
        await wait_for(pilot, lambda: screen.outcome.ok and screen.outcome.plan.items_per_epoch == 80)
        assert shown(screen, "images") == "11 included"
        assert rows(screen, "concepts")[0][:4] == ["10_kilnpot", "10", "5", "50"]


async def test_rename_applies_repeats_after_confirmation_and_keeps_the_selection(analysed_copy: Path) -> None:
    app = make_app(analysed_copy)
    async with app.run_test(size=SIZE) as pilot:
        await analysed(pilot)
        await pilot.press("down", "space", "down")  # exclude pot_02, cursor on pot_03
        screen = await open_plan(pilot)
        await pilot.press("ctrl+r")
        assert not isinstance(app.screen, RenameConceptScreen)  # nothing to apply yet
        await type_into(pilot, "repeats", "60")
        await pilot.press("escape")  # to the concepts table, cursor on 10_kilnpot
        assert screen.highlighted_folder() == "10_kilnpot"
        assert "ctrl+r: 10_kilnpot/ → 60_kilnpot/" in text_of(screen, "#concepts-title")
        await pilot.press("ctrl+r")
        assert isinstance(app.screen, RenameConceptScreen)
        await pilot.press("escape")  # cancel: nothing moves
        assert (analysed_copy / "10_kilnpot").is_dir() and not (analysed_copy / "60_kilnpot").exists()
        await pilot.press("ctrl+r", "y")
        assert (analysed_copy / "60_kilnpot" / "pot_02.jpg").is_file() and not (
            analysed_copy / "10_kilnpot"
        ).exists()
        assert not app.curation.rows["60_kilnpot/pot_02.jpg"].included
        assert excluded_paths(app.curation.store) == {"60_kilnpot/pot_02.jpg"}
        # 60_kilnpot now sorts after 5_kilnstyle: the cursor follows the renamed folder.
        await wait_for(pilot, lambda: rows(screen, "concepts")[1][:2] == ["60_kilnpot", "60"])
        assert screen.highlighted_folder() == "60_kilnpot"
        assert "ctrl+r: 5_kilnstyle" not in text_of(screen, "#concepts-title")
        await pilot.press("1")
        dataset = app.screen
        assert isinstance(dataset, DatasetScreen)
        keys = dataset.query_one(ImageTable).keys
        assert "60_kilnpot/pot_02.jpg" in keys and not any(key.startswith("10_kilnpot/") for key in keys)
        assert dataset.current_path() == "60_kilnpot/pot_03.jpg"  # the cursor stayed on its image
        assert str(dataset.cells_for("60_kilnpot/pot_02.jpg")[0]) == "·"
        assert app.curation.pending() == []  # analyses followed the folder
        gauge = dataset.query_one(DsbGauge).summary
        assert gauge == app.curation.summary() and gauge.images == 11


async def test_rename_never_overwrites_a_folder_nor_drops_a_caption_edit(analysed_copy: Path) -> None:
    (analysed_copy / "35_kilnpot").mkdir()
    app = make_app(analysed_copy)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_plan(pilot)
        await type_into(pilot, "repeats", "35")
        await pilot.press("escape", "ctrl+r", "y")
        assert (analysed_copy / "10_kilnpot" / "pot_01.jpg").is_file()
        assert list((analysed_copy / "35_kilnpot").iterdir()) == []
        assert isinstance(app.screen, PlanScreen) and screen.outcome.ok
        assert any("already exists" in note.message for note in app._notifications)
        # An unsaved caption edit on the dataset screen would lose its file: no rename then.
        (analysed_copy / "35_kilnpot").rmdir()
        app.section_screens["dataset"].editor.text_area.text = "an edit not saved yet"
        await pilot.press("ctrl+r")
        assert isinstance(app.screen, PlanScreen) and (analysed_copy / "10_kilnpot").is_dir()
        assert any("caption edit" in note.message for note in app._notifications)


async def test_digits_type_into_fields_and_switch_sections_outside_them(analysed_copy: Path) -> None:
    app = make_app(analysed_copy)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_plan(pilot)
        await type_into(pilot, "batch", "2")
        await pilot.press("1")  # typed, not a section switch
        assert app.screen is screen and field(screen, "batch").text == "21"
        await pilot.press("backspace", "escape", "1")
        assert isinstance(app.screen, DatasetScreen)
        await pilot.press("2")
        assert app.screen is screen and field(screen, "batch").text == "2"  # kept between visits
        await pilot.press("e")
        assert app.focused is field(screen, "repeats").input
        # Over SSH several keys can arrive in one read: each tab still moves on before the next key.
        for key in ["4", "tab", "3", "tab", "9"]:
            app.post_message(events.Key(key, "\t" if key == "tab" else key))
        await wait_for(pilot, lambda: field(screen, "epochs").text == "9")
        assert (field(screen, "repeats").text, field(screen, "batch").text) == ("4", "3")


def test_every_plan_binding_has_an_id_and_a_tooltip() -> None:
    for owner in (PlanScreen, RenameConceptScreen):
        for binding in owner.BINDINGS:
            assert isinstance(binding, Binding)
            assert binding.id and binding.tooltip, (owner.__name__, binding.key)


async def test_choosing_sdxl_plans_at_1024_and_advises_on_memory(analysed_copy: Path, monkeypatch) -> None:
    from kiln.tui.screens import plan
    from textual.widgets import Checkbox

    calls = []
    monkeypatch.setattr(plan, "cuda_memory_gib", lambda: calls.append(1) or 16.0)
    app = make_app(analysed_copy)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_plan(pilot)
        assert field(screen, "resolution").text == "512"
        screen.query_one("#family", Select).value = "sdxl"
        await wait_for(pilot, lambda: field(screen, "resolution").text == "1024")
        await wait_for(pilot, lambda: "Aspect buckets at 1024x1024" in text_of(screen, "#buckets-title"))
        assert {row[0] for row in rows(screen, "buckets")} == {"832x1024", "1024x832"}
        # The GPU is asked once (in a worker), the SD 1.5 plan fits 16 GB, and SDXL under 24 GB
        # needs both savings.
        assert "gpu-memory" not in text_of(screen, "#warnings")
        await wait_for(pilot, lambda: "sdxl-memory" in text_of(screen, "#warnings"))
        screen.query_one("#gradient_checkpointing", Checkbox).value = True
        await put(pilot, te_lr="0")
        await wait_for(pilot, lambda: "sdxl-memory" not in text_of(screen, "#warnings"))
        assert calls == [1]
        # A typed resolution is the user's: switching back keeps it.
        await put(pilot, resolution="768")
        screen.query_one("#family", Select).value = "sd15"
        await pilot.pause()
        assert field(screen, "resolution").text == "768"
        assert screen.read_inputs().family == "sd15"


async def test_a_reg_folder_is_balanced_and_counted_in_the_plan(analysed_copy: Path, tmp_path: Path) -> None:
    from PIL import Image

    reg = tmp_path / "reg"
    (reg / "1_pot").mkdir(parents=True)
    for index in range(20):
        Image.new("RGB", (576, 448), (index, 0, 0)).save(reg / "1_pot" / f"{index:02d}.png")
    app = make_app(analysed_copy)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_plan(pilot)
        before = screen.outcome.plan.steps_per_epoch
        await put(pilot, reg=str(tmp_path / "missing"))
        await wait_for(pilot, lambda: message(screen, "reg") == "no such folder")
        await put(pilot, reg=str(reg))
        await wait_for(pilot, lambda: "+ 90 reg samples per epoch" in text_of(screen, "#headline"))
        # sample_data: 90 training samples per epoch; 20 class images balanced to 90 more.
        assert screen.outcome.plan.items_per_epoch == 180
        assert screen.outcome.plan.steps_per_epoch == 2 * before
        assert message(screen, "reg") == ""


async def test_choosing_a_subject_shows_the_guides_precision_for_it(analysed_copy: Path) -> None:
    app = make_app(analysed_copy)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_plan(pilot)
        calls = []
        screen.bf16_supported = lambda: calls.append(1) or True
        await pilot.press("ctrl+t")  # typed: 10 x 10 at batch 1 keeps every rule
        await put(pilot, images="10", repeats="10")
        subject = screen.query_one("#subject", Select)
        assert subject.value == "" and screen.read_inputs().subject is None  # not chosen yet
        warnings = text_of(screen, "#warnings")
        assert "precision-" not in warnings
        assert "fp16-loss-scaling" in warnings and "✓ Within every rule of the guide." in warnings
        subject.focus()
        await pilot.press("enter", "down", "down", "enter")  # "not chosen", "character", "outfit"
        assert subject.value == "outfit"
        screen.query_one("#precision", Select).value = "bf16"
        await wait_for(pilot, lambda: "precision-for-subject" in text_of(screen, "#warnings"))
        warnings = text_of(screen, "#warnings")
        assert "bf16 for an outfit: the guide picks fp16 or bf16 by what is trained; use fp16" in warnings
        assert "limited dynamic range" in warnings and "Within every rule" not in warnings
        # A character in fp16 on a GPU with bf16: the guide's bf16, and the GPU was asked once.
        subject.value = "character"
        screen.query_one("#precision", Select).value = "fp16"
        await wait_for(pilot, lambda: "fp16 for a character" in text_of(screen, "#warnings"))
        assert "use bf16: in almost all other cases it is more precise" in text_of(screen, "#warnings")
        assert calls == [1]
        screen.save_settings()
        assert load_plan_settings(app.curation.store)["subject"] == "character"
