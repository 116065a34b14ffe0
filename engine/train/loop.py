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
import hashlib
import json
import logging
import math
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from kiln.engine import __version__
from kiln.engine.errors import KilnError, RunError
from kiln.engine.models.family import detect_family
from kiln.engine.models.loading import model_fingerprint, model_source
from kiln.engine.train import checkpoint
from kiln.engine.train.config import MIXED_PRECISION, TrainConfig
from kiln.engine.train.data import (
    LatentCache,
    TrainImage,
    TrainingSet,
    caption_rng,
    disk_cache_folder,
    epoch_batches,
    load_pixels,
    split_validation,
    step_caption,
    training_set,
)
from kiln.engine.train.lora_io import DTYPES, kohya_state_dict, lora_metadata, write_lora
from kiln.engine.train.models import TrainModels, load_models
from kiln.engine.train.outputs import (
    FINAL_EVENTS,
    LOG_FILE,
    STATE_FOLDER,
    TENSORBOARD_FOLDER,
    EventSink,
    NoEvents,
    lora_path,
    samples_dir,
)
from kiln.engine.train.samples import SamplePrompt, parse_prompt, render_samples, sample_scheduler
from kiln.engine.train.schedule import lr_factor

# The validation loss is measured at these timesteps (of 1000) with fixed noise, so it
# moves only with the weights: comparable between epochs and between a sweep's runs.
VALIDATION_TIMESTEPS = (200, 400, 600, 800)
WEIGHT_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

Listener = Callable[[dict[str, Any]], None]


class TrainingDiverged(RunError):
    """The loss stopped being a finite number."""


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
        self.listeners = list(listeners or [])
        self.save_hooks: list[Callable[[int], None]] = []
        self.cpu = cpu
        self.resume = resume
        self.force = force
        self.state = TrainState()
        self.stop_requested = threading.Event()
        self.ready = False
        self.ended = False
        self.events: EventSink = events or NoEvents()
        self.log = logging.getLogger(f"kiln.train.{id(self)}")
        self.started_at = time.time()
        self._step_times: deque[float] = deque(maxlen=20)
        self.lora_files: list[Path] = []
        self.last_epoch = 0
        self.tensorboard: Any = None
        self._log_handler: logging.Handler | None = None

    # ----------------------------------------------------------------- public API

    def request_stop(self) -> None:
        """Stop after the current optimizer step, save a LoRA and end with ``cancelled``."""
        self.stop_requested.set()

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener`` with each event after it is sent (on every process)."""
        self.listeners.append(listener)

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
            self._emit(
                "cancelled", step=self.state.step, epoch=self.state.epoch, lora=None, reason="interrupted"
            )
            return self._result("cancelled")
        except Exception as exc:
            message = str(exc) if isinstance(exc, KilnError) else f"{type(exc).__name__}: {exc}"
            self.log.error("training failed: %s\n%s", message, traceback.format_exc())
            self._emit("failed", error=message, step=self.state.step, epoch=self.state.epoch)
            return self._result("failed", error=message)
        finally:
            self._close()

    def emit_aborted(self) -> None:
        """End the events with ``cancelled`` when the process must exit before the loop can
        (a stuck main thread after a second signal); nothing when the run already ended."""
        if not self.ended:
            self._emit("cancelled", step=self.state.step, epoch=self.state.epoch, lora=None, reason="aborted")
            self.events.close()

    def setup(self) -> None:
        """Load everything (and the resume state) and send the ``start`` or ``resumed`` event;
        separate from :meth:`run` so callers (and tests) can inspect or adjust the trainer
        before the first step."""
        config = self.config
        self.accelerator = _accelerator(config, self.cpu)
        self.device = self.accelerator.device
        self.is_main = self.accelerator.is_main_process
        self.processes = self.accelerator.num_processes
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._open_log()
        else:
            self.events = NoEvents()
        if config.train.precision == "fp16" and self.device.type == "cpu":
            raise RunError(
                'train.precision = "fp16" needs a GPU: accelerate has no fp16 autocast on a CPU; '
                'use "bf16" or "fp32" on this machine'
            )
        self.weight_dtype = WEIGHT_DTYPES[config.train.precision]
        torch.manual_seed(config.train.seed)

        self.data: TrainingSet = training_set(config.dataset)
        for warning in self.data.warnings:
            self._warn(warning)
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

        self.source = model_source(config.model.base, config.model.allow_pickle)
        self.log.info("loading %s (%s)", self.source.path, self.source.kind)
        _quiet_transformers()
        family = detect_family(self.source.path)
        self.models: TrainModels = load_models(config, family, self.device, self.weight_dtype, self.log)
        self.alphas_cumprod = self.models.noise_scheduler.alphas_cumprod.to(self.device)

        from kiln.engine.plan.steps import plan_steps

        train = config.train
        self.plan = plan_steps(
            self.data.bucket_items(), train.batch_size, train.epochs, train.grad_accumulation, self.processes
        )
        self.total_steps = (
            min(self.plan.total_steps, train.max_steps) if train.max_steps else self.plan.total_steps
        )
        self._prepare_optimizer()
        self.sample_prompts: list[SamplePrompt] = [
            parse_prompt(line, index, config.dataset.resolution, train.seed)
            for index, line in enumerate(config.sample.prompts)
        ]
        self.latents = LatentCache(
            disk_cache_folder(self.data.root, model_fingerprint(self.source))
            if train.cache_latents_to_disk
            else None
        )
        if train.cache_latents:
            self._cache_latents()
        self._open_tensorboard()
        resumed_from = self._load_resume_state() if self.resume else None
        self.ready = True
        self._emit(
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
                {"resolution": list(b.resolution), "items": b.items, "batches": b.batches}
                for b in self.plan.buckets
            ],
            unet_modules=len(self.models.unet_targets),
            text_encoder_modules=len(self.models.te_targets),
            processes=self.processes,
            version=__version__,
        )

    def resume_state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this run exactly: adapters, optimizer, LR schedule, state.

        Data order, caption shuffles, noise and timesteps derive from ``(seed, epoch, batch)``,
        so no RNG state is needed beyond what is here.
        """
        return {
            "state": self.state.to_dict(),
            **self.models.adapters(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.lr_scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }

    def load_resume_state_dict(self, data: dict[str, Any]) -> None:
        """Restore what :meth:`resume_state_dict` returned (call after :meth:`setup`)."""
        self.state = TrainState.from_dict(data["state"])
        self.models.load_adapters(data)
        self.optimizer.load_state_dict(data["optimizer"])
        self.lr_scheduler.load_state_dict(data["scheduler"])
        torch.set_rng_state(data["torch_rng"])

    # ----------------------------------------------------------------- setup

    def _prepare_optimizer(self) -> None:
        train, models = self.config.train, self.models
        groups = [{"params": models.unet_params, "lr": train.unet_lr}]
        if models.te_params:
            groups.append({"params": models.te_params, "lr": self.config.text_encoder_lr})
        if train.optimizer == "adamw8bit":
            import bitsandbytes

            optimizer = bitsandbytes.optim.AdamW8bit(groups, weight_decay=train.weight_decay)
        else:
            optimizer = _adamw(groups, train.weight_decay, self.device)
        total, warmup, kind = self.total_steps, train.lr_warmup_steps, train.scheduler
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, total, warmup, kind)
        )
        # The LR scheduler stays outside accelerate: it steps once per optimizer step on every
        # process, which is what the schedule over total_steps assumes.
        if models.train_te:
            models.unet_train, models.te_train, self.optimizer = self.accelerator.prepare(
                models.unet, models.text_encoder, optimizer
            )
        else:
            models.unet_train, self.optimizer = self.accelerator.prepare(models.unet, optimizer)

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
        config = self.config
        epochs = config.train.epochs
        if self.state.step == 0 and self.state.batch_in_epoch == 0 and self.state.epoch == 1:
            self._maybe_validate(0)
            self._maybe_sample(0)
            self._barrier()
        every = config.save.state_every_n_steps
        ga = config.train.grad_accumulation
        while self.state.epoch <= epochs and self.state.step < self.total_steps:
            epoch = self.state.epoch
            batches = self.process_batches(epoch)
            while self.state.batch_in_epoch < len(batches) and self.state.step < self.total_steps:
                # Gradient accumulation is done by hand, not with accelerator.accumulate: an
                # optimizer step covers the batches of one window [index, window_end), and the
                # windows are fixed by the batch's place in the epoch, so a run resumed in the
                # middle of an epoch continues exactly as an uninterrupted one would.
                index = self.state.batch_in_epoch
                started = time.perf_counter()
                window_end = min(len(batches), (index // ga + 1) * ga)
                loss_total = 0.0
                for micro in range(index, window_end):
                    # Gradients are averaged across processes once per optimizer step, not per batch.
                    with self._no_sync(micro < window_end - 1):
                        loss = self.batch_loss(epoch, self._global_batch(micro), batches[micro])
                        self.accelerator.backward(loss / (window_end - index))
                    loss_total += loss.detach().item()
                self._optimizer_step()
                self.state.batch_in_epoch = window_end
                self.state.step += 1
                mean_loss = loss_total / (window_end - index)
                self.state.losses.append(mean_loss)
                self._after_step(mean_loss, time.perf_counter() - started)
                if self.state.step >= self.total_steps:
                    break  # the run is over: finishing it is only its last saves
                if every and self.state.step % every == 0 and self.state.batch_in_epoch < len(batches):
                    self.save_state()  # (an epoch's last step is saved by _end_epoch)
                if self._stop_agreed():
                    return self._stop()
            finished_epoch = self.state.batch_in_epoch >= len(batches)
            self._end_epoch(
                epoch, final=not finished_epoch or epoch == epochs or self.state.step >= self.total_steps
            )
        last = self.lora_files[-1] if self.lora_files else None
        self._emit(
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
        if self.models.train_te:
            stack.enter_context(self.accelerator.no_sync(self.models.te_train))
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

    def batch_loss(self, epoch: int, batch_number: int, batch: tuple[int, ...]) -> torch.Tensor:
        """The loss of one batch (min-SNR weighted when asked); raises on a non-finite loss."""
        config = self.config
        images = [self.data.images[i] for i in batch]
        latents = torch.stack([self._latent(image) for image in images]).to(self.device, torch.float32)
        rng = caption_rng(config.train.seed, epoch, batch_number)
        captions = [step_caption(image.caption, config.dataset, rng) for image in images]
        generator = torch.Generator("cpu").manual_seed(_batch_seed(config.train.seed, epoch, batch_number))
        noise = torch.randn(latents.shape, generator=generator)
        if config.train.noise_offset:
            noise += config.train.noise_offset * torch.randn((*latents.shape[:2], 1, 1), generator=generator)
        timesteps = torch.randint(
            0, self.models.noise_scheduler.config.num_train_timesteps, (len(images),), generator=generator
        )
        noise, timesteps = noise.to(self.device), timesteps.to(self.device)
        loss = self._per_sample_loss(latents, noise, timesteps, captions)
        if config.train.min_snr_gamma:
            loss = loss * self._min_snr_weights(timesteps)
        loss = loss.mean()
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"loss became {loss.item()} at step {self.state.step + 1} (epoch {epoch}); "
                "lower train.unet_lr, "
                'or use train.precision = "bf16" or "fp32"'
            )
        return loss

    def _per_sample_loss(
        self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, captions: list[str]
    ) -> torch.Tensor:
        """MSE between the U-Net's prediction and its target, one value per sample.

        The one forward pass both training and the validation loss use: noise the latents at
        ``timesteps``, encode the captions, predict, and compare with the noise (epsilon) or
        the velocity (v-prediction).
        """
        noisy = self.models.noise_scheduler.add_noise(latents, noise, timesteps)
        ids = self.models.tokenizer(
            captions,
            padding="max_length",
            max_length=self.models.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(self.device)
        with self.accelerator.autocast():
            hidden = self._encode_text(ids)
            prediction = self.models.unet_train(noisy.to(self.weight_dtype), timesteps, hidden).sample
        target = (
            noise
            if self.models.prediction_type == "epsilon"
            else self.models.noise_scheduler.get_velocity(latents, noise, timesteps)
        )
        return F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))

    def _latent(self, image: TrainImage) -> torch.Tensor:
        latent = self.latents.get(image)
        if latent is None:
            latent = self._encode(image)
            if self.config.train.cache_latents:
                self.latents.put(image, latent)
        return latent

    def _encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        clip_skip = self.config.train.clip_skip
        with torch.set_grad_enabled(self.models.train_te and torch.is_grad_enabled()):
            output = self.models.te_train(ids, output_hidden_states=clip_skip > 1)
            if clip_skip == 1:
                return output.last_hidden_state
            inner = getattr(self.models.text_encoder, "text_model", self.models.text_encoder)
            return inner.final_layer_norm(output.hidden_states[-clip_skip])

    def _min_snr_weights(self, timesteps: torch.Tensor) -> torch.Tensor:
        alpha = self.alphas_cumprod[timesteps]
        snr = alpha / (1 - alpha)
        clipped = torch.clamp(snr, max=self.config.train.min_snr_gamma)
        return clipped / (snr + 1 if self.models.prediction_type == "v_prediction" else snr)

    def _optimizer_step(self) -> None:
        if self.config.train.max_grad_norm:
            norm = self.accelerator.clip_grad_norm_(self.models.trainable, self.config.train.max_grad_norm)
            # fp16's grad scaler skips overflowing steps by itself; elsewhere a non-finite
            # gradient would poison the adapters, so stop before the optimizer applies it.
            if self.accelerator.scaler is None and not torch.isfinite(norm):
                raise TrainingDiverged(
                    f"gradients became {float(norm)} at step {self.state.step + 1} "
                    f"(epoch {self.state.epoch}); "
                    'lower train.unet_lr, or use train.precision = "fp32"'
                )
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def _after_step(self, loss: float, seconds: float) -> None:
        self._step_times.append(seconds)
        it_s = len(self._step_times) / sum(self._step_times) if sum(self._step_times) > 0 else None
        remaining = self.total_steps - self.state.step
        lrs = self.lr_scheduler.get_last_lr()
        event = {
            "step": self.state.step,
            "total": self.total_steps,
            "epoch": self.state.epoch,
            "loss": round(loss, 6),
            "lr": lrs[0],
            "it_s": round(it_s, 4) if it_s else None,
            "eta_s": round(remaining / it_s, 1) if it_s else None,
        }
        if len(lrs) > 1:
            event["lr_te"] = lrs[1]
        self._emit("step", **event)
        if self.tensorboard is not None:
            self.tensorboard.add_scalar("loss", loss, self.state.step)
            self.tensorboard.add_scalar("lr/unet", lrs[0], self.state.step)
            if len(lrs) > 1:
                self.tensorboard.add_scalar("lr/text_encoder", lrs[1], self.state.step)

    def _end_epoch(self, epoch: int, final: bool) -> None:
        losses = self.state.losses
        mean = sum(losses) / len(losses) if losses else None
        self._emit(
            "epoch",
            epoch=epoch,
            epochs=self.config.train.epochs,
            step=self.state.step,
            loss=round(mean, 6) if mean is not None else None,
        )
        self.log.info("epoch %d done at step %d, mean loss %s", epoch, self.state.step, mean)
        if self.tensorboard is not None and mean is not None:
            self.tensorboard.add_scalar("loss/epoch", mean, epoch)
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
        self._emit(
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
            manifest = {
                "epoch": self.state.epoch,
                "batch_in_epoch": self.state.batch_in_epoch,
                "total": self.total_steps,
                "processes": self.processes,
                "dataset": checkpoint.dataset_fingerprint(self.data.images),
                "config": self.config.to_dict(),
                "started_at": self.started_at,
                "kiln_version": __version__,
            }
            path = checkpoint.write_save(
                self.run_dir / STATE_FOLDER,
                self.state.step,
                self.resume_state_dict(),
                manifest,
                after_payload=self._after_save_payload,
            )
            self.log.info("resume state saved: %s (%.1fs)", path.name, time.perf_counter() - started)
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
            self._warn,
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
        """Write ``lora/<name>-eNNN.safetensors`` (main process) and emit ``checkpoint``."""
        if not self.is_main:
            return None
        models, config = self.models, self.config
        dtype = DTYPES[config.save.precision]
        tensors = kohya_state_dict(
            self.accelerator.unwrap_model(models.unet_train), models.unet_targets, dtype
        )
        if models.train_te:
            tensors.update(
                kohya_state_dict(self.accelerator.unwrap_model(models.te_train), models.te_targets, dtype)
            )
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
            optimizer=self.optimizer,
            prediction_type=models.prediction_type,
        )
        path = write_lora(lora_path(self.run_dir, config.output.name, epoch), tensors, metadata)
        self.lora_files.append(path)
        self._emit("checkpoint", epoch=epoch, step=self.state.step, path=str(path))
        return path

    @torch.no_grad()
    def validation_losses(self) -> dict[int, float]:
        """The plain MSE loss on the held-out images at each of :data:`VALIDATION_TIMESTEPS`.

        Noise is fixed per image and timestep (seeded from the run's seed and the image's
        path), captions are used as written, and min-SNR weighting is left out, so the
        figure depends only on the weights.
        """
        limit = self.models.noise_scheduler.config.num_train_timesteps - 1
        timesteps = [min(t, limit) for t in VALIDATION_TIMESTEPS]
        totals = dict.fromkeys(VALIDATION_TIMESTEPS, 0.0)
        for image in self.validation_images:
            latent = self._latent(image).to(self.device, torch.float32)
            seed = _validation_seed(self.config.train.seed, image.rel_path)
            generator = torch.Generator("cpu").manual_seed(seed)
            noise = torch.randn((len(timesteps), *latent.shape), generator=generator).to(self.device)
            latents = latent.unsqueeze(0).expand(len(timesteps), *latent.shape)
            steps = torch.tensor(timesteps, device=self.device, dtype=torch.long)
            losses = self._per_sample_loss(latents, noise, steps, [image.caption] * len(timesteps))
            for t, loss in zip(VALIDATION_TIMESTEPS, losses.tolist(), strict=True):
                totals[t] += loss
        count = max(1, len(self.validation_images))
        return {t: total / count for t, total in totals.items()}

    def _maybe_validate(self, epoch: int) -> None:
        if not self.validation_images:
            return
        started = time.perf_counter()
        losses = self.validation_losses()
        mean = sum(losses.values()) / len(losses)
        self._emit(
            "validation",
            epoch=epoch,
            step=self.state.step,
            loss=round(mean, 6),
            timesteps={str(t): round(value, 6) for t, value in losses.items()},
            images=len(self.validation_images),
            seconds=round(time.perf_counter() - started, 3),
        )
        if self.tensorboard is not None:
            self.tensorboard.add_scalar("loss/validation", mean, self.state.step)

    def _maybe_sample(self, epoch: int) -> None:
        if not self.sample_prompts or not self.is_main:
            return
        started = time.perf_counter()
        scheduler = sample_scheduler(self.config.sample.sampler, self.models.noise_scheduler.config)
        self.models.unet.eval()
        self.models.text_encoder.eval()
        try:
            with self.accelerator.autocast():
                paths = render_samples(
                    self.models.pipe,
                    self.sample_prompts,
                    samples_dir(self.run_dir, epoch),
                    scheduler,
                    self.config.train.clip_skip,
                )
        finally:
            self.models.unet.train()
            self.models.text_encoder.train(self.models.train_te)
        self._emit(
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

    def _emit(self, type: str, **fields: Any) -> None:
        if type in FINAL_EVENTS:
            self.ended = True
        event = self.events.emit(type, **fields)
        if type in ("warning", "failed"):
            self.log.warning("%s: %s", type, fields.get("message") or fields.get("error"))
        elif type != "step":
            self.log.info("%s %s", type, json.dumps(fields, default=str)[:500])
        for listener in self.listeners:
            listener(event)

    def _warn(self, message: str) -> None:
        self._emit("warning", message=message)

    def _open_log(self) -> None:
        handler = logging.FileHandler(self.run_dir / LOG_FILE, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        self.log.addHandler(handler)
        self.log.setLevel(logging.INFO)
        self.log.propagate = False
        self._log_handler = handler

    def _open_tensorboard(self) -> None:
        if not self.is_main:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self.log.info("tensorboard is not installed: no TensorBoard scalars")
            return
        self.tensorboard = SummaryWriter(str(self.run_dir / TENSORBOARD_FOLDER))

    def close(self) -> None:
        """Release the event writer (and its heartbeat thread), TensorBoard and the log of a
        trainer that was set up but will not run; :meth:`run` does this itself."""
        self._close()

    def _close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
        self.events.close()
        if self._log_handler is not None:
            self.log.removeHandler(self._log_handler)
            self._log_handler.close()

    def _result(self, state: str, lora: Path | None = None, error: str | None = None) -> RunResult:
        epoch = self.last_epoch if state == "done" else self.state.epoch
        return RunResult(
            state=state, run_dir=self.run_dir, step=self.state.step, epoch=epoch, lora=lora, error=error
        )


def _adamw(groups: list[dict[str, Any]], weight_decay: float, device: torch.device) -> torch.optim.Optimizer:
    """torch's AdamW, fused into one kernel per step where the device has it.

    A LoRA has hundreds of small tensors; the default per-tensor loop spends more time in
    Python and kernel launches than in arithmetic. The maths is the same AdamW.
    """
    try:
        return torch.optim.AdamW(groups, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, weight_decay=weight_decay, foreach=device.type != "cpu" or None)


def _batch_seed(seed: int, epoch: int, batch: int) -> int:
    digest = hashlib.sha256(f"kiln-noise:{seed}:{epoch}:{batch}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def _validation_seed(seed: int, rel_path: str) -> int:
    digest = hashlib.sha256(f"kiln-validation-noise:{seed}:{rel_path}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def _quiet_transformers() -> None:
    """transformers and diffusers log progress bars and torchvision notices a run log does not need."""
    try:
        from diffusers.utils import logging as diffusers_logging
        from transformers.utils import logging as transformers_logging

        transformers_logging.set_verbosity_error()
        transformers_logging.disable_progress_bar()
        diffusers_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass


def _accelerator(config: TrainConfig, cpu: bool) -> Any:
    """accelerate's Accelerator for this run (one per process; its state is reset between runs)."""
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.state import AcceleratorState

    if AcceleratorState._shared_state and AcceleratorState().num_processes == 1:
        # accelerate keeps one state per process; a second run in the same process (tests,
        # a sweep) may ask for another precision.
        AcceleratorState._reset_state()
    # With clip_skip the text encoder's last layers get no gradient; DDP must be told.
    unused = config.network.train_text_encoder and config.train.clip_skip > 1
    return Accelerator(
        mixed_precision=MIXED_PRECISION[config.train.precision],
        cpu=cpu,
        log_with=None,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=unused)],
    )
