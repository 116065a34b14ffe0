"""Text-encoder outputs cached per caption, for runs whose text encoders do not train.

A frozen encoder turns the same caption into the same conditioning every step, so encoding it
once is exact (Kohya's ``--cache_text_encoder_outputs``). On SDXL the two encoders are ~1.6 GB
of weights: when every caption a run can see is known up front (no caption shuffle, no caption
dropout), all of them are encoded before the first step and the encoders leave the GPU until a
sample round needs them. With shuffling or dropout the cache still fills as captions appear.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import torch
from kiln.engine.models.conditioning import TextConditioning, stack
from kiln.engine.train.config import TrainConfig

if TYPE_CHECKING:
    from kiln.engine.train.data import TrainImage
    from kiln.engine.train.models import TrainModels


class TextCache:
    """Conditioning rows by caption text, kept on the CPU.

    Attributes:
        rows: ``caption -> TextConditioning`` of one row each.
        offloaded: Whether the text encoders were moved off the training device.
    """

    def __init__(self) -> None:
        self.rows: dict[str, TextConditioning] = {}
        self.offloaded = False

    def fill(
        self, captions: Iterable[str], encode: Callable[[list[str]], TextConditioning], batch: int = 16
    ) -> None:
        """Encode every caption not cached yet, ``batch`` at a time."""
        missing = sorted({caption for caption in captions if caption not in self.rows})
        for start in range(0, len(missing), batch):
            chunk = missing[start : start + batch]
            with torch.no_grad():
                encoded = encode(chunk).to("cpu")
            for index, caption in enumerate(chunk):
                self.rows[caption] = encoded.rows(index)

    def lookup(
        self, captions: list[str], encode: Callable[[list[str]], TextConditioning], device: torch.device
    ) -> TextConditioning:
        """The batch's conditioning on ``device`` (copied to a GPU from pinned memory, without
        blocking), encoding the captions seen for the first time."""
        from kiln.engine.train.speed import to_device

        self.fill(captions, encode)
        batch = stack([self.rows[caption] for caption in captions])
        pooled = None if batch.pooled is None else to_device(batch.pooled, device, pin=True)
        return TextConditioning(to_device(batch.hidden, device, pin=True), pooled)


def text_cache_for(
    config: TrainConfig,
    models: TrainModels,
    images: Iterable[TrainImage],
    device: torch.device,
    log: logging.Logger,
) -> TextCache | None:
    """The run's text cache: None when an encoder trains (or the config turns caching off).

    When the captions a run sees are fixed (no shuffle, no dropout) every one is encoded now
    and the frozen encoders move to the CPU (off a GPU); otherwise the cache fills as
    captions appear.
    """
    if not config.train.cache_text_encoder_outputs or models.train_te:
        return None
    cache = TextCache()
    dataset = config.dataset
    if dataset.shuffle_caption or dataset.caption_dropout_rate > 0:
        return cache
    started = time.perf_counter()
    clip_skip = config.train.clip_skip
    cache.fill(
        [image.caption for image in images],
        lambda texts: models.encode_text(models.tokenize(texts, device), clip_skip),
    )
    if device.type != "cpu":
        models.move_text_encoders("cpu")
        cache.offloaded = True
    log.info(
        "text-encoder outputs: %d caption(s) encoded in %.1fs%s",
        len(cache.rows),
        time.perf_counter() - started,
        "; text encoders moved to the CPU" if cache.offloaded else "",
    )
    return cache
