"""Issue 14 item 3: LoRA metadata as sd-scripts writes it, and the ss_* keys left out (with why)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from kiln.engine.train.config import DatasetConfig
from kiln.engine.train.data import training_set
from kiln.engine.train.demo import sample_data_dir
from kiln.engine.train.lora_io import LEFT_OUT_SS_KEYS, base_model_hashes, mean_ar_error, read_lora

from kiln import engine
from tests.train.test_training import folder_run  # noqa: F401  (the fixture: one run, reused)

REPO = Path(engine.__file__).resolve().parent.parent

# The sd-scripts keys Kiln writes (train_network.py's names); ss_network_args only with LoCon,
# ss_sd_model_hash / ss_new_sd_model_hash only for a single-file base model (sd-scripts hashes
# files, not folders).
WRITTEN_SS_KEYS = {
    "ss_session_id",
    "ss_training_started_at",
    "ss_training_finished_at",
    "ss_output_name",
    "ss_training_comment",
    "ss_sd_model_name",
    "ss_base_model_version",
    "ss_v2",
    "ss_zero_terminal_snr",
    "ss_num_reg_images",
    "ss_prior_loss_weight",
    "ss_reg_dataset_dirs",
    "ss_network_module",
    "ss_network_dim",
    "ss_network_alpha",
    "ss_network_args",
    "ss_network_train_unet_only",
    "ss_num_train_images",
    "ss_num_batches_per_epoch",
    "ss_num_epochs",
    "ss_epoch",
    "ss_steps",
    "ss_max_train_steps",
    "ss_batch_size_per_device",
    "ss_total_batch_size",
    "ss_gradient_accumulation_steps",
    "ss_learning_rate",
    "ss_unet_lr",
    "ss_text_encoder_lr",
    "ss_lr_scheduler",
    "ss_lr_warmup_steps",
    "ss_optimizer",
    "ss_max_grad_norm",
    "ss_mixed_precision",
    "ss_full_fp16",
    "ss_save_precision",
    "ss_seed",
    "ss_min_snr_gamma",
    "ss_noise_offset",
    "ss_clip_skip",
    "ss_gradient_checkpointing",
    "ss_cache_latents",
    "ss_resolution",
    "ss_enable_bucket",
    "ss_min_bucket_reso",
    "ss_max_bucket_reso",
    "ss_bucket_no_upscale",
    "ss_bucket_info",
    "ss_shuffle_caption",
    "ss_keep_tokens",
    "ss_caption_dropout_rate",
    "ss_dataset_dirs",
    "ss_tag_frequency",
}
SINGLE_FILE_ONLY = {"ss_sd_model_hash", "ss_new_sd_model_hash"}


def test_the_lora_carries_sd_scripts_metadata(folder_run) -> None:  # noqa: F811
    config, result, _ = folder_run
    assert result.state == "done", result.error
    _, meta = read_lora(result.lora)
    assert {key for key in meta if key.startswith("ss_")} == WRITTEN_SS_KEYS
    # The optimizer's own class, not accelerate's AcceleratedOptimizer around it.
    assert meta["ss_optimizer"] == "torch.optim.adamw.AdamW(weight_decay=0.01)"
    assert meta["modelspec.sai_model_spec"] == "1.0.1"
    assert meta["ss_clip_skip"] == "None" and meta["ss_noise_offset"] == "None"
    assert meta["ss_min_snr_gamma"] == "5.0"
    info = json.loads(meta["ss_bucket_info"])
    data = training_set(config.dataset)
    assert info["mean_img_ar_error"] == mean_ar_error(data) > 0.01
    assert json.loads(meta["ss_tag_frequency"]).keys() == {"2_hill", "3_pot"}
    assert json.loads(meta["ss_dataset_dirs"])["3_pot"] == {"n_repeats": 3, "img_count": 4}


def test_left_out_keys_are_listed_with_a_reason_and_documented() -> None:
    assert not LEFT_OUT_SS_KEYS.keys() & (WRITTEN_SS_KEYS | SINGLE_FILE_ONLY)
    assert all(reason.strip() for reason in LEFT_OUT_SS_KEYS.values())
    docs = (REPO / "docs" / "training.md").read_text(encoding="utf-8")
    section = docs.split("## LoRA metadata", 1)[1].split("\n## ", 1)[0]
    for key in sorted(LEFT_OUT_SS_KEYS.keys() | WRITTEN_SS_KEYS | SINGLE_FILE_ONLY):
        assert f"`{key}`" in section, key


def test_mean_aspect_error_matches_sd_scripts_on_the_sample_data(tmp_path: Path) -> None:
    copy = tmp_path / "sample"
    shutil.copytree(sample_data_dir(), copy)
    data = training_set(DatasetConfig(path=str(copy)))
    assert round(mean_ar_error(data), 3) == 0.029  # sd-scripts' figure at 512 px


def test_single_file_base_model_hashes_are_a1111s(tiny_single_file: Path, tiny_model: Path) -> None:
    content = tiny_single_file.read_bytes()
    legacy, new = base_model_hashes(tiny_single_file)
    assert legacy == hashlib.sha256(content[0x100000 : 0x100000 + 0x10000]).hexdigest()[:8]
    assert new == hashlib.sha256(content).hexdigest()
    assert base_model_hashes(tiny_model) is None  # a folder: sd-scripts writes no hash either


def test_a_single_file_run_writes_the_model_hashes(make_config, tiny_single_file: Path) -> None:
    from tests.train.test_training import train

    config = make_config(
        model={"base": str(tiny_single_file)},
        network={"train_text_encoder": False},
        train={"epochs": 1, "max_steps": 1, "clip_skip": 2, "noise_offset": 0.05},
    )
    result, _ = train(config)
    assert result.state == "done", result.error
    _, meta = read_lora(result.lora)
    legacy, new = base_model_hashes(tiny_single_file)
    assert meta["ss_sd_model_hash"] == legacy and meta["ss_new_sd_model_hash"] == new
    assert meta["ss_clip_skip"] == "2" and meta["ss_noise_offset"] == "0.05"
