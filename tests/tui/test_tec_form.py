"""The TEC form without Textual: checks per field, the job they build, wording, path completion."""

from __future__ import annotations

from pathlib import Path

from kiln.engine.runs.tec_series import TecRun
from kiln.tui.path_suggester import path_completion
from kiln.tui.tec_form import TecInputs, check_inputs, field_message, form_wording

from tests.tinytec import write_unet_only_epoch


def test_two_checkpoints_make_a_checkpoint_job_and_ignore_the_scale(tiny_folder: Path, letters_file) -> None:
    check = check_inputs(
        TecInputs(candidate=str(tiny_folder), reference=str(tiny_folder), scale="x", words=str(letters_file))
    )
    assert check.errors == {}
    job = check.job
    assert job.kind == "checkpoint" and job.candidate == tiny_folder and len(job.words) == 36
    assert job.words_source == str(letters_file) and job.stages() == ["reference", "candidate"]


def test_run_mode_takes_the_configs_base_or_the_typed_one(tiny_folder: Path, tmp_path: Path) -> None:
    loras = (tmp_path / "lora" / "a-e001.safetensors", tmp_path / "lora" / "a-e002.safetensors")
    run = TecRun(tmp_path, loras, True, base=str(tiny_folder))
    job = check_inputs(TecInputs(mode="run", run=run, scale="0.5")).job
    assert job.kind == "run" and job.base is None and job.scale == 0.5 and job.allow_pickle is None
    assert job.stages() == ["reference", "a-e001.safetensors", "a-e002.safetensors"]
    assert check_inputs(TecInputs(mode="run", run=run, base=str(tiny_folder))).job.base == tiny_folder
    unknown = TecRun(tmp_path, loras, True, base_problem="the run's config names no model.base")
    assert check_inputs(TecInputs(mode="run", run=unknown)).errors == {
        "base": "the run's config names no model.base: type the base model the run trained on"
    }
    lora = write_unet_only_epoch(tmp_path / "x.safetensors")
    as_base = check_inputs(TecInputs(mode="run", run=run, base=str(lora)))
    assert as_base.errors["base"].startswith("a LoRA, not a checkpoint")
    assert check_inputs(TecInputs(mode="run")).errors["run"].startswith("no run picked")
    blocked = TecRun(tmp_path, loras, False, problem="this run did not train the text encoder")
    assert check_inputs(TecInputs(mode="run", run=blocked)).errors["run"] == blocked.problem


def test_engine_messages_read_in_the_forms_terms() -> None:
    message = "only 0 of the 2107 built-in probe words are single tokens; pass --words FILE or --full-vocab"
    assert form_wording(message).endswith("pick a Words file or Full vocab")
    assert (
        field_message("/m/x.ckpt: refused; pass --allow-pickle", "/m/x.ckpt")
        == "refused; turn Allow pickle on"
    )


def test_path_completion_continues_the_first_matching_name(tmp_path: Path) -> None:
    (tmp_path / "models" / "sd15").mkdir(parents=True)
    (tmp_path / "models" / "dreamy.safetensors").write_bytes(b"")
    (tmp_path / "models" / ".cache").mkdir()
    base = f"{tmp_path}/models"
    assert path_completion(f"{base}/d") == f"{base}/dreamy.safetensors"
    assert path_completion(f"{base}/s") == f"{base}/sd15/"  # folders end in / for the next level
    assert path_completion(f"{base}/") == f"{base}/dreamy.safetensors"  # hidden names stay hidden
    assert path_completion(f"{base}/.c") == f"{base}/.cache/"
    assert path_completion(f"{base}/dreamy.safetensors") is None
    assert path_completion(f"{base}/zzz") is None and path_completion("") is None
