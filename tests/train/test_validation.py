"""train.validation_split: a held-out slice, a deterministic validation loss at fixed timesteps."""

from __future__ import annotations

import pytest
from kiln.engine.errors import ConfigError, DatasetError
from kiln.engine.runs.control import controlled_trainer
from kiln.engine.runs.events import read_events
from kiln.engine.runs.layout import create_run_dir
from kiln.engine.train.config import config_from_mapping
from kiln.engine.train.data import split_validation, training_set
from kiln.engine.train.validation import VALIDATION_TIMESTEPS


def test_validation_split_is_a_checked_config_key() -> None:
    assert config_from_mapping({"train": {"validation_split": 0.2}}).train.validation_split == 0.2
    assert config_from_mapping({}).train.validation_split == 0.0
    with pytest.raises(ConfigError, match=r"train.validation_split = 0.7: must be between 0 and 0.5"):
        config_from_mapping({"train": {"validation_split": 0.7}})


def test_split_is_deterministic_disjoint_and_leaves_images_to_train(make_config) -> None:
    data = training_set(make_config().dataset)
    trained, held = split_validation(data, 0.3, seed=42)
    again, held_again = split_validation(data, 0.3, seed=42)
    assert [i.rel_path for i in held] == [i.rel_path for i in held_again]
    assert len(held) == round(0.3 * len(data.images))
    assert {i.rel_path for i in trained.images} | {i.rel_path for i in held} == {
        i.rel_path for i in data.images
    }
    assert not {i.rel_path for i in trained.images} & {i.rel_path for i in held}
    assert trained.images == again.images
    # A tiny share still holds out one image; a huge one still trains one.
    assert len(split_validation(data, 0.01, seed=1)[1]) == 1
    one = type(data)(root=data.root, images=data.images[:1])
    with pytest.raises(DatasetError, match="validation_split needs at least 2 images"):
        split_validation(one, 0.5, seed=1)


def test_run_reports_the_same_validation_loss_for_the_same_weights(make_config) -> None:
    config = make_config(train={"epochs": 1, "validation_split": 0.3, "max_steps": 2})
    run_dir = create_run_dir(config)
    trainer = controlled_trainer(config, run_dir)
    trainer.setup()
    try:
        held = {image.rel_path for image in trainer.validation_images}
        assert held and not held & {image.rel_path for image in trainer.data.images}
        before = trainer.validation_losses()
        assert list(before) == list(VALIDATION_TIMESTEPS)
        assert trainer.validation_losses() == before  # fixed noise: same weights, same figure
        result = trainer.run()
    finally:
        trainer.close()  # stops the heartbeat even when an assertion failed before run()
    assert result.state == "done", result.error
    events = [e for e in read_events(run_dir) if e["type"] == "validation"]
    assert [e["epoch"] for e in events] == [0, 1]
    assert events[0]["loss"] == pytest.approx(sum(before.values()) / 4, abs=1e-6)
    assert set(events[0]["timesteps"]) == {str(t) for t in VALIDATION_TIMESTEPS}
    assert events[1]["loss"] != events[0]["loss"]  # the weights moved
