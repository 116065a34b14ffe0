"""A batch's host-side inputs, prepared one batch ahead in a background thread.

Everything a training step needs from the host is a pure function of ``(seed, epoch, batch)``
and the dataset: the stacked latents from the cache, the seeded noise and timesteps
(:func:`~kiln.engine.train.loss.batch_noise`), the shuffled captions, SDXL's size/crop ids and
the reg images' loss weights. :class:`BatchInputs` builds them (on CUDA in pinned memory, so
the copies to the GPU do not block) and, given the next batch, starts building that one in
one background thread while the current step runs. The same function builds them on either
thread, so the tensors are the same with prefetching on or off, and a resumed run (whose
batch order comes from ``Trainer.process_batches``) draws exactly what it would have.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import torch
from kiln.engine.train.config import TrainConfig
from kiln.engine.train.data import LatentCache, TrainImage, caption_rng, step_caption
from kiln.engine.train.loss import batch_noise
from kiln.engine.train.speed import Speed

# (epoch, the batch's number in the epoch's order, its images' indices)
BatchKey = tuple[int, int, tuple[int, ...]]


@dataclass(frozen=True)
class HostBatch:
    """One batch's inputs on the host.

    Attributes:
        epoch: The epoch it belongs to.
        batch_number: Its number in the epoch's order (what seeds its noise and captions).
        images: Its images.
        latents: Their cached latents stacked (float32); None when some are not cached (the
            VAE encodes them on the device, :meth:`BatchInputs.with_latents`).
        noise: Its noise (None until the latents' shape is known).
        timesteps: Its timesteps (None with ``noise``).
        captions: Its captions as this step shows them (shuffled, dropped out).
        time_ids: SDXL's size/crop ids per image; None for SD 1.5.
        weights: Per-image loss weights when reg images are in it (Kohya's prior loss); else None.
    """

    epoch: int
    batch_number: int
    images: list[TrainImage]
    latents: torch.Tensor | None
    noise: torch.Tensor | None
    timesteps: torch.Tensor | None
    captions: list[str]
    time_ids: torch.Tensor | None
    weights: torch.Tensor | None


def prefetch_executor(pin: bool) -> ThreadPoolExecutor:
    """The one background thread; when it pins memory for CUDA, on the caller's current device.

    A new thread starts on GPU 0, and pinning creates a CUDA context there: each process of a
    multi-GPU run would otherwise hold one (hundreds of MiB) on the first GPU.
    """
    if not pin:
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="kiln-prefetch")
    return ThreadPoolExecutor(
        max_workers=1,
        thread_name_prefix="kiln-prefetch",
        initializer=torch.cuda.set_device,
        initargs=(torch.cuda.current_device(),),
    )


class BatchInputs:
    """Builds each batch's :class:`HostBatch`, the next one ahead when asked.

    Args:
        config: The run's config (seed, caption options, noise offset, prior loss weight).
        images: The training set's images, indexed by a batch's indices.
        latents: The latent cache (read from the background thread: dict reads and disk loads).
        family: The model family (its ``time_ids``).
        timesteps: The noise schedule's number of training timesteps.
        speed: Its ``pin`` puts the tensors in pinned memory (CUDA: the copies to the GPU then
            overlap the GPU's work), its ``prefetch`` builds the next batch in a background
            thread (``train.prefetch``).
    """

    def __init__(
        self,
        config: TrainConfig,
        images: tuple[TrainImage, ...] | list[TrainImage],
        latents: LatentCache,
        family: Any,
        timesteps: int,
        speed: Speed,
    ) -> None:
        self.config = config
        self.images = images
        self.latents = latents
        self.family = family
        self.timesteps = timesteps
        self.pin = speed.pin
        self.prefetch = speed.prefetch
        self._executor: ThreadPoolExecutor | None = None
        self._ahead: tuple[BatchKey, Future[HostBatch]] | None = None

    def take(self, key: BatchKey, ahead: BatchKey | None = None) -> HostBatch:
        """The inputs of batch ``key`` (built ahead when it was the one asked for last time, else
        now), and start building ``ahead`` in the background."""
        waiting, self._ahead = self._ahead, None
        if waiting is not None and waiting[0] == key:
            host = waiting[1].result()
        else:
            if waiting is not None:
                waiting[1].cancel()
            host = self.prepare(*key)
        if ahead is not None and self.prefetch:
            if self._executor is None:
                self._executor = prefetch_executor(self.pin)
            self._ahead = (ahead, self._executor.submit(self.prepare, *ahead))
        return host

    def prepare(self, epoch: int, batch_number: int, batch: tuple[int, ...]) -> HostBatch:
        """Batch ``batch`` (number ``batch_number`` of ``epoch``) built on this thread."""
        train = self.config.train
        images = [self.images[index] for index in batch]
        cached = [self.latents.get(image) for image in images]
        rng = caption_rng(train.seed, epoch, batch_number)
        captions = [step_caption(image.caption, self.config.dataset, rng) for image in images]
        time_ids = self.family.time_ids([image.size for image in images], [image.bucket for image in images])
        weights = None
        if any(image.is_reg for image in images):
            weights = torch.tensor([train.prior_loss_weight if image.is_reg else 1.0 for image in images])
        host = HostBatch(
            epoch,
            batch_number,
            images,
            None,
            None,
            None,
            captions,
            self._pinned(time_ids),
            self._pinned(weights),
        )
        if any(latent is None for latent in cached):
            return host
        return self.with_latents(host, torch.stack([latent for latent in cached if latent is not None]))

    def with_latents(self, host: HostBatch, latents: torch.Tensor) -> HostBatch:
        """``host`` with its latents, and the noise and timesteps of their shape."""
        train = self.config.train
        noise, timesteps = batch_noise(
            train.seed, host.epoch, host.batch_number, latents.shape, train.noise_offset, self.timesteps
        )
        return replace(
            host,
            latents=self._pinned(latents.float()),
            noise=self._pinned(noise),
            timesteps=self._pinned(timesteps),
        )

    def close(self) -> None:
        """Stop the background thread (a batch it is building is dropped)."""
        self._ahead = None
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def _pinned(self, tensor: torch.Tensor | None) -> torch.Tensor | None:
        if tensor is None or not self.pin or tensor.device.type != "cpu":
            return tensor
        return tensor.pin_memory()
