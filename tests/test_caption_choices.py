"""Model folder checks (no model library loaded) and the caption choices remembered per dataset."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from kiln.engine.caption.model_folders import check_model_folder
from kiln.engine.caption.run_choices import META_KEY, CaptionChoices, load_choices, save_choices
from kiln.engine.dataset.store import Store
from kiln.engine.errors import ModelError, UsageError


def test_wd14_folder_check_names_the_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such model folder"):
        check_model_folder("wd14", tmp_path / "nope")
    (tmp_path / "model.onnx").write_bytes(b"")
    with pytest.raises(ModelError, match=r"selected_tags\.csv: missing"):
        check_model_folder("wd14", tmp_path)
    (tmp_path / "selected_tags.csv").write_text("tag_id,name,category,count\n", encoding="utf-8")
    check_model_folder("wd14", tmp_path)
    with pytest.raises(UsageError, match="use blip or wd14"):
        check_model_folder("clip", tmp_path)


def test_blip_folder_check_wants_safetensors_unless_pickle_is_allowed(tmp_path: Path) -> None:
    for name in ("config.json", "preprocessor_config.json", "vocab.txt", "pytorch_model.bin"):
        (tmp_path / name).write_text("{}", encoding="utf-8")
    with pytest.raises(ModelError, match="only pickle weights"):
        check_model_folder("blip", tmp_path)
    check_model_folder("blip", tmp_path, allow_pickle=True)


def test_folder_checks_import_no_model_library() -> None:
    code = (
        "import sys, json; from kiln.engine.caption.model_folders import check_model_folder; "
        "import kiln.engine.caption.run_choices, kiln.engine.caption.autocaption; "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert not set(__import__("json").loads(out)) & {"torch", "transformers", "onnxruntime"}


def test_choices_survive_a_restart_and_damage_falls_back_to_defaults(tmp_path: Path) -> None:
    chosen = CaptionChoices(
        style="blip", blip_model="/m/blip", trigger="kilnpot", mode="append", threshold=0.4
    )
    with Store(tmp_path) as store:
        assert load_choices(store) == CaptionChoices()
        save_choices(store, chosen)
    with Store(tmp_path) as store:
        assert load_choices(store) == chosen
        assert load_choices(store).model_for("blip") == "/m/blip"
        for damaged in ("not json", '{"style": "clip"}', '{"threshold": "high"}', '["a"]'):
            with store.transaction() as conn:
                conn.execute("UPDATE meta SET value = ? WHERE key = ?", (damaged, META_KEY))
            assert load_choices(store) == CaptionChoices()
