"""``kiln dsb`` output, JSON shape and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from kiln.cli import main


def run_json(capsys, *args: str) -> dict:
    assert main(["dsb", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_guide_example_json(guide_dataset: Path, capsys) -> None:
    data = run_json(capsys, str(guide_dataset))
    assert set(data) == {"root", "method", "images", "dsb", "target", "rebalance"}
    assert data["method"] == "luma601"
    assert [img["path"] for img in data["images"]] == [f"15_example/{i}.png" for i in range(1, 6)]
    image = data["images"][0]
    assert set(image) == {"path", "concept", "repeats", "included", "trained", "white", "black", "error"}
    assert (image["concept"], image["repeats"], image["included"], image["error"]) == (
        "example",
        15,
        True,
        None,
    )
    assert image["white"] == pytest.approx(30.0)
    dsb = data["dsb"]
    assert set(dsb) == {"white", "black", "dominant", "verdict", "effective_white", "images"}
    assert (round(dsb["white"]), round(dsb["black"]), dsb["verdict"], dsb["images"]) == (
        29,
        71,
        "mediocre",
        5,
    )
    assert data["target"] == {"center": 60.0, "tolerance": 5.0}
    assert data["rebalance"]["exclude"] == ["15_example/2.png", "15_example/5.png"]
    assert data["rebalance"]["white"] == pytest.approx(41.67, abs=0.01)
    assert data["rebalance"]["black"] == pytest.approx(58.33, abs=0.01)
    assert data["rebalance"]["verdict"] == "optimal"


def test_images_kohya_skips_are_listed_as_skipped_and_left_out_of_both_dsbs(make_dataset, capsys) -> None:
    # One rule for "trained images": the root image and the prefix-less folder are not
    # trained, so neither DSB counts them, as `kiln calc` does not.
    root = make_dataset({"10_pot/a.png": 40.0, "loose.png": 10.0, "pots/b.png": 20.0})
    data = run_json(capsys, str(root))
    trained = {image["path"]: image["trained"] for image in data["images"]}
    assert trained == {"10_pot/a.png": True, "loose.png": False, "pots/b.png": False}
    assert data["dsb"]["images"] == 1
    assert data["dsb"]["white"] == pytest.approx(40.0) and data["dsb"]["effective_white"] == pytest.approx(
        40.0
    )
    assert main(["calc", str(root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 1
    assert main(["dsb", str(root)]) == 0
    out = capsys.readouterr().out
    assert out.count("skipped by Kohya") == 2


def test_text_report_uses_the_guides_notation(guide_dataset: Path, capsys) -> None:
    assert main(["dsb", str(guide_dataset)]) == 0
    out = capsys.readouterr().out
    assert "DSB 29%W | 71%B  mediocre" in out
    assert "15_example/2.png" in out and "41.67%W | 58.33%B  optimal" in out


def test_min_images_and_target_options(guide_dataset: Path, capsys) -> None:
    data = run_json(capsys, str(guide_dataset), "--min-images", "5")
    assert data["rebalance"] is None
    data = run_json(capsys, str(guide_dataset), "--target", "70", "--tolerance", "2")
    assert data["target"] == {"center": 70.0, "tolerance": 2.0}
    assert data["dsb"]["verdict"] == "optimal"  # 71 lies in [68, 72)


def test_method_option(tmp_path: Path, capsys) -> None:
    from PIL import Image

    (tmp_path / "1_a").mkdir()
    Image.new("RGB", (4, 4), (255, 0, 0)).save(tmp_path / "1_a" / "red.png")
    assert run_json(capsys, str(tmp_path))["images"][0]["white"] == 0.0
    assert run_json(capsys, str(tmp_path), "--method", "lightness")["images"][0]["white"] == 100.0


def test_missing_empty_or_imageless_path_is_one_line_exit_1(tmp_path: Path, capsys) -> None:
    assert main(["dsb", str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such folder" in err
    (tmp_path / "empty").mkdir()
    assert main(["dsb", str(tmp_path / "empty")]) == 1
    assert "no images found" in capsys.readouterr().err


def test_bad_usage_exits_2(guide_dataset: Path) -> None:
    for argv in (
        ["dsb"],
        ["dsb", str(guide_dataset), "--method", "hsv"],
        ["dsb", str(guide_dataset), "--min-images", "0"],
        ["dsb", str(guide_dataset), "--target", "40"],
    ):
        with pytest.raises(SystemExit) as info:
            code = main(argv)
            raise SystemExit(code)
        assert info.value.code == 2, argv


def test_console_script_runs_in_a_subprocess(guide_dataset: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kiln.cli", "dsb", str(guide_dataset), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(result.stdout)["dsb"]["verdict"] == "mediocre"


def test_a_command_imports_only_its_own_module() -> None:
    # Process start-up is part of every `kiln dsb` a user times (issue 14, item 18).
    code = (
        "import sys, json\n"
        "from kiln.cli import main\n"
        "try:\n"
        "    main(['dsb', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('kiln.cli.'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert set(json.loads(out.strip().splitlines()[-1])) == {"kiln.cli.common", "kiln.cli.dsb"}


def test_the_pool_forks_when_single_threaded_and_uses_the_forkserver_beside_threads() -> None:
    import threading

    from kiln.engine.analysis.run import _pool_context

    if not sys.platform.startswith("linux"):
        pytest.skip("fork is chosen on Linux only")
    stop = threading.Event()
    helper = threading.Thread(target=stop.wait)
    helper.start()
    try:
        assert _pool_context().get_start_method() == "forkserver"
    finally:
        stop.set()
        helper.join()
    code = "from kiln.engine.analysis.run import _pool_context; print(_pool_context().get_start_method())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "fork"
