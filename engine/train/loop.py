"""The training loop: a :class:`Trainer` with explicit state, read top to bottom.

``Trainer(config, run_dir).run()`` loads the base model through its family, adds Kohya's LoRA
adapters with peft (:mod:`kiln.engine.train.models`), caches latents, then trains epoch by
epoch, sending events to its event sink and writing samples and LoRA files into the run
folder. Everything a resumed run needs is either in :class:`TrainState` (step, epoch, batch
within the epoch) or derived from the seed: the data order, caption shuffles, noise and
timesteps of each batch are pure functions of ``(seed, epoch, batch)``. The loop checks a stop
flag between optimizer steps, so a cancel lands on a step boundary; the full resume state is
saved at every epoch's end, every ``save.state_every_n_steps`` and on a cancel (see
:mod:`kiln.engine.train.checkpoint`), and ``Trainer(..., resume=True)`` continues from the
newest complete save. With several processes (``accelerate launch``) each trains every N-th
batch, gradients are averaged, and only the main process writes anything.

The trainer knows nothing of run control: :mod:`kiln.engine.runs` passes it an event writer,
stops it (:meth:`Trainer.request_stop`, from a signal or a cancel-request file) and installs
its test hooks as listeners (:meth:`Trainer.add_listener`, :meth:`Trainer.add_save_hook`).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from kiln.engine import __version__
from kiln.engine.errors import KilnError, RunError
from kiln.engine.models.family import resolve_family
from kiln.engine.models.loading import model_fingerprint, model_source
from kiln.engine.train import checkpoint
from kiln.engine.train.checkpoint_file import save_full_checkpoint
from kiln.engine.train.config import TrainConfig, check_family_settings
from kiln.engine.train.data import (
    LatentCache,
    TrainImage,
    TrainingSet,
    disk_cache_folder,
    epoch_batches,
    load_pixels,
    split_validation,
    training_set,
    with_reg_images,
)
from kiln.engine.train.ema import weight_average, with_average
from kiln.engine.train.fused_backward import FusedBackward
from kiln.engine.train.lora_io import (
    DTYPES,
    base_model_hashes,
    lora_metadata,
    write_lora,
)
from kiln.engine.train.loss import min_snr_weights, per_sample_loss
from kiln.engine.train.memory import begin_run_peak, peak_memory
from kiln.engine.train.memory_estimate import estimate_warning, run_estimate
from kiln.engine.train.models import TrainModels, base_alphas_cumprod, load_models
from kiln.engine.train.optimizer import make_accelerator, make_optimizer
from kiln.engine.train.outputs import (
    STATE_FOLDER,
    EventSink,
    NoEvents,
    lora_path,
    samples_dir,
)
from kiln.engine.train.prefetch import BatchInputs, BatchKey
from kiln.engine.train.readback import PendingStep, StepReadback
from kiln.engine.train.report import RunReport
from kiln.engine.train.samples import (
    CPU_STEPS,
    DEFAULT_STEPS,
    SamplePrompt,
    parse_prompt,
    render_samples,
    sample_scheduler,
)
from kiln.engine.train.speed import apply_speed_options, to_device
from kiln.engine.train.text_cache import text_cache_for
from kiln.engine.train.validation import held_out_losses

WEIGHT_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

Listener = Callable[[dict[str, Any]], None]


@dataclass
class TrainState:
    """Where the run stands. With the adapters, optimizer and LR scheduler it is all resume needs.

    Attributes:
        step: Optimizer steps done.
        epoch: The epoch in progress (1-based).
        batch_in_epoch: Batches of ``epoch`` done by this process.
        losses: This epoch's batch losses so far (for the epoch's mean).
    """

    step: int = 0
    epoch: int = 1
    batch_in_epoch: int = 0
    losses: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain values for a JSON state file."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainState:
        """The inverse of :meth:`to_dict`."""
        return cls(**data)


@dataclass(frozen=True)
class RunResult:
    """How a run ended."""

    state: str
    run_dir: Path
    step: int
    epoch: int
    lora: Path | None = None
    error: str | None = None


class Trainer:
    """One training run into one run folder.

    Args:
        config: The checked config.
        run_dir: The run folder (made by :func:`kiln.engine.runs.layout.create_run_dir`).
        listeners: Called with each event after it is sent (the CLI's progress bar).
        cpu: Train on the CPU even when a GPU is present.
        resume: Continue from the newest complete save in ``state/`` (emits ``resumed``).
        force: Resume even when the dataset or the number of processes changed.
        events: Where the main process sends its events (run control's event writer);
            default: nowhere but the listeners. Other processes never send any.

    Extension points for run control: :meth:`request_stop` (a signal handler may call it),
    :meth:`add_listener`, :meth:`add_save_hook`, :attr:`state`, :meth:`resume_state_dict` /
    :meth:`load_resume_state_dict`, and ``accelerator.is_main_process`` deciding who writes
    events, samples and files.
    """

    def __init__(
        self,
        config: TrainConfig,
        run_dir: Path,
        listeners: list[Listener] | None = None,
        cpu: bool = False,
        resume: bool = False,
        force: bool = False,
        events: EventSink | None = None,
    ) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.save_hooks: list[Callable[[int], None]] = []
        self.cpu = cpu
        self.resume = resume
        self.force = force
        self.state = TrainState()
        self.stop_requested = threading.Event()
        self.ready = False
        self.report = RunReport(events, listeners, f"kiln.train.{id(self)}")
        self.log = self.report.log
        self.started_at = time.time()
        self.lora_files: list[Path] = []
        self.last_epoch = 0

    # ----------------------------------------------------------------- public API

    def request_stop(self) -> None:
        """Stop after the current optimizer step, save a LoRA and end with ``cancelled``."""
        self.stop_requested.set()

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener`` with each event after it is sent (on every process)."""
        self.report.listeners.append(listener)

    def add_save_hook(self, hook: Callable[[int], None]) -> None:
        """Call ``hook(step)`` inside each resume-state save, after its payload is written and
        before its manifest (a test kills the process there)."""
        self.save_hooks.append(hook)

    def run(self) -> RunResult:
        """Set up (if not yet), train to the end, and return how it ended. Never raises for
        training failures: they end the run with a ``failed`` event instead."""
        try:
            if not self.ready:
                self.setup()
            return self._train()
        except KeyboardInterrupt:
            # A second signal (or Ctrl+C) stops at once: the last complete save stays as it was.
            self.report.emit(
                "cancelled", step=self.state.step, epoch=self.state.epoch, lora=None, reason="interrupted"
            )
            return self._result("cancelled")
        except Exception as exc:
            message = str(exc) if isinstance(exc, KilnError) else f"{type(exc).__name__}: {exc}"
            self.log.error("training failed: %s\n%s", message, traceback.format_exc())
            self.report.emit("failed", error=message, step=self.state.step, epoch=self.state.epoch)
            return self._result("failed", error=message)
        finally:
            self.report.close()

    def emit_aborted(self) -> None:
        """End the events with ``cancelled`` when the process must exit before the loop can
        (a stuck main thread after a second signal); nothing when the run already ended."""
        if not self.report.ended:
            self.report.emit(
                "cancelled", step=self.state.step, epoch=self.state.epoch, lora=None, reason="aborted"
            )
            self.report.events.close()

    def setup(self) -> None:
        """Load everything (and the resume state) and send the ``start`` or ``resumed`` event;
        separate from :meth:`run` so callers (and tests) can inspect or adjust the trainer
        before the first step."""
        config = self.config
        self.accelerator = make_accelerator(config, self.cpu)
        self.device = self.accelerator.device
        begin_run_peak(self.device)  # the run's peak, loading and caching included
        self.is_main = self.accelerator.is_main_process
        self.processes = self.accelerator.num_processes
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.report.open_log(self.run_dir)
        else:
            self.report.events = NoEvents()
        if config.train.precision == "fp16" and self.device.type == "cpu":
            raise RunError(
                'train.precision = "fp16" needs a GPU: accelerate has no fp16 autocast on a CPU; '
                'use "bf16" or "fp32" on this machine'
            )
        self.weight_dtype = WEIGHT_DTYPES[config.train.precision]
        torch.manual_seed(config.train.seed)
        self.source = model_source(config.model.base, config.model.allow_pickle)
        family = resolve_family(self.source.path, config.model.family)
        check_family_settings(config, family)

        self.data: TrainingSet = training_set(config.dataset)
        self.validation_images: tuple[TrainImage, ...] = ()
        if config.train.validation_split > 0:
            self.data, self.validation_images = split_validation(
                self.data, config.train.validation_split, config.train.seed
            )
            self.log.info(
                "validation: %d image(s) held out: %s",
                len(self.validation_images),
                ", ".join(image.rel_path for image in self.validation_images),
            )
        if config.dataset.reg_path:  # balanced to the samples that train, as Kohya does
            self.data = with_reg_images(self.data, config.dataset, self.log)
        for warning in self.data.warnings:
            self.report.warn(warning)

        self.log.info("loading %s (%s), model family: %s", self.source.path, self.source.kind, family.title)
        self.models: TrainModels = load_models(config, family, self.device, self.weight_dtype, self.log)
        # Min-SNR weights come from the base schedule even when zero terminal SNR rescales the
        # noising one (as Kohya computes them), so the last timestep keeps a finite weight.
        self.alphas_cumprod = base_alphas_cumprod(self.models).to(self.device)
        self.speed = apply_speed_options(config.train, self.models.unet, self.device, self.log)

        from kiln.engine.plan.steps import plan_steps

        train = config.train
        self.plan = plan_steps(
            self.data.bucket_items(), train.batch_size, train.epochs, train.grad_accumulation, self.processes
        )
        self.total_steps = (
            min(self.plan.total_steps, train.max_steps) if train.max_steps else self.plan.total_steps
        )
        self._prepare_optimizer()
        self.average = weight_average(self.models.unet_params, train.ema_decay) if self.models.full else None
        on_cpu = self.device.type == "cpu"
        sample_steps = config.sample.steps or (CPU_STEPS if on_cpu else DEFAULT_STEPS)
        self.sample_prompts: list[SamplePrompt] = [
            parse_prompt(line, index, config.dataset.resolution, train.seed, sample_steps)
            for index, line in enumerate(config.sample.prompts)
        ]
        # The epoch-0 baseline costs a whole sample round before the first step: on a CPU
        # that is minutes, so "auto" renders it on a GPU only.
        self.sample_baseline = {"on": True, "off": False}.get(config.sample.baseline, not on_cpu)
        self.latents = LatentCache(
            disk_cache_folder(self.data.root, model_fingerprint(self.source))
            if train.cache_latents_to_disk
            else None
        )
        if train.cache_latents:
            self._cache_latents()
        timesteps = self.models.noise_scheduler.config.num_train_timesteps
        self.inputs = BatchInputs(config, self.data.images, self.latents, family, timesteps, self.speed)
        self.text_cache = text_cache_for(
            config, self.models, (*self.data.images, *self.validation_images), self.device, self.log
        )
        self.memory_estimate = run_estimate(self)  # probes one step: see memory_estimate.py
        if (too_much := estimate_warning(self.memory_estimate)) is not None:
            self.report.warn(too_much)
        if self.is_main:
            self.report.open_tensorboard(self.run_dir)
        resumed_from = self._load_resume_state() if self.resume else None
        self.ready = True
        self.report.emit(
            "resumed" if resumed_from else "start",
            **({"save": resumed_from.name} if resumed_from else {}),
            name=config.output.name,
            run_dir=str(self.run_dir),
            model=str(self.source.path),
            dataset=str(self.data.root),
            device=str(self.device),
            precision=train.precision,
            images=len(self.data.images),
            items_per_epoch=self.plan.items_per_epoch,
            batches_per_epoch=self.plan.batches_per_epoch,
            steps_per_epoch=self.plan.steps_per_epoch,
            epochs=train.epochs,
            total=self.total_steps,
            step=self.state.step,
            epoch=self.state.epoch,
            buckets=[
                {
                    "resolution": list(b.resolution) if b.resolution else None,
                    "items": b.items,
                    "batches": b.batches,
                }
                for b in self.plan.buckets
            ],
            family=family.name,
            network=config.network.type,
            prediction=self.models.prediction_type,
            unet_modules=len(self.models.unet_targets),
            text_encoder_modules=len(self.models.te_targets),
            processes=self.processes,
            version=__version__,
            memory_estimate=self.memory_estimate,
        )

    def resume_state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this run exactly: adapters, optimizer, LR schedule, state.

        Data order, caption shuffles, noise and timesteps derive from ``(seed, epoch, batch)``,
        so no RNG state is needed beyond what is here.
        """
        return {
            "state": self.state.to_dict(),
            **self.models.adapters(),
            "optimizer": (self.fused or self.optimizer).state_dict(),
            "scheduler": self.lr_scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            **({"ema": self.average.state_dict()} if self.average is not None else {}),
        }

    def load_resume_state_dict(self, data: dict[str, Any]) -> None:
        """Restore what :meth:`resume_state_dict` returned (call after :meth:`setup`)."""
        self.state = TrainState.from_dict(data["state"])
        self.models.load_adapters(data)
        (self.fused or self.optimizer).load_state_dict(data["optimizer"])
        self.lr_scheduler.load_state_dict(data["scheduler"])
        torch.set_rng_state(data["torch_rng"])
        if self.average is not None and "ema" in data:
            self.average.load_state_dict(data["ema"])

    # ----------------------------------------------------------------- setup

    def _prepare_optimizer(self) -> None:
        models = self.models
        optimizer, self.lr_scheduler = make_optimizer(self.config, models, self.total_steps, self.device)
        # The LoRA's metadata names this class, read before accelerate wraps it.
        self.base_optimizer = optimizer
        self.fused = FusedBackward(optimizer) if self.config.train.fused_backward else None
        if self.fused is not None and self.processes > 1:  # DDP would reduce applied gradients
            raise RunError("train.fused_backward runs on one process; launch it without multi-GPU")
        # The LR scheduler stays outside accelerate: it steps once per optimizer step on every
        # process, which is what the schedule over total_steps assumes.
        trained = [part for part in models.text_encoders if part.trains]
        prepared = self.accelerator.prepare(models.unet, *(part.model for part in trained), optimizer)
        models.unet_train, self.optimizer = prepared[0], prepared[-1]
        for part, wrapped in zip(trained, prepared[1:-1], strict=True):
            part.train_model = wrapped

    def _cache_latents(self) -> None:
        started = time.perf_counter()
        missing = [image for image in self.data.images if self.latents.get(image) is None]
        for image in missing:
            self.latents.put(image, self._encode(image))
        self.log.info(
            "latents: %d cached, %d encoded in %.1fs",
            len(self.data.images) - len(missing),
            len(missing),
            time.perf_counter() - started,
        )

    @torch.no_grad()
    def _encode(self, image: TrainImage) -> torch.Tensor:
        vae = self.models.vae
        pixels = load_pixels(image).unsqueeze(0).to(self.device, torch.float32)
        latent = vae.encode(pixels).latent_dist.mode()
        return (latent * vae.config.scaling_factor)[0]

    # ----------------------------------------------------------------- the loop

    def _train(self) -> RunResult:
        # Step results stay on the device until a read-back (every speed.sync_every steps, and
        # before anything is saved, validated, sampled or ended): see readback.py.
        self.readback = StepReadback(self.speed.sync_every, self.report, self.total_steps)
        try:
            return self._train_epochs()
        finally:
            self.inputs.close()
            self.speed.restore()

    def _train_epochs(self) -> RunResult:
        config, readback = self.config, self.readback
        epochs = config.train.epochs
        if self.state.step == 0 and self.state.batch_in_epoch == 0 and self.state.epoch == 1:
            self._maybe_validate(0)
            if self.sample_baseline:
                self._maybe_sample(0)
            self._barrier()
        every = config.save.state_every_n_steps
        ga = config.train.grad_accumulation
        while self.state.epoch <= epochs and self.state.step < self.total_steps:
            epoch = self.state.epoch
            batches = self.process_batches(epoch)
            keys = [(epoch, self._global_batch(number), batch) for number, batch in enumerate(batches)]
            while self.state.batch_in_epoch < len(batches) and self.state.step < self.total_steps:
                # Gradient accumulation is done by hand, not with accelerator.accumulate: an
                # optimizer step covers the batches of one window [index, window_end), and the
                # windows are fixed by the batch's place in the epoch, so a run resumed in the
                # middle of an epoch continues exactly as an uninterrupted one would.
                index = self.state.batch_in_epoch
                readback.begin()
                window_end = min(len(batches), (index // ga + 1) * ga)
                losses = []
                for micro in range(index, window_end):
                    # The next batch's inputs are built in the background while this one trains.
                    ahead = keys[micro + 1] if micro + 1 < len(keys) else None
                    # Gradients are averaged across processes once per optimizer step, not per batch.
                    with self._no_sync(micro < window_end - 1):
                        loss = self.batch_loss(*keys[micro], ahead)
                        self.accelerator.backward(loss / (window_end - index))
                    losses.append(loss.detach())
                norm = self._optimizer_step()
                self.state.batch_in_epoch = window_end
                self.state.step += 1
                lrs = [float(lr) for lr in self.lr_scheduler.get_last_lr()]
                memory = peak_memory(self.device)
                readback.add(PendingStep(self.state.step, epoch, losses, norm, lrs, memory))
                if readback.due:
                    readback.flush(self.state)
                if self.state.step >= self.total_steps:
                    break  # the run is over: finishing it is only its last saves
                if every and self.state.step % every == 0 and self.state.batch_in_epoch < len(batches):
                    readback.flush(self.state)
                    self.save_state()  # (an epoch's last step is saved by _end_epoch)
                if self._stop_agreed():
                    readback.flush(self.state)
                    return self._stop()
            readback.flush(self.state)  # the epoch's losses, and nothing unchecked is saved
            finished_epoch = self.state.batch_in_epoch >= len(batches)
            self._end_epoch(
                epoch, final=not finished_epoch or epoch == epochs or self.state.step >= self.total_steps
            )
        last = self.lora_files[-1] if self.lora_files else None
        self.report.emit(
            "done",
            step=self.state.step,
            epoch=self.last_epoch,
            lora=str(last) if last else None,
            seconds=round(time.time() - self.started_at, 3),
        )
        return self._result("done", lora=last)

    def _global_batch(self, batch_in_process: int) -> int:
        """The batch's number in the whole epoch's order, so each process's batches get their
        own noise and caption shuffles (with one process it is the batch's own number)."""
        return batch_in_process * self.accelerator.num_processes + self.accelerator.process_index

    def _no_sync(self, active: bool) -> contextlib.AbstractContextManager:
        if not active or self.accelerator.num_processes == 1:
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        stack.enter_context(self.accelerator.no_sync(self.models.unet_train))
        for part in self.models.text_encoders:
            if part.trains:
                stack.enter_context(self.accelerator.no_sync(part.train_model))
        return stack

    def _stop_agreed(self) -> bool:
        """Whether to stop now: a stop asked of any process stops all of them at the same step."""
        wanted = self.stop_requested.is_set()
        if self.accelerator.num_processes == 1:
            return wanted
        flag = torch.tensor([1.0 if wanted else 0.0], device=self.device)
        return bool(self.accelerator.reduce(flag, reduction="sum").item() > 0)

    def _barrier(self) -> None:
        if self.accelerator.num_processes > 1:
            self.accelerator.wait_for_everyone()

    def process_batches(self, epoch: int) -> list[tuple[int, ...]]:
        """This process's batches of ``epoch``: every N-th of the epoch's order, padded so all
        processes take the same number of steps."""
        batches = epoch_batches(self.data.images, self.config.train.batch_size, self.config.train.seed, epoch)
        processes = self.accelerator.num_processes
        if processes == 1:
            return batches
        per_process = math.ceil(len(batches) / processes)
        padded = batches + batches[: per_process * processes - len(batches)]
        return padded[self.accelerator.process_index :: processes]

    def batch_loss(
        self, epoch: int, batch_number: int, batch: tuple[int, ...], ahead: BatchKey | None = None
    ) -> torch.Tensor:
        """The loss of one batch (min-SNR weighted when asked), left on the device: the trainer
        checks it is finite when it reads it back (:mod:`kiln.engine.train.readback`).
        ``ahead``: the batch to prepare next, in the background (``train.prefetch``)."""
        config, models, speed = self.config, self.models, self.speed
        host = self.inputs.take((epoch, batch_number, batch), ahead)
        if host.latents is None:  # not cached: the VAE encodes them on the device, now
            host = self.inputs.with_latents(host, torch.stack([self._latent(image) for image in host.images]))
        assert host.latents is not None and host.noise is not None and host.timesteps is not None
        layout = torch.channels_last if speed.channels_last else torch.preserve_format
        latents = to_device(host.latents, self.device, torch.float32, speed.pin, layout)
        noise = to_device(host.noise, self.device, None, speed.pin, layout)
        timesteps = to_device(host.timesteps, self.device, pin=speed.pin)
        time_ids = None if host.time_ids is None else to_device(host.time_ids, self.device, pin=speed.pin)
        loss = self._per_sample_loss(latents, noise, timesteps, host.captions, time_ids)
        if host.weights is not None:
            # Kohya's prior loss: class images count prior_loss_weight times a training image.
            loss = loss * to_device(host.weights, loss.device, pin=speed.pin)
        if config.train.min_snr_gamma:
            loss = loss * min_snr_weights(
                self.alphas_cumprod, timesteps, config.train.min_snr_gamma, models.prediction_type
            )
        return loss.mean()

    def _per_sample_loss(
        self,
        latents: torch.Tensor,
        noise: torch.Tensor,
        timesteps: torch.Tensor,
        captions: list[str],
        time_ids: torch.Tensor | None,
    ) -> torch.Tensor:
        return per_sample_loss(
            self.models,
            self.accelerator,
            self.weight_dtype,
            self.config.train.clip_skip,
            latents,
            noise,
            timesteps,
            captions,
            time_ids,
            self.text_cache,
        )

    def _latent(self, image: TrainImage) -> torch.Tensor:
        latent = self.latents.get(image)
        if latent is None:
            latent = self._encode(image)
            if self.config.train.cache_latents:
                self.latents.put(image, latent)
        return latent

    def _optimizer_step(self) -> torch.Tensor | None:
        """Clip, step, and return the gradient norm when it must be finite (left on the device,
        for the read-back to check): fp16's grad scaler skips overflowing steps by itself."""
        # Under train.fused_backward (never with clipping) the hooks have applied and dropped
        # every gradient already: this step finds none and only keeps the schedule's count.
        norm = None
        if self.config.train.max_grad_norm:
            norm = self.accelerator.clip_grad_norm_(self.models.trainable, self.config.train.max_grad_norm)
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.average is not None:
            self.average.step()
        return norm if isinstance(norm, torch.Tensor) and self.accelerator.scaler is None else None

    def _end_epoch(self, epoch: int, final: bool) -> None:
        losses = self.state.losses
        mean = sum(losses) / len(losses) if losses else None
        self.report.emit(
            "epoch",
            epoch=epoch,
            epochs=self.config.train.epochs,
            step=self.state.step,
            loss=round(mean, 6) if mean is not None else None,
        )
        self.log.info("epoch %d done at step %d, mean loss %s", epoch, self.state.step, mean)
        if mean is not None:
            self.report.scalar("loss/epoch", mean, epoch)
        self._maybe_validate(epoch)
        if final or epoch % self.config.save.every_n_epochs == 0:
            self.save_lora(epoch)
        every = self.config.sample.every_n_epochs
        if every and (final or epoch % every == 0):
            self._maybe_sample(epoch)
        self.last_epoch = epoch
        self.state.epoch = epoch + 1
        self.state.batch_in_epoch = 0
        self.state.losses = []
        if final:
            self._barrier()
        else:
            self.save_state()

    def _stop(self) -> RunResult:
        path = self.save_lora(self.state.epoch)
        saved = self.save_state()
        self.report.emit(
            "cancelled",
            step=self.state.step,
            epoch=self.state.epoch,
            lora=str(path) if path else None,
            state=str(saved) if saved else None,
        )
        return self._result("cancelled", lora=path)

    # ----------------------------------------------------------------- resume state

    def save_state(self) -> Path | None:
        """Save the full resume state atomically into ``state/step-NNNNNN`` (main process;
        every process waits for it). Returns the save's folder on the main process."""
        path = None
        if self.is_main:
            started = time.perf_counter()
            manifest = checkpoint.run_manifest(
                epoch=self.state.epoch,
                batch_in_epoch=self.state.batch_in_epoch,
                total=self.total_steps,
                processes=self.processes,
                images=self.data.images,
                config=self.config.to_dict(),
                started_at=self.started_at,
            )
            path = checkpoint.write_save(
                self.run_dir / STATE_FOLDER,
                self.state.step,
                self.resume_state_dict(),
                manifest,
                after_payload=self._after_save_payload,
            )
            elapsed, size = time.perf_counter() - started, checkpoint.size_mib(path)
            self.log.info("resume state saved: %s, %.1f MiB (%.1fs)", path.name, size, elapsed)
        self._barrier()
        return path

    def _after_save_payload(self, step: int) -> None:
        for hook in self.save_hooks:
            hook(step)

    def _load_resume_state(self) -> Path:
        """Restore the newest complete save (passing over damaged ones) and return its folder."""
        point = checkpoint.resume_point(
            self.run_dir,
            self.config.to_dict(),
            self.processes,
            checkpoint.dataset_fingerprint(self.data.images),
            self.force,
            self.report.warn,
        )
        self.load_resume_state_dict(point.payload)
        self.started_at = float(point.manifest.get("started_at", self.started_at))
        self.last_epoch = self.state.epoch - 1
        self._barrier()
        if self.is_main:
            for path, _ in point.skipped:  # useless, and they would crowd good saves out of the kept ones
                checkpoint.remove_save(path)
        self.log.info(
            "resumed from %s: step %d, epoch %d", point.save.name, self.state.step, self.state.epoch
        )
        return point.save

    # ----------------------------------------------------------------- outputs

    def save_lora(self, epoch: int) -> Path | None:
        """Write ``lora/<name>-eNNN.safetensors`` (main process) and emit ``checkpoint``: the LoRA,
        or a full fine-tune's whole checkpoint."""
        if not self.is_main:
            return None
        models, config = self.models, self.config
        dtype = DTYPES[config.save.precision]
        path = lora_path(self.run_dir, config.output.name, epoch)
        if models.full:
            args = (path, models, self.accelerator.unwrap_model, config, epoch, self.state.step, dtype)
            return self._emit_saved(epoch, with_average(self.average, lambda: save_full_checkpoint(*args)))
        tensors = models.network_state_dict(self.accelerator.unwrap_model, dtype)
        metadata = lora_metadata(
            config,
            epoch=epoch,
            step=self.state.step,
            total_steps=self.total_steps,
            plan=self.plan,
            processes=self.processes,
            data=self.data,
            started_at=self.started_at,
            model_name=self.source.name,
            optimizer=self.base_optimizer,
            prediction_type=models.prediction_type,
            family=models.family,
            model_hashes=self._base_model_hashes(),
        )
        return self._emit_saved(epoch, write_lora(path, tensors, metadata))

    def _emit_saved(self, epoch: int, path: Path) -> Path:
        self.lora_files.append(path)
        self.report.emit("checkpoint", epoch=epoch, step=self.state.step, path=str(path))
        return path

    def _base_model_hashes(self) -> tuple[str, str] | None:
        """The base model's A1111 hashes, computed once (a whole-file SHA-256 of a few GB)."""
        if not hasattr(self, "_model_hashes"):
            self._model_hashes = base_model_hashes(self.source.path)
        return self._model_hashes

    def validation_losses(self) -> dict[int, float]:
        """The plain MSE loss on the held-out images at each of :data:`VALIDATION_TIMESTEPS`
        (:mod:`kiln.engine.train.validation`): it moves only with the weights."""
        limit = self.models.noise_scheduler.config.num_train_timesteps
        args = (self._latent, self._per_sample_loss, self.config.train.seed, limit, self.models.family)
        return held_out_losses(self.validation_images, *args, self.device)

    def _maybe_validate(self, epoch: int) -> None:
        if not self.validation_images:
            return
        started = time.perf_counter()
        losses = self.validation_losses()
        mean = sum(losses.values()) / len(losses)
        self.report.emit(
            "validation",
            epoch=epoch,
            step=self.state.step,
            loss=round(mean, 6),
            timesteps={str(t): round(value, 6) for t, value in losses.items()},
            images=len(self.validation_images),
            seconds=round(time.perf_counter() - started, 3),
        )
        self.report.scalar("loss/validation", mean, self.state.step)

    def _maybe_sample(self, epoch: int) -> None:
        if not self.sample_prompts or not self.is_main:
            return
        started = time.perf_counter()
        scheduler = sample_scheduler(self.config.sample.sampler, self.models.noise_scheduler.config)
        self.models.unet.eval()
        offloaded = self.text_cache is not None and self.text_cache.offloaded
        if offloaded:
            self.models.move_text_encoders(self.device)
        for part in self.models.text_encoders:
            part.model.eval()
        try:
            with self.accelerator.autocast():
                paths = render_samples(
                    self.models.pipe,
                    self.sample_prompts,
                    samples_dir(self.run_dir, epoch),
                    scheduler,
                    self.config.train.clip_skip,
                    on_image=self.report.sampling,
                )
        finally:
            self.models.unet.train()
            for part in self.models.text_encoders:
                part.model.train(part.trains)
            if offloaded:
                self.models.move_text_encoders("cpu")
        self.report.emit(
            "sample",
            epoch=epoch,
            step=self.state.step,
            files=[str(path) for path in paths],
            prompts=[
                {"prompt": p.prompt, "seed": p.seed, "width": p.width, "height": p.height}
                for p in self.sample_prompts
            ],
            seconds=round(time.perf_counter() - started, 3),
        )

    # ----------------------------------------------------------------- plumbing

    def close(self) -> None:
        """Release the event writer (and its heartbeat thread), TensorBoard and the log of a
        trainer that was set up but will not run; :meth:`run` does this itself."""
        self.report.close()

    def _result(self, state: str, lora: Path | None = None, error: str | None = None) -> RunResult:
        epoch = self.last_epoch if state == "done" else self.state.epoch
        return RunResult(
            state=state, run_dir=self.run_dir, step=self.state.step, epoch=epoch, lora=lora, error=error
        )
