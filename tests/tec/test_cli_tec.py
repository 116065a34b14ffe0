"""``kiln tec``: JSON shape, the swap seen end to end, text output, and exit codes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from kiln.cli import main
from kiln.engine.models.loading import SD15_CONFIG_DIR
from safetensors.torch import save_file

from tests.tec.helpers import cli_json
from tests.tinytec import LETTERS, file_variant, swapped_rows, write_epoch


def test_json_has_the_documented_shape_and_names_the_swapped_pair(
    tiny_encoder, tiny_file: Path, tiny_folder: Path, letters_file: Path, tmp_path: Path, capsys
) -> None:
    cat, dog = tiny_encoder.tokenizer.convert_tokens_to_ids(["c</w>", "d</w>"])
    candidate = file_variant(tiny_file, tmp_path / "swapped.safetensors", swapped_rows(cat, dog))
    data = cli_json(
        capsys, str(candidate), "--reference", str(tiny_folder), "--words", str(letters_file), "--top", "3"
    )
    assert {"score", "confusion_rate", "confused", "drifted", "words"} <= set(data)
    assert isinstance(data["score"], float) and data["score"] > 0
    assert data["words"] == len(LETTERS)
    assert data["confusion_rate"] == pytest.approx(2 / len(LETTERS))
    assert {(pair["word"], pair["nearest"]) for pair in data["confused"]} == {("c", "d"), ("d", "c")}
    assert all(set(pair) >= {"word", "nearest"} for pair in data["confused"])
    assert len(data["drifted"]) == 3 and {row["word"] for row in data["drifted"][:2]} == {"c", "d"}
    assert all(set(row) == {"word", "cosine"} for row in data["drifted"])
    assert data["drifted"][2]["cosine"] == 1.0
    layers = {layer["name"]: layer["relative_l2"] for layer in data["layers"]}
    assert layers["token embedding"] > 0 and layers["layer 0"] == 0.0
    assert data["position_ids"] is None and data["reading"] == "heavy"


def test_top_zero_lists_every_word(tiny_folder: Path, tiny_file: Path, letters_file: Path, capsys) -> None:
    data = cli_json(
        capsys, str(tiny_file), "--reference", str(tiny_folder), "--words", str(letters_file), "--top", "0"
    )
    assert data["score"] == 0.0 and data["confused"] == [] and len(data["drifted"]) == len(LETTERS)


def test_lora_and_run_modes_print_json(tiny_encoder, tiny_folder: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    lora = write_epoch(run / "lora" / "pot-e001.safetensors", tiny_encoder, 0.5, epoch=1)
    (run / "config.toml").write_text(f'[model]\nbase = "{tiny_folder}"\n', encoding="utf-8")
    zero = cli_json(capsys, "--lora", str(lora), "--base", str(tiny_folder), "--scale", "0", "--full-vocab")
    assert zero["score"] == 0.0 and zero["words"] == 512
    series = cli_json(capsys, "--run", str(run), "--full-vocab", "--position", "eos")
    assert [epoch["epoch"] for epoch in series["epochs"]] == [1] and series["epochs"][0]["score"] > 0


def test_text_output_has_the_table_the_reading_and_provisional_thresholds(
    tiny_folder: Path, tiny_file: Path, capsys
) -> None:
    assert main(["tec", str(tiny_file), "--reference", str(tiny_folder), "--full-vocab", "--top", "5"]) == 0
    out = capsys.readouterr().out
    assert "Most drifted words" in out and "Weight distance" in out
    assert "TEC score 0.000, confusion 0.00%" in out and "close to zero" in out
    assert "provisional thresholds" in out


def test_text_output_prints_bracket_words_literally(
    tiny_encoder, tiny_file: Path, tmp_path: Path, capsys
) -> None:
    # "[" and "[/" would be Rich markup if printed as such.
    left, right = tiny_encoder.tokenizer.convert_tokens_to_ids(["[</w>", "/</w>"])
    candidate = file_variant(tiny_file, tmp_path / "brackets.safetensors", swapped_rows(left, right))
    assert main(["tec", str(candidate), "--reference", str(tiny_file), "--full-vocab", "--top", "0"]) == 0
    out = capsys.readouterr().out
    assert "Confused (2): / -> [, [ -> /" in out or "Confused (2): [ -> /, / -> [" in out
    assert "\n│ [-  " in out  # the table row of the word-start token "["


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["CAND"], 2, "needs --reference"),
        ([], 2, "give one of"),
        (["--lora", "X.safetensors"], 2, "needs --base"),
        (["CAND", "--reference", "REF", "--lora", "X"], 2, "got CANDIDATE and --lora"),
        (["CAND", "--reference", "REF", "--base", "B"], 2, "--base goes with"),
        (["CAND", "--reference", "REF", "--scale", "0.5"], 2, "--scale goes with"),
        (["CAND", "--reference", "REF", "--device", "tpu"], 2, "use cpu or cuda"),
        (["CAND", "--reference", "REF", "--top", "-1"], 2, "must be 0"),
        (["CAND", "--reference", "REF", "--words", "W", "--full-vocab"], 2, "not allowed with"),
    ],
)
def test_bad_usage_exits_2_with_one_line(args, code, message, capsys) -> None:
    try:
        status = main(["tec", *args])
    except SystemExit as exc:  # argparse's own errors exit from the parser
        status = exc.code
    err = capsys.readouterr().err
    assert status == code and message in err and len(err.strip().splitlines()) == 1


def test_failures_exit_1_with_one_line(tiny_folder: Path, tiny_file: Path, tmp_path: Path, capsys) -> None:
    torch.save({"state_dict": {}}, tmp_path / "model.ckpt")
    (tmp_path / "other").mkdir()
    sd15_tokenizer = tmp_path / "sd15-tokenizer"
    shutil.copytree(tiny_folder, sd15_tokenizer)
    shutil.rmtree(sd15_tokenizer / "tokenizer")
    shutil.copytree(SD15_CONFIG_DIR / "tokenizer", sd15_tokenizer / "tokenizer")
    save_file({"lora_te_x.alpha": torch.ones(())}, str(tmp_path / "lora.safetensors"))
    cases = [
        ([str(tmp_path / "missing.safetensors"), "--reference", str(tiny_file)], "no such file or folder"),
        ([str(tmp_path / "model.ckpt"), "--reference", str(tiny_file)], "--allow-pickle"),
        ([str(tmp_path / "other"), "--reference", str(tiny_file)], "not a diffusers model folder"),
        (["--lora", str(tmp_path / "none.safetensors"), "--base", str(tiny_folder)], "no such LoRA file"),
        ([str(sd15_tokenizer), "--reference", str(tiny_file)], "tokenizers differ"),
        (
            [str(tmp_path / "lora.safetensors"), "--reference", str(tiny_file)],
            "a LoRA file, not a checkpoint",
        ),
    ]
    for args, message in cases:
        assert main(["tec", *args]) == 1
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert main(["tec", str(tiny_file), "--reference", str(tiny_folder), "--words", str(tmp_path / "w")]) == 2
    assert "no such words file" in capsys.readouterr().err


@pytest.mark.slow
def test_console_entry_prints_json_in_a_fresh_process(tiny_folder: Path, tiny_file: Path) -> None:
    env = dict(os.environ)
    command = [sys.executable, "-m", "kiln.cli", "tec", str(tiny_file), "--reference", str(tiny_folder)]
    done = subprocess.run([*command, "--full-vocab", "--json"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["words"] == 512 and done.stderr == ""
