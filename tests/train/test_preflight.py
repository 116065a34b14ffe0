"""Issue 14 item 4: every check that can fail a run fails before its run folder exists, in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from kiln.cli import main
from kiln.engine.errors import UsageError
from kiln.engine.runs import preflight
from kiln.engine.runs.preflight import check_run, estimate_memory, model_shape

from tests.train.test_cli_train import kiln


def write_config(tmp_path: Path, model: Path, dataset: Path, precision: str = "fp32") -> Path:
    path = tmp_path / "run.toml"
    path.write_text(
        f'[model]\nbase = "{model}"\n[dataset]\npath = "{dataset}"\nresolution = 64\n'
        f"min_bucket_reso = 32\nmax_bucket_reso = 128\nbucket_reso_steps = 32\n"
        f'[train]\nprecision = "{precision}"\nmax_steps = 1\n[output]\ndir = "{tmp_path / "runs"}"\n'
    )
    return path


def test_fp16_on_a_cpu_is_refused_before_a_run_folder(tmp_path: Path, tiny_model: Path, train_dataset: Path):
    config = write_config(tmp_path, tiny_model, train_dataset)
    result = kiln("train", str(config), "--cpu", "--set", "train.precision=fp16")
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "fp16" in result.stderr and "bf16" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_a_huge_rank_is_refused_naming_the_set_key(tmp_path: Path, tiny_model: Path, train_dataset: Path):
    config = write_config(tmp_path, tiny_model, train_dataset)
    result = kiln("train", str(config), "--set", "network.rank=10000")
    assert result.returncode == 2
    assert result.stderr.strip() == "kiln: error: --set network.rank=10000: must be at most 1024"
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("train.batch_size=1000", "at most 64"),
        ("train.unet_lr=5.0", "at most 0.1"),
        ("dataset.resolution=8192", "at most 2048"),
        ("train.epochs=1000000", "at most 10000"),
        ("network.conv_rank=5000", "at most 1024"),
        ("network.alpha=100000.0", "at most 1024"),
        ("dataset.min_bucket_reso=128", "dataset.resolution = 64 must lie between"),
        ("netwrk.rank=8", "--set netwrk.rank: unknown key"),
    ],
)
def test_out_of_range_values_are_refused_in_one_line(
    tmp_path: Path, tiny_model: Path, train_dataset: Path, capsys, override: str, words: str
) -> None:
    config = write_config(tmp_path, tiny_model, train_dataset)
    assert main(["train", str(config), "--set", override]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()


def test_a_missing_base_model_is_refused_before_a_run_folder(tmp_path: Path, train_dataset: Path, capsys):
    config = write_config(tmp_path, tmp_path / "nowhere", train_dataset)
    assert main(["train", str(config)]) == 1
    assert "no such file or folder" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_run_too_big_for_the_memory_is_refused_with_the_figure(
    tmp_path: Path, tiny_model: Path, train_dataset: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setattr(preflight, "available_memory", lambda cpu_run: 0.25 * preflight.GIB)
    config = write_config(tmp_path, tiny_model, train_dataset)
    assert main(["train", str(config), "--cpu"]) == 2
    err = capsys.readouterr().err
    assert "this run needs about" in err and "GiB" in err and "0.2 GiB of RAM free" in err
    assert "network.rank" in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()


def test_a_run_close_to_the_limit_warns(make_config, monkeypatch) -> None:
    config = make_config()
    shape = model_shape(Path(config.model.base))
    assert shape is not None and shape.unet_per_rank > 0 and shape.te_per_rank > 0
    needed = estimate_memory(config, shape).total
    monkeypatch.setattr(preflight, "available_memory", lambda cpu_run: needed / 0.9)
    heard: list[str] = []
    check_run(config, cpu=True, warn=heard.append)
    assert heard and "close to the limit" in heard[0]
    monkeypatch.setattr(preflight, "available_memory", lambda cpu_run: needed * 2)
    heard.clear()
    check_run(config, cpu=True, warn=heard.append)
    assert not heard


def test_the_estimate_grows_with_rank_batch_and_resolution(make_config) -> None:
    base = make_config()
    shape = model_shape(Path(base.model.base))
    assert shape is not None
    small = estimate_memory(base, shape).total
    big = estimate_memory(make_config(network={"rank": 512}), shape)
    assert big.lora > 100 * estimate_memory(base, shape).lora
    assert estimate_memory(make_config(train={"batch_size": 8}), shape).total > small
    assert estimate_memory(make_config(dataset={"resolution": 128}), shape).total > small


def test_fp16_check_raises_usage_error(make_config) -> None:
    with pytest.raises(UsageError, match="fp16"):
        check_run(make_config(train={"precision": "fp16"}), cpu=True)
