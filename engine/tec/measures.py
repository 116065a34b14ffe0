"""The TEC measures: per-word cosine, TEC score, confusion, drifted words, weight distance, reading.

Given each probe word's embedding from the candidate and from the reference:

* **cosine** of the two, per word (1 = the word means exactly what it meant);
* **TEC score** = mean(1 - cosine) x 100 over the probe words (0 = untouched);
* **confusion rate** = the share of words whose candidate embedding lies nearer (cosine) to
  another word's reference embedding than to its own: "cat -> dog", a cat taught to be a dog;
* **drifted words**: the lowest cosines;
* **weight distance** per layer (relative L2 of the weights), as context for where it happened.

The reading's thresholds (``kiln.engine.tec.reading``) are provisional: they were set on reasoning
about the scale of the measure, not yet calibrated on a collection of real checkpoints.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from kiln.engine.tec.loading import PositionIds
from kiln.engine.tec.reading import THRESHOLDS_NOTE, tec_reading
from torch import nn

# A word counts as confused only if another reference word beats its own by more than float
# rounding; identical encoders must never report confusion.
_TIE = 1e-6
_CHUNK = 1024


@dataclass(frozen=True)
class Confusion:
    """A word whose candidate embedding is nearest another word's reference embedding.

    Attributes:
        word: The probe word.
        nearest: The reference word it now lies nearest to.
        cosine: Its cosine with its own reference embedding.
        nearest_cosine: Its cosine with ``nearest``'s reference embedding (higher).
    """

    word: str
    nearest: str
    cosine: float
    nearest_cosine: float


@dataclass(frozen=True)
class LayerDistance:
    """How far a group of weights moved: ``||candidate - reference|| / ||reference||``.

    Attributes:
        name: ``token embedding``, ``position embedding``, ``layer N`` or ``final norm``.
        relative_l2: The relative L2 distance (0 = unchanged).
        parameters: Number of weights in the group.
    """

    name: str
    relative_l2: float
    parameters: int


@dataclass(frozen=True)
class TecReport:
    """The TEC of a candidate text encoder against a reference, word by word.

    Attributes:
        words: The probe words.
        distances: Per word, 1 - cosine of candidate and reference embeddings (computed as
            half the squared distance of the unit vectors, exact at 0).
        nearest: Per word, the index of the reference embedding nearest the candidate's.
        nearest_cosines: Per word, the cosine with that nearest reference embedding.
        layers: Per-layer weight distances.
        position_ids: The candidate checkpoint's stored ``position_ids`` check, if it has one.
        candidate: A label for the candidate (path, or base + LoRA).
        reference: A label for the reference.
        position: Which state was compared (``word`` or ``eos``).
        probe: Where the words came from (``built-in``, a file, ``full vocabulary``).
        notes: Remarks for the reader (words skipped, a LoRA without text-encoder weights).
        parts: For a model with several text encoders (SDXL), each encoder's own report by
            label; this report then combines them (see :func:`combined_report`).
    """

    words: tuple[str, ...]
    distances: tuple[float, ...]
    nearest: tuple[int, ...]
    nearest_cosines: tuple[float, ...]
    layers: tuple[LayerDistance, ...] = ()
    position_ids: PositionIds | None = None
    candidate: str = ""
    reference: str = ""
    position: str = "word"
    probe: str = ""
    notes: tuple[str, ...] = ()
    parts: tuple[tuple[str, TecReport], ...] = ()

    @property
    def score(self) -> float:
        """Mean (1 - cosine) x 100 over the probe words."""
        return 100.0 * math.fsum(self.distances) / len(self.distances)

    @property
    def confused_indices(self) -> list[int]:
        """Indices of the words nearest another word's reference embedding."""
        return [index for index, nearest in enumerate(self.nearest) if nearest != index]

    @property
    def confusion_rate(self) -> float:
        """Share (0..1) of probe words confused with another word."""
        return len(self.confused_indices) / len(self.words)

    @property
    def reading(self) -> str:
        """``close to zero``, ``mild`` or ``heavy`` (provisional thresholds)."""
        return tec_reading(self.score, self.confusion_rate)

    def cosine(self, index: int) -> float:
        """Cosine of word ``index``'s candidate and reference embeddings."""
        return 1.0 - self.distances[index]

    def confused(self, top: int | None = None) -> list[Confusion]:
        """Confused words, the most clearly confused first (largest lead of the wrong word)."""
        pairs = [
            Confusion(self.words[i], self.words[self.nearest[i]], self.cosine(i), self.nearest_cosines[i])
            for i in self.confused_indices
        ]
        pairs.sort(key=lambda pair: (pair.cosine - pair.nearest_cosine, pair.word))
        return pairs if top is None else pairs[:top]

    def drifted(self, top: int | None = None) -> list[tuple[str, float]]:
        """``(word, cosine)``, the lowest cosine first."""
        order = sorted(range(len(self.words)), key=lambda i: (-self.distances[i], self.words[i]))
        if top is not None:
            order = order[:top]
        return [(self.words[i], self.cosine(i)) for i in order]

    def to_json(self, top: int | None = 20) -> dict:
        """The JSON ``kiln tec --json`` prints; ``top`` limits the word lists (None: all)."""
        return {
            "score": self.score,
            "confusion_rate": self.confusion_rate,
            "confused": [
                {"word": c.word, "nearest": c.nearest, "cosine": c.cosine, "nearest_cosine": c.nearest_cosine}
                for c in self.confused(top)
            ],
            "drifted": [{"word": word, "cosine": cosine} for word, cosine in self.drifted(top)],
            "words": len(self.words),
            "confused_words": len(self.confused_indices),
            "reading": self.reading,
            "thresholds": THRESHOLDS_NOTE,
            "candidate": self.candidate,
            "reference": self.reference,
            "position": self.position,
            "probe": self.probe,
            "layers": [
                {"name": layer.name, "relative_l2": layer.relative_l2, "parameters": layer.parameters}
                for layer in self.layers
            ],
            "position_ids": None if self.position_ids is None else self.position_ids.to_json(),
            "notes": list(self.notes),
            "encoders": [
                {
                    "label": label,
                    "score": part.score,
                    "confusion_rate": part.confusion_rate,
                    "confused_words": len(part.confused_indices),
                    "reading": part.reading,
                }
                for label, part in self.parts
            ],
        }


def combined_report(parts: Sequence[tuple[str, TecReport]]) -> TecReport:
    """One report over several text encoders probed with the same words (SDXL's two).

    A word's distance is the mean of its distances in each encoder, so the score is the mean
    of the encoders' scores; a word counts as confused when any encoder confuses it (the
    first one that does names the word it is taken for). Layers carry the encoder's label.
    A single part is returned as it is.
    """
    if len(parts) == 1:
        return parts[0][1]
    reports = [report for _, report in parts]
    words = reports[0].words
    if any(report.words != words for report in reports):
        raise ValueError("the encoders were probed with different words")
    nearest, cosines = [], []
    for index in range(len(words)):
        confusing = next((report for report in reports if report.nearest[index] != index), None)
        chosen = confusing or reports[0]
        nearest.append(chosen.nearest[index])
        cosines.append(chosen.nearest_cosines[index])
    first = reports[0]
    return TecReport(
        words=words,
        distances=tuple(
            math.fsum(values) / len(values) for values in zip(*(r.distances for r in reports), strict=True)
        ),
        nearest=tuple(nearest),
        nearest_cosines=tuple(cosines),
        layers=tuple(
            LayerDistance(f"{label}: {layer.name}", layer.relative_l2, layer.parameters)
            for label, report in parts
            for layer in report.layers
        ),
        position_ids=first.position_ids,
        candidate=first.candidate,
        reference=first.reference,
        position=first.position,
        probe=first.probe,
        notes=tuple(dict.fromkeys(note for report in reports for note in report.notes)),
        parts=tuple(parts),
    )


def cosine_distances(candidate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per row, 1 - cosine, as half the squared distance of the unit vectors.

    Equal to 1 - cosine but free of the cancellation near cosine 1, and exactly 0 for equal rows.
    """
    a = _unit(candidate)
    b = _unit(reference)
    return 0.5 * (a - b).pow(2).sum(dim=1)


def nearest_reference(candidate: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each candidate row, the index and cosine of the nearest reference row.

    A row's own reference row wins ties within float rounding, so an encoder compared with
    itself has no confusion. Computed in chunks of rows: the full vocabulary is 49k x 49k.
    """
    a, b = _unit(candidate), _unit(reference)
    count = a.shape[0]
    indices = torch.empty(count, dtype=torch.long)
    cosines = torch.empty(count, dtype=torch.float32)
    for start in range(0, count, _CHUNK):
        stop = min(start + _CHUNK, count)
        sims = a[start:stop] @ b.T
        best, where = sims.max(dim=1)
        rows = torch.arange(stop - start)
        own = sims[rows, rows + start]
        keep_own = best <= own + _TIE
        indices[start:stop] = torch.where(keep_own, rows + start, where)
        cosines[start:stop] = torch.where(keep_own, own, best)
    return indices, cosines


def _unit(rows: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(rows.float(), dim=1)


def layer_distances(candidate: nn.Module, reference: nn.Module) -> tuple[LayerDistance, ...]:
    """Relative L2 distance of the weights, grouped by embedding, encoder layer and final norm."""
    ref = dict(reference.named_parameters())
    sums: dict[str, list[float]] = {}
    for name, weight in candidate.named_parameters():
        other = ref[name]
        group = _group(name)
        entry = sums.setdefault(group, [0.0, 0.0, 0.0])
        entry[0] += float((weight.detach().float() - other.detach().float()).pow(2).sum())
        entry[1] += float(other.detach().float().pow(2).sum())
        entry[2] += weight.numel()
    return tuple(
        LayerDistance(group, math.sqrt(diff) / math.sqrt(norm) if norm > 0 else math.sqrt(diff), int(count))
        for group, (diff, norm, count) in sums.items()
    )


_LAYER = re.compile(r"encoder\.layers\.(\d+)\.")


def _group(name: str) -> str:
    name = name.removeprefix("text_model.")
    if name.startswith("embeddings.token_embedding"):
        return "token embedding"
    if name.startswith("embeddings.position_embedding"):
        return "position embedding"
    match = _LAYER.match(name)
    if match:
        return f"layer {match.group(1)}"
    if name.startswith("final_layer_norm"):
        return "final norm"
    return name


def tec_report(
    words: Sequence[str],
    candidate_vectors: torch.Tensor,
    reference_vectors: torch.Tensor,
    *,
    layers: tuple[LayerDistance, ...] = (),
    position_ids: PositionIds | None = None,
    candidate: str = "",
    reference: str = "",
    position: str = "word",
    probe: str = "",
    notes: tuple[str, ...] = (),
) -> TecReport:
    """Compare per-word embeddings (rows in ``words`` order) and build the report.

    The keyword arguments label the report (see ``TecReport``).
    """
    if candidate_vectors.shape != reference_vectors.shape or candidate_vectors.shape[0] != len(words):
        raise ValueError(
            f"embeddings {tuple(candidate_vectors.shape)} and {tuple(reference_vectors.shape)} "
            f"for {len(words)} words"
        )
    distances = cosine_distances(candidate_vectors, reference_vectors)
    nearest, nearest_cosines = nearest_reference(candidate_vectors, reference_vectors)
    return TecReport(
        words=tuple(words),
        distances=tuple(distances.tolist()),
        nearest=tuple(nearest.tolist()),
        nearest_cosines=tuple(nearest_cosines.tolist()),
        layers=layers,
        position_ids=position_ids,
        candidate=candidate,
        reference=reference,
        position=position,
        probe=probe,
        notes=notes,
    )
