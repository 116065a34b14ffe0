"""``kiln bases``: the ranked table as JSON, caption-style notes, and one-line refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kiln.cli import main

from tests.tinytec import LETTERS, file_variant, with_noise


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_file: Path) -> Path:
    root = tmp_path_factory.mktemp("cli-bases")
    (root / "models").mkdir()
    for name, noise in (("darkDream_v1", 0.05), ("anythingV5Ink", 0.5), ("plainMix", 0.0)):
        file_variant(tiny_file, root / "models" / f"{name}.safetensors", with_noise(noise))
    (root / "letters.txt").write_text("\n".join(LETTERS), encoding="utf-8")
    return root


def bases_json(capsys, model_dir: Path, catalog: Path, tiny_file: Path) -> dict:
    args = ["bases", str(model_dir / "models"), "--reference", str(tiny_file)]
    args += ["--words", str(model_dir / "letters.txt"), "--catalog", str(catalog), "--json"]
    assert main(args) == 0
    return json.loads(capsys.readouterr().out)


def test_the_table_ranks_by_tec_with_styles_and_verdicts(
    model_dir: Path, tiny_file: Path, tmp_path, capsys
) -> None:
    data = bases_json(capsys, model_dir, tmp_path / "c.json", tiny_file)
    titles = [base["title"] for base in data["bases"]]
    assert titles == ["plainMix", "darkDream_v1", "anythingV5Ink"]
    verdicts = [base["verdict"] for base in data["bases"]]
    assert verdicts[0] == "close to zero" and verdicts[-1] == "corrupted"
    assert [base["style"] for base in data["bases"]] == [None, "blip", "wd14"]
    assert data["bases"][-1]["tec"]["top_confused"] and "provisional" in data["thresholds"]
    assert len(data["bases"][0]["autov2"]) == 10


def test_set_style_is_kept_and_shown_as_yours(model_dir: Path, tiny_file: Path, tmp_path, capsys) -> None:
    catalog = tmp_path / "c.json"
    target = model_dir / "models" / "plainMix.safetensors"
    assert main(["bases", "--set-style", str(target), "wd14", "--catalog", str(catalog)]) == 0
    assert "caption style wd14 noted" in " ".join(capsys.readouterr().out.split())
    data = bases_json(capsys, model_dir, catalog, tiny_file)
    plain = next(base for base in data["bases"] if base["title"] == "plainMix")
    assert (plain["style"], plain["style_source"]) == ("wd14", "yours")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--set-style", "x.safetensors", "tags"], "use one of blip, wd14, either"),
        ([], "give the folders"),
        (["{models}"], "give --reference"),
        (["{models}", "--reference", "/nope/sd15.safetensors"], "no such reference checkpoint"),
        (["/nope/models", "--reference", "{ref}"], "no such folder"),
    ],
)
def test_bad_input_is_refused_in_one_line(
    model_dir: Path, tiny_file: Path, tmp_path, capsys, args, says
) -> None:
    filled = [a.format(models=model_dir / "models", ref=tiny_file) for a in args]
    assert main(["bases", *filled, "--catalog", str(tmp_path / "c.json")]) != 0
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1
    assert not (tmp_path / "c.json").exists()
