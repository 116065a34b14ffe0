"""The speed options against the plain path on a CPU: deferred read-back, prefetching,
channels_last, compile, TF32, and float32 master weights under mixed precision.

Tolerances: read-back interval and prefetching change no arithmetic, so their losses must be
exactly equal; channels_last and compile reorder float operations, so theirs must agree to a
relative 1e-4 (fp32; the tiny model's losses are ~0.1-1).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from kiln.engine.runs.control import controlled_trainer
from kiln.engine.runs.events import read_events
from kiln.engine.runs.layout import create_run_dir
from kiln.engine.train.checkpoint import config_changes, saves
from kiln.engine.train.config import TrainParams
from kiln.engine.train.loop import Trainer
from kiln.engine.train.lora_io import read_lora
from kiln.engine.train.speed import GPU_SYNC_EVERY, apply_speed_options, sync_every, use_tf32

from tests.train.helpers import assert_resume_matches, step_losses, train

STEPS = 6
FLOAT_TOLERANCE = 1e-4  # relative: channels_last and compile reorder fp32 sums


def losses_of(make_config, name: str, **train_keys: Any) -> dict[int, float]:
    """Each step's loss of a ``STEPS``-step run with ``train_keys``."""
    config = make_config(train={"max_steps": STEPS, **train_keys}, output={"name": name})
    result, _ = train(config)
    assert result.state == "done", result.error
    return step_losses(result.run_dir)


# ----------------------------------------------------------------- deferred read-back


def test_reading_back_every_few_steps_reports_the_same_steps_and_losses(make_config) -> None:
    # Grad accumulation (two losses per step) and an epoch end inside the window of 4.
    keys = {"grad_accumulation": 2, "max_steps": 0, "epochs": 2}
    plain = make_config(train={**keys, "sync_every_n_steps": 1}, output={"name": "plain"})
    deferred = make_config(train={**keys, "sync_every_n_steps": 4}, output={"name": "deferred"})
    (one, one_events), (four, four_events) = train(plain), train(deferred)
    assert one.state == four.state == "done"
    steps = [e for e in one_events if e["type"] == "step"]
    assert len(steps) > 4
    fields = ("step", "epoch", "loss", "lr", "total")
    assert [[e[k] for k in fields] for e in four_events if e["type"] == "step"] == [
        [e[k] for k in fields] for e in steps
    ]
    epochs = [(e["epoch"], e["step"], e["loss"]) for e in one_events if e["type"] == "epoch"]
    assert [(e["epoch"], e["step"], e["loss"]) for e in four_events if e["type"] == "epoch"] == epochs
    kinds = [e["type"] for e in four_events if e["type"] != "warning"]
    assert kinds == [e["type"] for e in one_events if e["type"] != "warning"]


def test_step_events_arrive_a_window_at_a_time(make_config) -> None:
    config = make_config(train={"max_steps": 5, "epochs": 1, "sync_every_n_steps": 3})
    trainer = controlled_trainer(config, create_run_dir(config))
    seen: list[tuple[int, int]] = []  # (event's step, steps done when it was sent)
    trainer.add_listener(lambda e: e["type"] == "step" and seen.append((e["step"], trainer.state.step)))
    assert trainer.run().state == "done"
    # Steps 1-3 are read back after step 3; 4-5 at the run's end, before its last saves.
    assert seen == [(1, 3), (2, 3), (3, 3), (4, 5), (5, 5)]


def inject_nan_loss(trainer: Trainer, at_step: int) -> None:
    """Make the loss of step ``at_step`` NaN (its batches run while ``at_step - 1`` are done)."""
    plain = trainer._per_sample_loss

    def loss(*args: Any) -> torch.Tensor:
        value = plain(*args)
        return value * float("nan") if trainer.state.step == at_step - 1 else value

    trainer._per_sample_loss = loss  # type: ignore[method-assign]


@pytest.mark.parametrize(
    ("window", "state_every", "bad", "saved"),
    [
        (5, 2, 4, ["step-000002"]),  # found by the read-back before the save of step 4
        (3, 0, 2, []),  # found when the window of 3 is read back
    ],
)
def test_a_nan_loss_read_back_late_fails_naming_its_step_and_nothing_after_is_saved(
    make_config, window: int, state_every: int, bad: int, saved: list[str]
) -> None:
    config = make_config(
        train={"sync_every_n_steps": window, "epochs": 1},
        save={"state_every_n_steps": state_every},
    )
    trainer = controlled_trainer(config, create_run_dir(config))
    trainer.setup()
    inject_nan_loss(trainer, bad)
    result = trainer.run()
    events = read_events(result.run_dir)
    assert result.state == "failed" and f"loss became nan at step {bad} (epoch 1)" in result.error
    assert result.step == bad - 1 and events[-1]["type"] == "failed" and events[-1]["step"] == bad - 1
    assert [e["step"] for e in events if e["type"] == "step"] == list(range(1, bad))
    assert [path.name for path in saves(result.run_dir / "state")] == saved
    assert not (result.run_dir / "lora").exists()


def test_a_non_finite_gradient_read_back_late_fails_naming_its_step(make_config) -> None:
    config = make_config(train={"sync_every_n_steps": 4, "epochs": 1})
    trainer = controlled_trainer(config, create_run_dir(config))
    trainer.setup()
    param = trainer.models.unet_params[0]
    param.register_hook(lambda grad: grad * float("nan") if trainer.state.step == 1 else grad)
    result = trainer.run()
    assert result.state == "failed", result.error
    assert "gradients became nan at step 2 (epoch 1)" in result.error and result.step == 1
    steps = [e for e in read_events(result.run_dir) if e["type"] == "step"]
    assert [e["step"] for e in steps] == [1]
    assert not (result.run_dir / "lora").exists()


def test_a_save_in_the_middle_of_a_window_reads_back_first(make_config) -> None:
    config = make_config(
        train={"sync_every_n_steps": 4, "max_steps": 5, "epochs": 1}, save={"state_every_n_steps": 2}
    )
    trainer = controlled_trainer(config, create_run_dir(config))
    reported: list[int] = []
    trainer.add_listener(lambda e: e["type"] == "step" and reported.append(e["step"]))
    at_save: dict[int, tuple[list[int], int]] = {}
    trainer.add_save_hook(lambda step: at_save.setdefault(step, (list(reported), len(trainer.state.losses))))
    assert trainer.run().state == "done"
    assert at_save == {2: ([1, 2], 2), 4: ([1, 2, 3, 4], 4)}
    assert reported == [1, 2, 3, 4, 5]


def test_a_cancel_with_steps_unread_reads_them_back_and_resumes_exactly(make_config) -> None:
    # The stop asked at step 1's event lands after step 2, the end of the window of 2.
    def config(name: str):
        return make_config(
            train={"max_steps": 5, "epochs": 1, "sync_every_n_steps": 2}, output={"name": name}
        )

    trainer = assert_resume_matches(config, steps=5, stop_at=1)
    assert trainer.resume_state_dict()["state"]["step"] == 2
    assert len(trainer.resume_state_dict()["state"]["losses"]) == 2


def test_sync_interval_is_one_on_a_cpu_and_ten_on_a_gpu_unless_set() -> None:
    assert sync_every(TrainParams(), torch.device("cpu")) == 1
    assert sync_every(TrainParams(), torch.device("cuda")) == GPU_SYNC_EVERY == 10
    assert sync_every(TrainParams(sync_every_n_steps=3), torch.device("cpu")) == 3


def test_speed_keys_may_change_between_a_save_and_its_resume() -> None:
    saved = {"train": {"seed": 1}}  # a save made before the speed keys existed
    current = {"train": {"seed": 1, "sync_every_n_steps": 5, "compile": True, "tf32": False}}
    assert config_changes(saved, current) == []
    assert config_changes(saved, {"train": {"seed": 2, "prefetch": False}}) == ["train.seed"]


# ----------------------------------------------------------------- prefetching


@pytest.mark.parametrize("pin", [True, False])
def test_the_prefetch_thread_pins_on_the_callers_gpu(monkeypatch, pin: bool) -> None:
    """Rank 1 of a multi-GPU run trains on cuda:1; its prefetch thread must not start a CUDA
    context on GPU 0 (where a new thread begins) when it pins memory."""
    import threading

    from kiln.engine.train.prefetch import prefetch_executor

    chosen: list[tuple[str, int]] = []
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    monkeypatch.setattr(
        torch.cuda, "set_device", lambda index: chosen.append((threading.current_thread().name, index))
    )
    executor = prefetch_executor(pin)
    executor.submit(lambda: None).result()
    executor.shutdown()
    assert chosen == ([("kiln-prefetch_0", 1)] if pin else [])


@pytest.mark.parametrize("cache_latents", [True, False])
def test_prefetching_gives_exactly_the_plain_losses(make_config, cache_latents: bool) -> None:
    keys = {"cache_latents": cache_latents, "min_snr_gamma": 5.0}
    with_thread = losses_of(make_config, "ahead", prefetch=True, **keys)
    assert with_thread == losses_of(make_config, "plain", prefetch=False, **keys)
    assert len(with_thread) == STEPS


def test_a_batch_built_ahead_is_the_batch_built_now(make_config) -> None:
    config = make_config(dataset={"shuffle_caption": True, "caption_dropout_rate": 0.3})
    trainer = Trainer(config, create_run_dir(config))
    trainer.setup()
    try:
        batches = trainer.process_batches(2)
        keys = [(2, number, batch) for number, batch in enumerate(batches)]
        inputs = trainer.inputs
        inputs.take(keys[0], ahead=keys[1])
        assert inputs._ahead is not None and inputs._ahead[0] == keys[1]  # building in the thread
        ahead = inputs.take(keys[1])
        now = inputs.prepare(*keys[1])
        assert ahead.captions == now.captions and ahead.images == now.images
        for name in ("latents", "noise", "timesteps"):
            assert torch.equal(getattr(ahead, name), getattr(now, name)), name
        # A key that was not the one built ahead is built on the spot.
        assert torch.equal(inputs.take(keys[3], ahead=keys[2]).noise, inputs.prepare(*keys[3]).noise)
    finally:
        trainer.inputs.close()
        trainer.close()


# ----------------------------------------------------------------- channels_last, compile


def test_channels_last_trains_to_the_plain_losses_and_saves_the_same_keys(make_config) -> None:
    keys = {"max_steps": STEPS, "epochs": 1}
    network = {"conv_rank": 2, "conv_alpha": 1.0}  # LoCon: conv adapters in channels_last too
    plain_config = make_config(train=keys, network=network, output={"name": "plain"})
    last_config = make_config(train={**keys, "channels_last": True}, network=network, output={"name": "cl"})
    trainer = controlled_trainer(last_config, create_run_dir(last_config))
    trainer.setup()
    conv = trainer.models.unet.conv_in.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    last = trainer.run()
    plain, _ = train(plain_config)
    assert last.state == plain.state == "done", last.error
    expected = step_losses(plain.run_dir)
    assert step_losses(last.run_dir) == pytest.approx(expected, rel=FLOAT_TOLERANCE)
    assert set(read_lora(last.lora)[0]) == set(read_lora(plain.lora)[0])


@pytest.fixture
def without_codegen(monkeypatch):
    """``train.compile`` through Dynamo and AOT autograd (``backend="aot_eager"``) but without
    Inductor's code generation.

    What Kiln's side of compile can break is all at the Dynamo level: the U-Net compiled in place
    with its adapters, graph capture of the training step, state-dict keys, saves and resume.
    Inductor's codegen on a CPU is C++ built by the compiler, not the Triton kernels a GPU run
    gets, and it took 238 s for the tiny U-Net's first step with a cold cache (what CI has):
    most of the suite's time. The GPU checks (bench/gpu_checks.sh options) run the real thing.
    """
    compile_module = torch.nn.Module.compile
    compiled: list[torch.nn.Module] = []

    def aot_eager(self: torch.nn.Module, *args: Any, **kwargs: Any) -> None:
        compiled.append(self)
        compile_module(self, *args, **{**kwargs, "backend": "aot_eager"})

    monkeypatch.setattr(torch.nn.Module, "compile", aot_eager)
    return compiled


@pytest.mark.slow
def test_compiled_unet_trains_to_the_plain_losses_saves_plain_keys_and_resumes(
    make_config, without_codegen: list[torch.nn.Module]
) -> None:
    # One 64 px bucket: one compiled shape.
    one_bucket = {"min_bucket_reso": 64, "max_bucket_reso": 64}
    keys = {"max_steps": STEPS, "epochs": 1}
    plain_config = make_config(dataset=one_bucket, train=keys, output={"name": "plain"})
    plain_result, _ = train(plain_config)
    plain = step_losses(plain_result.run_dir)
    config = make_config(dataset=one_bucket, train={**keys, "compile": True}, output={"name": "c"})
    trainer = controlled_trainer(config, create_run_dir(config))
    trainer.setup()
    assert without_codegen == [trainer.models.unet] and trainer.models.unet._compiled_call_impl is not None
    assert "_orig_mod" not in "".join(trainer.models.unet.state_dict())
    result = trainer.run()
    assert result.state == "done", result.error
    assert step_losses(result.run_dir) == pytest.approx(plain, rel=FLOAT_TOLERANCE)
    tensors, _ = read_lora(result.lora)
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight" in tensors

    def named(name: str):
        train_keys = {"max_steps": 4, "epochs": 1, "compile": True}
        return make_config(dataset=one_bucket, train=train_keys, output={"name": name})

    assert_resume_matches(named, steps=4)


# ----------------------------------------------------------------- TF32


@pytest.fixture
def tf32_settings():
    """The process's TF32 settings, put back after the test whatever it did."""
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    before = (torch.get_float32_matmul_precision(), conv.fp32_precision)
    torch.set_float32_matmul_precision("highest")
    conv.fp32_precision = "ieee"
    yield matmul, conv
    torch.set_float32_matmul_precision(before[0])
    conv.fp32_precision = before[1]


def test_tf32_is_set_on_cuda_when_asked_and_put_back_after(tf32_settings) -> None:
    matmul, conv = tf32_settings
    restore = apply_speed_options(
        TrainParams(tf32=True), torch.nn.Linear(2, 2), torch.device("cuda"), logging.getLogger("t")
    ).restore
    assert (matmul.fp32_precision, conv.fp32_precision) == ("tf32", "tf32")
    # The legacy reading agrees (Inductor asks it when choosing matmul kernels under
    # train.compile; setting only fp32_precision made it raise "mix of the legacy and new APIs").
    assert torch.get_float32_matmul_precision() == "high" and matmul.allow_tf32
    restore()
    assert (matmul.fp32_precision, conv.fp32_precision) == ("ieee", "ieee")
    assert torch.get_float32_matmul_precision() == "highest"


@pytest.mark.parametrize(("asked", "device"), [(False, "cuda"), (True, "cpu")])
def test_tf32_is_untouched_when_off_or_off_a_gpu(tf32_settings, asked: bool, device: str) -> None:
    matmul, conv = tf32_settings
    speed = apply_speed_options(
        TrainParams(tf32=asked), torch.nn.Linear(2, 2), torch.device(device), logging.getLogger("t")
    )
    assert (matmul.fp32_precision, conv.fp32_precision) == ("ieee", "ieee")
    speed.restore()
    assert (matmul.fp32_precision, conv.fp32_precision) == ("ieee", "ieee")
    assert use_tf32(torch.device("cpu"))() is None


def test_a_run_puts_the_tf32_settings_back_when_it_ends(make_config, monkeypatch) -> None:
    config = make_config(train={"max_steps": 1, "epochs": 1})
    trainer = controlled_trainer(config, create_run_dir(config))
    trainer.setup()
    restored: list[bool] = []
    monkeypatch.setattr(trainer.speed, "restore", lambda: restored.append(True))
    assert trainer.run().state == "done" and restored == [True]


# ----------------------------------------------------------------- float32 master weights


def test_bf16_keeps_trained_weights_and_optimizer_state_in_float32(make_config) -> None:
    # Text encoder trained too; no LoCon: CPU bf16 conv backward gives NaN for tiny inputs.
    config = make_config(
        train={"precision": "bf16", "max_steps": 2, "epochs": 1}, network={"train_text_encoder": True}
    )
    trainer = controlled_trainer(config, create_run_dir(config))
    trainer.setup()
    trainable = trainer.models.trainable
    assert trainable and all(param.dtype == torch.float32 for param in trainable)
    ids = {id(param) for param in trainable}
    frozen = [p for m in (trainer.models.unet, trainer.models.text_encoders[0].model) for p in m.parameters()]
    frozen = [param for param in frozen if id(param) not in ids]
    assert frozen and all(param.dtype == torch.bfloat16 and not param.requires_grad for param in frozen)
    assert trainer.run().state == "done"
    state = trainer.optimizer.state_dict()["state"]
    moments = [value for entry in state.values() for key, value in entry.items() if key != "step"]
    assert len(state) == len(trainable) and moments
    assert all(moment.dtype == torch.float32 for moment in moments)
    assert all(param.dtype == torch.float32 for param in trainer.models.trainable)


def test_fp16_set_up_keeps_trained_weights_in_float32(make_config) -> None:
    # fp16 training is refused on a CPU (no fp16 autocast there); the loading it would use is not.
    from kiln.engine.models.family import resolve_family
    from kiln.engine.train.models import load_models

    config = make_config(network={"train_text_encoder": True})
    family = resolve_family(Path(config.model.base), "auto")
    models = load_models(config, family, torch.device("cpu"), torch.float16, logging.getLogger("t"))
    assert models.trainable and all(param.dtype == torch.float32 for param in models.trainable)
    ids = {id(param) for param in models.trainable}
    frozen = [param for param in models.unet.parameters() if id(param) not in ids]
    assert frozen and all(param.dtype == torch.float16 for param in frozen)
