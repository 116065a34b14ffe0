"""What the U-Net is conditioned on, for any family: text hidden states, and SDXL's extras.

SD 1.5 attends to one text encoder's hidden states. SDXL attends to two encoders' penultimate
hidden states side by side, and adds an embedding of the second encoder's pooled output and
six size/crop numbers per image (``time_ids``). Families encode text into a
:class:`TextConditioning`; the trainer passes ``unet_kwargs`` to the U-Net without knowing which
family it trains.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where tensors are made, never at start-up
    import torch


@dataclass
class TextConditioning:
    """Encoded captions (one row per caption).

    Attributes:
        hidden: The hidden states cross-attention reads, ``(batch, tokens, width)``.
        pooled: SDXL's pooled, projected text embedding ``(batch, width)``; None for SD 1.5.
    """

    hidden: torch.Tensor
    pooled: torch.Tensor | None = None

    def unet_kwargs(self, time_ids: torch.Tensor | None) -> dict[str, Any]:
        """The U-Net's conditioning arguments, with ``time_ids`` (``(batch, 6)``) where pooled text is."""
        if self.pooled is None:
            return {"encoder_hidden_states": self.hidden}
        if time_ids is None:
            raise ValueError("SDXL conditioning needs the images' size/crop time ids")
        return {
            "encoder_hidden_states": self.hidden,
            "added_cond_kwargs": {"text_embeds": self.pooled, "time_ids": time_ids},
        }

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> TextConditioning:
        """The same conditioning on ``device`` (and in ``dtype``)."""
        return TextConditioning(
            self.hidden.to(device, dtype),
            None if self.pooled is None else self.pooled.to(device, dtype),
        )

    def rows(self, index: int) -> TextConditioning:
        """One caption's conditioning, batch dimension kept (what a cache stores)."""
        return TextConditioning(
            self.hidden[index : index + 1], None if self.pooled is None else self.pooled[index : index + 1]
        )


def stack(parts: Sequence[TextConditioning]) -> TextConditioning:
    """One batch from per-caption conditionings (the cached path)."""
    import torch

    hidden = torch.cat([part.hidden for part in parts])
    pooled = [part.pooled for part in parts]
    return TextConditioning(
        hidden, None if pooled[0] is None else torch.cat([p for p in pooled if p is not None])
    )
