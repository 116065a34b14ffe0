"""Training with regularisation images: Kohya's balancing and step count, the prior-loss weight,
class-word captions, and the sd-scripts metadata keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kiln.engine.dataset.scan import scan_dataset
from kiln.engine.errors import UsageError
from kiln.engine.plan.evaluate import PlanRequest, evaluate_plan, load_counts
from kiln.engine.plan.loads import dataset_load
from kiln.engine.plan.reg import reg_set
from kiln.engine.runs.control import controlled_trainer
from kiln.engine.runs.events import read_events
from kiln.engine.runs.layout import create_run_dir
from kiln.engine.runs.preflight import check_run
from kiln.engine.train.data import bucket_spec
from kiln.engine.train.lora_io import read_lora
from PIL import Image


@pytest.fixture(scope="module")
def reg_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Class images: a captioned folder and one without captions (class word from its name)."""
    root = tmp_path_factory.mktemp("reg")
    for folder, count, size in (("1_pot", 5, (64, 64)), ("2_vase", 3, (96, 32))):
        (root / folder).mkdir()
        for index in range(count):
            path = root / folder / f"{index:02d}.png"
            Image.new("RGB", size, (40 * index, 90, 200)).save(path)
            if folder == "1_pot":
                path.with_suffix(".txt").write_text(f"a pot, photo {index}", encoding="utf-8")
    return root


def test_a_run_with_reg_images_counts_steps_as_kiln_calc_and_weights_their_loss(
    make_config, reg_dir: Path, train_dataset: Path
) -> None:
    config = make_config(
        dataset={"reg_path": str(reg_dir)},
        train={"batch_size": 1, "epochs": 1, "prior_loss_weight": 0.0, "cache_latents": True},
    )
    run_dir = create_run_dir(config)
    trainer = controlled_trainer(config, run_dir)
    result = trainer.run()
    assert result.state == "done"
    events = read_events(run_dir)
    spec = bucket_spec(config.dataset)
    counts = load_counts(dataset_load(scan_dataset(train_dataset), None, spec))
    planned = evaluate_plan(
        PlanRequest(
            mode="steps",
            bucket_images=counts.bucket_images,
            batch=1,
            epochs=1,
            folder_items=counts.folder_items,
            folder_repeats=counts.folder_repeats,
            reg=reg_set(scan_dataset(reg_dir), spec),
        )
    ).plan
    start = next(event for event in events if event["type"] == "start")
    assert start["steps_per_epoch"] == planned.steps_per_epoch == 2 * 16  # 16 training samples, 16 reg
    # Batch 1: every reg-only step has a zero loss at prior_loss_weight 0, and only those.
    reg = [image for image in trainer.data.images if image.is_reg]
    assert sum(image.repeats for image in reg) == 16
    losses = [event["loss"] for event in events if event["type"] == "step"]
    assert losses.count(0.0) == 16
    # Uncaptioned class images train on their folder's class word, as Kohya's class tokens.
    assert {image.caption for image in reg if image.folder == "2_vase"} == {"vase"}
    assert {image.caption for image in reg if image.folder == "1_pot"} >= {"a pot, photo 0"}
    _, meta = read_lora(result.lora)
    assert meta["ss_num_train_images"] == "16" and meta["ss_num_reg_images"] == "11"
    assert meta["ss_prior_loss_weight"] == "0.0"
    assert json.loads(meta["ss_reg_dataset_dirs"]) == {
        "1_pot": {"n_repeats": 1, "img_count": 5},
        "2_vase": {"n_repeats": 2, "img_count": 3},
    }
    assert "1_pot" not in json.loads(meta["ss_dataset_dirs"])
    assert "vase" not in json.dumps(json.loads(meta["ss_tag_frequency"]))


def test_a_missing_reg_folder_is_refused_before_the_run(make_config, tmp_path: Path) -> None:
    config = make_config(dataset={"reg_path": str(tmp_path / "nowhere")})
    with pytest.raises(UsageError, match=r"dataset\.reg_path = .*nowhere: no such folder"):
        check_run(config, cpu=True)
