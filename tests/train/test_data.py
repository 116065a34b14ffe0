"""Training data: what is trained, Kohya's batches per bucket, captions, pixels, latents, LoRA I/O."""

from __future__ import annotations

import random
from pathlib import Path

import torch
from kiln.engine.dataset.scan import scan_dataset
from kiln.engine.dataset.selection import set_included
from kiln.engine.dataset.store import Store
from kiln.engine.plan.loads import dataset_load
from kiln.engine.plan.steps import plan_steps
from kiln.engine.train.config import DatasetConfig
from kiln.engine.train.data import (
    LatentCache,
    bucket_spec,
    epoch_batches,
    load_pixels,
    step_caption,
    training_set,
)
from kiln.engine.train.lora_io import read_lora, safetensors_hashes, write_lora
from kiln.engine.train.samples import parse_prompt
from kiln.engine.train.schedule import lr_factor


def dataset_config(root: Path, **values) -> DatasetConfig:
    base = {
        "path": str(root),
        "resolution": 64,
        "min_bucket_reso": 32,
        "max_bucket_reso": 128,
        "bucket_reso_steps": 32,
    }
    return DatasetConfig(**{**base, **values})


def test_training_set_matches_kiln_calcs_buckets(train_dataset: Path) -> None:
    config = dataset_config(train_dataset)
    data = training_set(config)
    dataset = scan_dataset(train_dataset)
    with Store(dataset.root) as store:
        load = dataset_load(dataset, store, bucket_spec(config))
    assert data.bucket_items() == load.bucket_items()
    assert len(data.bucket_items()) >= 3
    assert data.skipped == ("loose/skipped.png",)
    assert any("no .txt caption" in warning for warning in data.warnings)


def test_excluded_images_are_not_trained(train_dataset: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(train_dataset, root)
    with Store(root) as store:
        set_included(store, ["3_pot/wide.png"], False)
    paths = [image.rel_path for image in training_set(dataset_config(root)).images]
    assert "3_pot/wide.png" not in paths and "3_pot/tall.png" in paths


def test_epoch_batches_follow_kohya_per_bucket_batching(train_dataset: Path) -> None:
    data = training_set(dataset_config(train_dataset))
    for batch_size in (1, 2, 3):
        batches = epoch_batches(data.images, batch_size, seed=1, epoch=1)
        plan = plan_steps(data.bucket_items(), batch_size, 1)
        assert len(batches) == plan.batches_per_epoch
        for batch in batches:
            assert len({data.images[i].bucket for i in batch}) == 1
        counts = [0] * len(data.images)
        for batch in batches:
            for index in batch:
                counts[index] += 1
        assert counts == [image.repeats for image in data.images]
    assert epoch_batches(data.images, 2, 1, 1) == epoch_batches(data.images, 2, 1, 1)
    assert epoch_batches(data.images, 2, 1, 1) != epoch_batches(data.images, 2, 1, 2)


def test_step_caption_shuffles_after_keep_tokens_and_drops_out() -> None:
    caption = "trigger, a, b, c, d, e"
    shuffled = DatasetConfig(shuffle_caption=True, keep_tokens=1)
    results = {step_caption(caption, shuffled, random.Random(seed)) for seed in range(20)}
    assert len(results) > 1 and all(
        r.startswith("trigger, ") and sorted(r.split(", ")) == sorted(caption.split(", ")) for r in results
    )
    assert step_caption(caption, DatasetConfig(), random.Random(0)) == caption
    dropout = DatasetConfig(caption_dropout_rate=0.5)
    dropped = [step_caption(caption, dropout, random.Random(seed)) for seed in range(200)]
    assert 60 < dropped.count("") < 140


def test_pixels_are_cropped_to_the_bucket_in_range(train_dataset: Path) -> None:
    data = training_set(dataset_config(train_dataset))
    wide = next(image for image in data.images if image.rel_path == "3_pot/wide.png")
    pixels = load_pixels(wide)
    assert pixels.shape == (3, wide.bucket[1], wide.bucket[0])
    assert pixels.min() >= -1.0 and pixels.max() <= 1.0 and pixels.std() > 0.1


def test_disk_latent_cache_is_shared_and_keyed_by_the_crop(train_dataset: Path, tmp_path: Path) -> None:
    data = training_set(dataset_config(train_dataset))
    image = data.images[0]
    first = LatentCache(tmp_path / "latents")
    first.put(image, torch.ones(4, 8, 8))
    second = LatentCache(tmp_path / "latents")
    assert torch.equal(second.get(image), torch.ones(4, 8, 8))
    other = training_set(dataset_config(train_dataset, resolution=96)).images[0]
    assert other.assignment != image.assignment and second.get(other) is None


def test_lora_files_carry_hashes_and_survive_a_round_trip(tmp_path: Path) -> None:
    tensors = {
        "lora_unet_x.lora_down.weight": torch.ones(2, 3, dtype=torch.float16),
        "lora_unet_x.alpha": torch.tensor(1.0),
    }
    path = write_lora(
        tmp_path / "lora" / "a.safetensors", tensors, {"ss_network_dim": "2", "modelspec.title": "a"}
    )
    read, meta = read_lora(path)
    assert torch.equal(read["lora_unet_x.lora_down.weight"], tensors["lora_unet_x.lora_down.weight"])
    assert (meta["sshs_model_hash"], meta["sshs_legacy_hash"]) == safetensors_hashes(
        tensors, {"ss_network_dim": "2"}
    )
    assert not list(path.parent.glob(".*tmp"))


def test_kohya_prompt_options_are_parsed() -> None:
    prompt = parse_prompt("a cat, sitting --n blurry, ugly --w 768 --h 513 --d 7 --s 20 --l 5.5", 0, 512, 42)
    assert (prompt.prompt, prompt.negative, prompt.width, prompt.height) == (
        "a cat, sitting",
        "blurry, ugly",
        768,
        512,
    )
    assert (prompt.seed, prompt.steps, prompt.cfg) == (7, 20, 5.5)
    default = parse_prompt("hills", 3, 512, 42)
    assert (default.seed, default.width, default.steps) == (45, 512, 30)


def test_lr_schedules_warm_up_then_follow_their_shape() -> None:
    assert [lr_factor(step, 10, 2, "constant") for step in range(4)] == [0.5, 1.0, 1.0, 1.0]
    assert lr_factor(0, 10, 0, "linear") == 1.0 and lr_factor(10, 10, 0, "linear") == 0.0
    assert lr_factor(5, 10, 0, "cosine") == 0.5
