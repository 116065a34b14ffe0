"""What the CLI and the TUI call: the TEC of a checkpoint, of a LoRA, and of every epoch of a run.

All three load text encoders only (``kiln.engine.tec.loading``), probe the same words in both
encoders (``kiln.engine.tec.vocab``, ``kiln.engine.tec.embed``) and report the measures
(``kiln.engine.tec.measures``). Progress goes to an optional ``progress(stage, done, total)``
callback, called after every batch of words; it may raise to cancel (a TUI worker raises
when it is cancelled).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from kiln.engine.errors import ModelError, UsageError
from kiln.engine.models.safetensors_file import read_safetensors
from kiln.engine.tec.embed import DEFAULT_BATCH, Position, word_embeddings
from kiln.engine.tec.loading import TextEncoder, load_text_encoder, require_same_tokenizer
from kiln.engine.tec.lora import merged_text_encoder, text_encoder_lora_layers
from kiln.engine.tec.measures import TecReport, layer_distances, tec_report
from kiln.engine.tec.vocab import BUILTIN, ProbeSet, full_vocab_probe_set, probe_set
from torch import nn

ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ProbeOptions:
    """How to probe: which words, which state, how many at once, where.

    Attributes:
        words: The probe words; None for the built-in list of ~2,000 concept words.
        words_source: What to call ``words`` in reports (the file they came from).
        full_vocab: Probe every token of the vocabulary instead (49,405 on SD 1.5).
        position: ``word`` (the word's own state, default) or ``eos`` (the state after it).
        batch_size: Words per forward pass.
        device: ``cpu`` or ``cuda``.
    """

    words: tuple[str, ...] | None = None
    words_source: str = BUILTIN
    full_vocab: bool = False
    position: Position = "word"
    batch_size: int = DEFAULT_BATCH
    device: str = "cpu"


@dataclass(frozen=True)
class EpochTec:
    """The TEC one saved LoRA of a run adds to its base.

    Attributes:
        epoch: The epoch (``ss_epoch``, else ``-eNNN`` in the name), None if neither says.
        path: The LoRA file.
        text_encoder: Whether the file holds text-encoder weights (False: U-Net only, no TEC).
        report: The measures, base vs base + this LoRA.
    """

    epoch: int | None
    path: Path
    text_encoder: bool
    report: TecReport

    def to_json(self, top: int | None = 20) -> dict:
        """One entry of ``kiln tec --run --json``: the headline figures and the top words."""
        data = self.report.to_json(top)
        return {
            "epoch": self.epoch,
            "file": str(self.path),
            "text_encoder": self.text_encoder,
            **{
                key: data[key]
                for key in ("score", "confusion_rate", "words", "reading", "confused", "drifted")
            },
        }


def checkpoint_tec_report(
    candidate: Path | str,
    reference: Path | str,
    options: ProbeOptions = ProbeOptions(),
    allow_pickle: bool = False,
    progress: ProgressFn | None = None,
) -> TecReport:
    """The TEC of a checkpoint's text encoder against a reference checkpoint's (vanilla SD 1.5).

    Args:
        candidate: The checkpoint to measure (diffusers folder or single file).
        reference: The checkpoint it is compared with; must share the candidate's tokenizer.
        options: Probe words, position, batch size, device.
        allow_pickle: Accept pickled checkpoints.
        progress: ``progress(stage, done, total)``, stages ``reference`` and ``candidate``.

    Raises:
        ModelError: A checkpoint is missing or unreadable, or the tokenizers differ.
        UsageError: No probe word is a single token, or the device is not available.
    """
    device = _device(options.device)
    ref = load_text_encoder(reference, allow_pickle)
    cand = load_text_encoder(candidate, allow_pickle)
    require_same_tokenizer(cand, ref)
    probe = _probe(ref, options)
    reference_vectors = _embed(ref.model, ref, probe, options, device, "reference", progress)
    candidate_vectors = _embed(cand.model, cand, probe, options, device, "candidate", progress)
    return tec_report(
        probe.words,
        candidate_vectors,
        reference_vectors,
        layers=layer_distances(cand.model, ref.model),
        position_ids=cand.position_ids,
        candidate=str(cand.path),
        reference=str(ref.path),
        position=options.position,
        probe=probe.source,
        notes=_notes(probe, ref),
    )


def lora_tec_report(
    lora: Path | str,
    base: Path | str,
    scale: float = 1.0,
    options: ProbeOptions = ProbeOptions(),
    allow_pickle: bool = False,
    progress: ProgressFn | None = None,
) -> TecReport:
    """The TEC a LoRA adds: the base's text encoder against the base with the LoRA merged at ``scale``.

    Args:
        lora: A Kohya-format LoRA ``.safetensors``.
        base: The model it was trained on (diffusers folder or single file).
        scale: The LoRA weight it is used at (1.0 as trained; 0 adds nothing).
        options: Probe words, position, batch size, device.
        allow_pickle: Accept a pickled base checkpoint.
        progress: ``progress(stage, done, total)``, stages ``reference`` and ``candidate``.

    Raises:
        ModelError: The base or the LoRA is missing or unreadable, or the LoRA does not fit the base.
    """
    device = _device(options.device)
    if not Path(lora).is_file():
        raise ModelError(f"{lora}: no such LoRA file")
    base_te = load_text_encoder(base, allow_pickle)
    probe = _probe(base_te, options)
    reference_vectors = _embed(base_te.model, base_te, probe, options, device, "reference", progress)
    return _lora_report(
        Path(lora), base_te, probe, reference_vectors, scale, options, device, progress, "candidate"
    )[1]


def loras_tec_reports(
    files: list[Path],
    base: Path | str,
    scale: float = 1.0,
    options: ProbeOptions = ProbeOptions(),
    allow_pickle: bool = False,
    progress: ProgressFn | None = None,
) -> list[tuple[bool, TecReport]]:
    """The TEC each LoRA of ``files`` adds to ``base``: ``(holds text-encoder weights, report)``
    per file, in order. The base's embeddings are computed once and shared by every file; a
    LoRA without text-encoder weights gets a zero report.

    Args:
        progress: ``progress(stage, done, total)``: stage ``reference``, then each file's name
            (a U-Net-only file reports itself done at once).
    """
    device = _device(options.device)
    base_te = load_text_encoder(base, allow_pickle)
    probe = _probe(base_te, options)
    reference_vectors = _embed(base_te.model, base_te, probe, options, device, "reference", progress)
    return [
        _lora_report(path, base_te, probe, reference_vectors, scale, options, device, progress, path.name)
        for path in files
    ]


def _lora_report(
    path: Path,
    base_te: TextEncoder,
    probe: ProbeSet,
    reference_vectors: torch.Tensor,
    scale: float,
    options: ProbeOptions,
    device: torch.device,
    progress: ProgressFn | None,
    stage: str,
) -> tuple[bool, TecReport]:
    if not path.is_file():
        raise ModelError(f"{path}: no such LoRA file")
    try:
        tensors, _ = read_safetensors(path)
    except Exception as exc:  # safetensors raises its own error types for damaged headers
        raise ModelError(f"{path}: not a readable LoRA .safetensors file ({exc})") from None
    layers = text_encoder_lora_layers(tensors, base_te.model, path)
    label = f"{base_te.path} + {path.name} x {scale:g}"
    common: dict[str, Any] = {
        "candidate": label,
        "reference": str(base_te.path),
        "position": options.position,
        "probe": probe.source,
    }
    if not layers:
        # A U-Net-only LoRA leaves the text encoder exactly as it was: nothing to encode.
        if progress is not None:
            progress(stage, len(probe), len(probe))
        notes = (
            *_notes(probe, base_te),
            f"{path.name} holds no text-encoder weights (U-Net only): it adds no TEC",
        )
        report = tec_report(probe.words, reference_vectors, reference_vectors, notes=notes, **common)
        return False, report
    merged = merged_text_encoder(base_te.model, layers, scale)
    candidate_vectors = _embed(merged, base_te, probe, options, device, stage, progress)
    report = tec_report(
        probe.words,
        candidate_vectors,
        reference_vectors,
        layers=layer_distances(merged, base_te.model),
        notes=_notes(probe, base_te),
        **common,
    )
    return True, report


def _probe(encoder: TextEncoder, options: ProbeOptions) -> ProbeSet:
    if options.full_vocab:
        return full_vocab_probe_set(encoder.tokenizer)
    return probe_set(encoder.tokenizer, options.words, options.words_source)


def _embed(
    model: nn.Module,
    encoder: TextEncoder,
    probe: ProbeSet,
    options: ProbeOptions,
    device: torch.device,
    stage: str,
    progress: ProgressFn | None,
) -> torch.Tensor:
    tokenizer = encoder.tokenizer
    model.to(device)
    try:
        return word_embeddings(
            model,
            probe.token_ids,
            tokenizer.bos_token_id,
            tokenizer.eos_token_id,
            position=options.position,
            batch_size=options.batch_size,
            progress=None if progress is None else (lambda done, total: progress(stage, done, total)),
        )
    finally:
        model.to("cpu")


def _notes(probe: ProbeSet, encoder: TextEncoder) -> tuple[str, ...]:
    if probe.skipped:
        return (
            f"{probe.skipped} {probe.source} word(s) skipped: not a single token in "
            f"{encoder.tokenizer_origin}",
        )
    return ()


def _device(name: str) -> torch.device:
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError("--device cuda: torch sees no CUDA device here; use --device cpu")
        return torch.device(name)
    raise UsageError(f"--device {name}: use cpu or cuda")
