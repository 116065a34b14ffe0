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
from kiln.engine.models.family import SD15, SDXL, ModelFamily, family_of_lora_keys
from kiln.engine.models.safetensors_file import read_safetensors
from kiln.engine.tec.embed import DEFAULT_BATCH, Position, word_embeddings
from kiln.engine.tec.loading import TextEncoder, load_text_encoders, require_same_tokenizer
from kiln.engine.tec.lora import (
    is_lycoris,
    merged_lycoris_text_encoder,
    merged_text_encoder,
    text_encoder_lora_layers,
)
from kiln.engine.tec.measures import TecReport, combined_report, layer_distances, tec_report
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


class ReferenceProbe:
    """A reference checkpoint's text encoder(s), loaded and probed once, to measure many
    checkpoints of its family against (a catalog of bases; the epochs of a fine-tune).

    Raises (on construction):
        ModelError: The reference is missing or unreadable.
        UsageError: No probe word is a single token, or the device is not available.
    """

    def __init__(
        self,
        reference: Path | str,
        options: ProbeOptions = ProbeOptions(),
        allow_pickle: bool = False,
        progress: ProgressFn | None = None,
    ) -> None:
        self.path = Path(reference)
        self.options = options
        self.allow_pickle = allow_pickle
        self.device = _device(options.device)
        self.encoders = load_text_encoders(reference, allow_pickle)
        self.family = _family(self.encoders)
        self.progress = progress
        # Probed on the first measurement, after that candidate has loaded: a missing
        # candidate is reported before a probe-word problem, as for one comparison.
        self.probes: list[ProbeSet] = []
        self.vectors: list[torch.Tensor] = []

    def _probed(self) -> None:
        if not self.probes:
            self.probes = [_probe(ref, self.options) for ref in self.encoders]
            self.vectors = [
                _embed(ref.model, ref, probe, self.options, self.device, "reference", self.progress)
                for ref, probe in zip(self.encoders, self.probes, strict=True)
            ]

    def measure(self, candidate: Path | str, progress: ProgressFn | None = None) -> TecReport:
        """The TEC of ``candidate``'s text encoder(s) against this reference's.

        Raises:
            ModelError: The candidate is unreadable, of another family, or uses another tokenizer.
        """
        cands = load_text_encoders(candidate, self.allow_pickle)
        if len(cands) != len(self.encoders):
            raise ModelError(
                f"{candidate}: {_family(cands).title} ({len(cands)} text encoder(s)), but the reference "
                f"{self.path} is {self.family.title}; compare checkpoints of one family"
            )
        for ref, cand in zip(self.encoders, cands, strict=True):
            require_same_tokenizer(cand, ref)
        self._probed()
        parts = []
        for slot, ref, cand, probe, reference_vectors in zip(
            self.family.text_encoders, self.encoders, cands, self.probes, self.vectors, strict=True
        ):
            candidate_vectors = _embed(
                cand.model, cand, probe, self.options, self.device, "candidate", progress
            )
            report = tec_report(
                probe.words,
                candidate_vectors,
                reference_vectors,
                layers=layer_distances(cand.model, ref.model),
                position_ids=cand.position_ids,
                candidate=str(cand.path),
                reference=str(ref.path),
                position=self.options.position,
                probe=probe.source,
                notes=_notes(probe, ref),
            )
            parts.append((slot.label, report))
        return combined_report(parts)


def checkpoint_tec_report(
    candidate: Path | str,
    reference: Path | str,
    options: ProbeOptions = ProbeOptions(),
    allow_pickle: bool = False,
    progress: ProgressFn | None = None,
) -> TecReport:
    """The TEC of a checkpoint's text encoder(s) against a reference checkpoint's (vanilla SD 1.5,
    or SDXL base for an SDXL checkpoint: each encoder against its own, reported separately in
    ``parts`` and combined).

    Args:
        candidate: The checkpoint to measure (diffusers folder or single file).
        reference: The checkpoint it is compared with; must share the candidate's tokenizer.
        options: Probe words, position, batch size, device.
        allow_pickle: Accept pickled checkpoints.
        progress: ``progress(stage, done, total)``, stages ``reference`` and ``candidate``
            (once per text encoder).

    Raises:
        ModelError: A checkpoint is missing or unreadable, the tokenizers differ, or the two are
            of different families.
        UsageError: No probe word is a single token, or the device is not available.
    """
    return ReferenceProbe(reference, options, allow_pickle, progress).measure(candidate, progress)


def lora_tec_report(
    lora: Path | str,
    base: Path | str,
    scale: float = 1.0,
    options: ProbeOptions = ProbeOptions(),
    allow_pickle: bool = False,
    progress: ProgressFn | None = None,
) -> TecReport:
    """The TEC a LoRA adds: the base's text encoder(s) against the base with the LoRA merged at
    ``scale`` (SDXL: ``lora_te1_`` into the first encoder, ``lora_te2_`` into the second).

    Args:
        lora: A Kohya-format LoRA ``.safetensors``.
        base: The model it was trained on (diffusers folder or single file).
        scale: The LoRA weight it is used at (1.0 as trained; 0 adds nothing).
        options: Probe words, position, batch size, device.
        allow_pickle: Accept a pickled base checkpoint.
        progress: ``progress(stage, done, total)``, stages ``reference`` and ``candidate``.

    Raises:
        ModelError: The base or the LoRA is missing or unreadable, or the LoRA does not fit the
            base (another family's LoRA included).
    """
    if not Path(lora).is_file():
        raise ModelError(f"{lora}: no such LoRA file")
    return loras_tec_reports([Path(lora)], base, scale, options, allow_pickle, progress, stage="candidate")[
        0
    ][1]


def loras_tec_reports(
    files: list[Path],
    base: Path | str,
    scale: float = 1.0,
    options: ProbeOptions = ProbeOptions(),
    allow_pickle: bool = False,
    progress: ProgressFn | None = None,
    stage: str | None = None,
) -> list[tuple[bool, TecReport]]:
    """The TEC each LoRA of ``files`` adds to ``base``: ``(holds text-encoder weights, report)``
    per file, in order. The base's embeddings are computed once and shared by every file; a
    LoRA without text-encoder weights gets a zero report.

    Args:
        progress: ``progress(stage, done, total)``: stage ``reference``, then each file's name
            (a U-Net-only file reports itself done at once).
        stage: The progress stage of every file (default: the file's name).
    """
    device = _device(options.device)
    encoders = load_text_encoders(base, allow_pickle)
    family = _family(encoders)
    bases = []
    for encoder in encoders:
        probe = _probe(encoder, options)
        bases.append(
            (encoder, probe, _embed(encoder.model, encoder, probe, options, device, "reference", progress))
        )
    results = []
    for path in files:
        parts, trained = [], False
        tensors = _read_lora(path, family)
        for index, (encoder, probe, reference_vectors) in enumerate(bases):
            holds, report = _lora_report(
                path,
                tensors,
                family,
                index,
                encoder,
                probe,
                reference_vectors,
                scale,
                options,
                device,
                progress,
                stage or path.name,
            )
            trained = trained or holds
            parts.append((family.text_encoders[index].label, report))
        results.append((trained, combined_report(parts)))
    return results


def _family(encoders: list[TextEncoder]) -> ModelFamily:
    return SDXL if len(encoders) == 2 else SD15


def _read_lora(path: Path, family: ModelFamily) -> dict[str, torch.Tensor]:
    """A LoRA's tensors, refused when its keys say it was trained for another family."""
    if not path.is_file():
        raise ModelError(f"{path}: no such LoRA file")
    try:
        tensors, _ = read_safetensors(path)
    except Exception as exc:  # safetensors raises its own error types for damaged headers
        raise ModelError(f"{path}: not a readable LoRA .safetensors file ({exc})") from None
    trained_for = family_of_lora_keys(tensors)
    if trained_for is not None and trained_for is not family:
        raise ModelError(
            f"{path}: an {trained_for.title} LoRA, and the base is {family.title}; pass the base model it "
            "was trained on"
        )
    return tensors


def _lora_report(
    path: Path,
    tensors: dict[str, torch.Tensor],
    family: ModelFamily,
    slot: int,
    base_te: TextEncoder,
    probe: ProbeSet,
    reference_vectors: torch.Tensor,
    scale: float,
    options: ProbeOptions,
    device: torch.device,
    progress: ProgressFn | None,
    stage: str,
) -> tuple[bool, TecReport]:
    prefix = family.text_encoders[slot].prefix
    lycoris = is_lycoris(tensors, prefix)
    layers = [] if lycoris else text_encoder_lora_layers(tensors, base_te.model, path, family, slot)
    label = f"{base_te.path} + {path.name} x {scale:g}"
    common: dict[str, Any] = {
        "candidate": label,
        "reference": str(base_te.path),
        "position": options.position,
        "probe": probe.source,
    }
    if not layers and not lycoris:
        # A U-Net-only LoRA leaves the text encoder exactly as it was: nothing to encode.
        if progress is not None:
            progress(stage, len(probe), len(probe))
        notes = (
            *_notes(probe, base_te),
            f"{path.name} holds no text-encoder weights (U-Net only): it adds no TEC",
        )
        report = tec_report(probe.words, reference_vectors, reference_vectors, notes=notes, **common)
        return False, report
    merged = (
        merged_lycoris_text_encoder(base_te.model, tensors, prefix, scale, path)
        if lycoris
        else merged_text_encoder(base_te.model, layers, scale)
    )
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
