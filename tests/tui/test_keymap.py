"""The user's keymap: ``$XDG_CONFIG_HOME/kiln/keymap.toml`` remaps keys by binding id."""

from __future__ import annotations

from pathlib import Path

from kiln.tui.keymap import binding_ids, keymap_path, read_keymap

from tests.tui.helpers import make_app

SIZE = (120, 40)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_the_file_lives_under_xdg_config_home(tmp_path: Path) -> None:
    assert keymap_path({"XDG_CONFIG_HOME": str(tmp_path)}) == tmp_path / "kiln" / "keymap.toml"
    assert keymap_path({}) == Path.home() / ".config" / "kiln" / "keymap.toml"


def test_a_missing_file_changes_nothing(tmp_path: Path) -> None:
    keymap = read_keymap(tmp_path / "none.toml")
    assert keymap.keys == {} and keymap.problems == []


def test_keys_are_read_and_problems_name_the_file_and_the_key(tmp_path: Path) -> None:
    path = write(
        tmp_path / "keymap.toml",
        '[keys]\n"dataset.toggle" = "x"\n"dataset.togle" = "y"\n"dataset.sort" = 3\n'
        '"dataset.filter" = "ctrl+f, slash"\n',
    )
    keymap = read_keymap(path, known_ids={"dataset.toggle", "dataset.sort", "dataset.filter"})
    assert keymap.keys == {"dataset.toggle": "x", "dataset.filter": "ctrl+f,slash"}
    assert len(keymap.problems) == 2
    assert all(str(path) in problem for problem in keymap.problems)
    assert '"dataset.togle" is not a binding id' in keymap.problems[0]
    assert '"dataset.sort" needs a key' in keymap.problems[1]


def test_a_file_that_is_not_toml_is_one_line(tmp_path: Path) -> None:
    path = write(tmp_path / "keymap.toml", "[keys\n")
    keymap = read_keymap(path)
    assert keymap.keys == {}
    assert len(keymap.problems) == 1 and keymap.problems[0].startswith(f"{path}: not valid TOML")


def test_every_binding_has_an_id_listed_by_section() -> None:
    groups = binding_ids()
    ids = [binding_id for group in groups.values() for binding_id, _ in group]
    assert len(ids) == len(set(ids))
    assert {"app.quit", "dataset.toggle", "plan.rename", "runs.new", "tec.measure"} <= set(ids)


def test_the_keymap_documentation_lists_every_binding_id() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "keymap.md").read_text(encoding="utf-8")
    missing = [
        binding_id
        for group in binding_ids().values()
        for binding_id, _ in group
        if f"`{binding_id}`" not in doc
    ]
    assert not missing


async def test_a_remapped_key_works_and_the_old_one_no_longer_does(
    sample_copy: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    write(tmp_path / "config" / "kiln" / "keymap.toml", '[keys]\n"dataset.toggle" = "x"\n')
    app = make_app(sample_copy)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        first = app.screen.current_path()
        await pilot.press("space")
        assert all(row.included for row in app.curation.rows.values())
        await pilot.press("x")
        await pilot.pause()
        assert not app.curation.rows[first].included


async def test_a_bad_keymap_is_reported_and_the_app_runs(sample_copy: Path, tmp_path: Path) -> None:
    path = write(tmp_path / "keymap.toml", '[keys]\n"dataset.nope" = "x"\n')
    app = make_app(sample_copy, keymap=path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        messages = [notification.message for notification in app._notifications]
        assert any(str(path) in message and '"dataset.nope"' in message for message in messages)
        first = app.screen.current_path()
        await pilot.press("space")  # the default keys still work
        await pilot.pause()
        assert not app.curation.rows[first].included
