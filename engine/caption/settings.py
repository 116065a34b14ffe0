"""Captioner settings: plain records the CLI and the TUI build before any model is loaded."""

from __future__ import annotations

from dataclasses import dataclass

from kiln.engine.errors import UsageError


@dataclass(frozen=True)
class BlipSettings:
    """How BLIP generates.

    Attributes:
        beams: Beam-search width (1 is greedy).
        min_new_tokens: Fewest tokens generated after the prompt.
        max_new_tokens: Most tokens generated after the prompt (always passed: the model's
            default of 20 cuts sentences short).
        prefix: A conditional prompt such as ``"a photograph of"``; BLIP continues it and
            Kiln strips it from the caption.
        batch_size: Images per ``generate`` call.
        device: ``auto`` (CUDA when present, else CPU), ``cpu`` or ``cuda``.
        allow_pickle: Also load ``pytorch_model.bin`` (runs pickle: only for files you trust).
    """

    beams: int = 3
    min_new_tokens: int = 5
    max_new_tokens: int = 50
    prefix: str = ""
    batch_size: int = 4
    device: str = "auto"
    allow_pickle: bool = False

    def __post_init__(self) -> None:
        if self.beams < 1 or self.batch_size < 1:
            raise UsageError("BLIP beams and batch size must be at least 1")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens or self.max_new_tokens < 1:
            raise UsageError(
                f"BLIP tokens: need 0 <= min ({self.min_new_tokens}) <= max ({self.max_new_tokens}), max >= 1"
            )
        if self.device not in ("auto", "cpu", "cuda"):
            raise UsageError(f"device {self.device!r}: use auto, cpu or cuda")


@dataclass(frozen=True)
class Wd14Settings:
    """How tags are chosen and written.

    Attributes:
        general_threshold: Minimum score of a general tag (0.35, as the reference taggers).
        character_threshold: Minimum score of a character tag (0.85).
        rating: Put the most likely rating tag (argmax of the rating rows) first.
        remove_underscores: Write ``long hair`` instead of ``long_hair`` (kaomoji kept).
        escape_parentheses: Write ``\\(`` and ``\\)`` for WebUIs that read them as weights.
        undesired: Tags never written (compared without case, underscores or spaces).
        batch_size: Images per inference when the model's batch dimension is free.
    """

    general_threshold: float = 0.35
    character_threshold: float = 0.85
    rating: bool = False
    remove_underscores: bool = True
    escape_parentheses: bool = False
    undesired: tuple[str, ...] = ()
    batch_size: int = 8

    def __post_init__(self) -> None:
        for name in ("general_threshold", "character_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise UsageError(f"WD14 {name.replace('_', ' ')} {getattr(self, name)}: use 0 to 1")
        if self.batch_size < 1:
            raise UsageError("WD14 batch size must be at least 1")
